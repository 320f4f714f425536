"""The nginx role's acme mode against Pebble (scenario `acme`): nginx on web1 serves a certificate
Pebble issued for every site name, proved by HTTP-01 through nginx itself; certbot.timer's
service renews it and nginx serves the new one at once; what certbot keeps is root's.

Clients check with Pebble's own root (from its management API), as a browser would with Let's
Encrypt's; nothing on web1 trusts Pebble but certbot.
"""

from __future__ import annotations

import re
import time

import pytest

NAMES = ("api.platform.test", "hub.platform.test")
LIVE = "/etc/letsencrypt/live/platform"
ROOT_ON_WEB = "/root/pebble-root.pem"


@pytest.fixture(scope="module")
def web(group_hosts):
    return group_hosts("nginx")[0]


@pytest.fixture(scope="module")
def pebble(group_hosts):
    return group_hosts("acme_test_server")[0]


@pytest.fixture(scope="module")
def pebble_root(web, pebble) -> str:
    """Pebble's root, from its management API (made anew at each Pebble start), on web1."""
    out = pebble.run("curl -sSf --cacert /etc/pebble/ca.pem https://acme1:15000/roots/0")
    assert out.rc == 0 and "BEGIN CERTIFICATE" in out.stdout, out.stderr
    web.run("python3 -c %s %s %s", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", ROOT_ON_WEB, out.stdout)
    assert web.file(ROOT_ON_WEB).contains("BEGIN CERTIFICATE")
    return ROOT_ON_WEB


def fetch(web, name: str, path: str = "/", cafile: str | None = ROOT_ON_WEB, scheme: str = "https") -> tuple[str, str]:
    """(status, headers+body) of a request to nginx on web1 by name, checked against Pebble's root."""
    port = 443 if scheme == "https" else 80
    trust = ["--cacert", cafile] if cafile else []
    out = web.run("curl -sS -i --max-time 10 --resolve %s:%s:127.0.0.1 " + " ".join(["%s"] * len(trust)) + " %s",
                  name, str(port), *trust, f"{scheme}://{name}{path}")  # fmt: skip
    assert out.rc == 0, f"curl {scheme}://{name}{path}: rc {out.rc} {out.stderr}"
    return out.stdout.split(" ", 2)[1], out.stdout


def served(web, name: str) -> dict[str, str]:
    """The certificate nginx serves for a name: serial, issuer and names."""
    out = web.run(
        "openssl s_client -connect 127.0.0.1:443 -servername %s </dev/null 2>/dev/null | "
        "openssl x509 -noout -serial -issuer -ext subjectAltName", name)  # fmt: skip
    assert out.rc == 0, out.stderr
    return {"serial": re.search(r"serial=(\w+)", out.stdout)[1], "issuer": re.search(r"issuer=(.*)", out.stdout)[1],
            "names": " ".join(sorted(re.findall(r"DNS:([a-z0-9.-]+)", out.stdout)))}  # fmt: skip


def test_nginx_serves_pebbles_certificate_for_every_name_verified_with_pebbles_root(web, pebble_root):
    for name in NAMES:
        status, answer = fetch(web, name)
        assert status == "200" and '"port": 8000' in answer, f"https://{name}/ with Pebble's root: {answer[:300]}"
        cert = served(web, name)
        assert cert["names"] == " ".join(NAMES) and "Pebble Intermediate" in cert["issuer"], cert


def test_nginx_uses_certbots_current_files_not_the_placeholder(web):
    for name, target in (("platform.crt", "fullchain.pem"), ("platform.key", "privkey.pem")):
        link = web.run("readlink %s", f"/etc/nginx/tls/{name}").stdout.strip()  # one level: certbot's live name
        assert link == f"{LIVE}/{target}", f"/etc/nginx/tls/{name} -> {link!r}"
    assert "placeholder" not in web.check_output("openssl x509 -noout -subject -in /etc/nginx/tls/platform.crt")


def test_port_80_serves_challenge_files_only_and_redirects_the_rest(web):
    token = "platform-test-token"
    web.run("mkdir -p /var/lib/nginx-acme/.well-known/acme-challenge && "
            "echo proof > /var/lib/nginx-acme/.well-known/acme-challenge/%s", token)  # fmt: skip
    try:
        status, answer = fetch(web, NAMES[0], f"/.well-known/acme-challenge/{token}", None, "http")
        assert status == "200" and answer.rstrip().endswith("proof"), answer
        assert fetch(web, NAMES[0], "/.well-known/acme-challenge/missing", None, "http")[0] == "404"
        status, answer = fetch(web, NAMES[0], "/hub/login", None, "http")
        assert status == "301" and f"Location: https://{NAMES[0]}/hub/login" in answer, answer
    finally:
        web.run("rm -f /var/lib/nginx-acme/.well-known/acme-challenge/%s", token)


def test_the_account_key_and_private_keys_are_roots_alone(web):
    for d in ("/etc/letsencrypt/accounts", "/etc/letsencrypt/archive", "/etc/letsencrypt/live"):
        f = web.file(d)
        assert (f.user, f.mode & 0o077) == ("root", 0), f"{d}: {f.user} {oct(f.mode)}"
    keys = web.check_output("find /etc/letsencrypt -name '*.pem' -path '*priv*' -o -name private_key.json").split()
    assert keys, "no private key found under /etc/letsencrypt"
    for k in keys:
        f = web.file(k)
        assert (f.user, f.mode & 0o077) == ("root", 0), f"{k}: {f.user} {oct(f.mode)}"


def test_only_certbot_trusts_the_private_acme_server(web):
    assert web.run("curl -sS --max-time 10 -o /dev/null https://acme1:14000/dir").rc == 60, \
        "the host's store trusts the ACME test server's CA"  # fmt: skip
    dropin = web.file("/etc/systemd/system/certbot.service.d/acme-server-ca.conf")
    assert dropin.contains("REQUESTS_CA_BUNDLE=/etc/letsencrypt/acme-server-ca.pem")


def test_a_renewal_by_certbots_timer_service_is_served_at_once(web, pebble_root):
    """The timer's own service (`certbot -q renew`), made due by the lineage's renew_before_expiry
    (Pebble's certificates last years), renews; the deploy hook reloads nginx."""
    assert web.service("certbot.timer").is_enabled and web.service("certbot.timer").is_running
    before = served(web, NAMES[0])
    conf = "/etc/letsencrypt/renewal/platform.conf"
    web.run("cp -p %s %s.test-backup && sed -i '1i renew_before_expiry = 36500 days' %s", conf, conf, conf)
    try:
        t0 = time.monotonic()
        out = web.run("systemctl start certbot.service")
        took = time.monotonic() - t0
        assert out.rc == 0, f"certbot.service: {web.run('journalctl -u certbot.service -n 30 --no-pager').stdout}"
    finally:
        web.run("mv %s.test-backup %s", conf, conf)
    live = web.check_output(f"openssl x509 -noout -serial -in {LIVE}/cert.pem").split("=", 1)[1]
    assert live != before["serial"], f"certbot.service kept the certificate {live}"
    # `systemctl reload nginx` returns once the master has its signal: the old workers may still
    # answer a connection or two. "At once" is within a few seconds.
    deadline = time.monotonic() + 10
    while (after := served(web, NAMES[0]))["serial"] != live and time.monotonic() < deadline:
        time.sleep(0.2)
    print(
        f"figure: renewal through certbot.service (order, HTTP-01 for 2 names, reload) {took:.1f} s, "
        f"served {time.monotonic() - t0 - took:.1f} s after"
    )
    assert after["serial"] == live, (before, after, live)
    assert fetch(web, NAMES[1])[0] == "200"
