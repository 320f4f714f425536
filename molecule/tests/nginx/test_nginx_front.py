"""The nginx role alone (scenario `nginx`): two sites in front of an upstream that echoes the
headers it gets, Keycloak's site as the wiring publishes it (an allow-list, admin paths only
from the admin network, here the host itself), and upstreams reached over TLS. Asked from the
controller by the host's address with the install's CA, and from inside the host by the site
names (which resolve to itself)."""

from __future__ import annotations

import json
import re
import socket
import ssl
from pathlib import Path

import pytest
from hostlib import fetch
from nginx_sites import CERT, CERT_NAMES, SITES, certificate, dns_names

SITE_IDS = [s.name for s in SITES]


def curl_status(web, url: str, *args: str) -> str:
    """The HTTP status curl gets for url from inside the host ('000' when it got none)."""
    out = web.run("curl -sS -o /dev/null -w '%%{http_code}' " + " ".join(["%s"] * (len(args) + 1)), *args, url)
    return out.stdout.strip()


def s_client(web, ca_on_host: str, *args: str):
    """openssl s_client to nginx on the host, for the api site, refusing an unverified chain."""
    base = ["-connect", "127.0.0.1:443", "-servername", SITES[0].name, "-CAfile", ca_on_host, "-verify_return_error"]
    cmd = "openssl s_client " + " ".join(["%s"] * len(base + list(args))) + " </dev/null"
    return web.run(cmd, *base, *args)


# ------------------------------------------------------------------------- the CA on the controller
def test_ca_key_stays_private_on_the_controller(ca):
    ca_dir = Path(ca).parent / "ca"
    modes = {str(p): oct(p.stat().st_mode & 0o777) for p in (ca_dir, ca_dir / "ca.key")}
    assert modes == {str(ca_dir): "0o700", str(ca_dir / "ca.key"): "0o600"}, f"the CA's key and directory: {modes}"


# ------------------------------------------------------------------------- from the controller
@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_each_name_reaches_its_own_upstream_over_https(site, site_names, ca):
    r = fetch(f"https://{site.name}/from-controller", ca)
    assert r.status_code == 200, f"https://{site.name}/from-controller: HTTP {r.status_code} {r.text[:300]}"
    seen = {k: r.json()[k] for k in ("port", "path")}
    assert seen == {"port": site.port, "path": "/from-controller"}, f"{site.name} reached {r.json()}"


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_the_upstream_sees_the_public_name_and_scheme(site, site_names, ca):
    headers = fetch(f"https://{site.name}/from-controller", ca).json()["headers"]
    expected = {"host": site.name, "x-forwarded-host": site.name, "x-forwarded-proto": "https",
                "x-forwarded-port": "443"}  # fmt: skip
    assert {k: headers.get(k) for k in expected} == expected, f"headers at the upstream: {headers}"
    assert re.match(r"^10\.", headers.get("x-forwarded-for", "")), f"X-Forwarded-For is not the controller: {headers}"


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_https_answers_carry_the_security_headers(site, site_names, ca):
    r = fetch(f"https://{site.name}/from-controller", ca)
    expected = {"strict-transport-security": "max-age=63072000", "x-content-type-options": "nosniff",
                "x-frame-options": "SAMEORIGIN", "referrer-policy": "strict-origin-when-cross-origin",
                "server": "nginx"}  # fmt: skip
    assert {k: r.headers.get(k) for k in expected} == expected, f"response headers: {dict(r.headers)}"


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_plain_http_redirects_to_the_same_url_over_https(site, site_names, ca):
    r = fetch(f"http://{site.name}/some/path?q=1", ca)
    assert (r.status_code, r.headers.get("location")) == (301, f"https://{site.name}/some/path?q=1"), (
        f"http://{site.name}/some/path?q=1: HTTP {r.status_code} Location {r.headers.get('location')}"
    )


def test_an_unknown_name_gets_no_tls_handshake(address, ca):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((address, 443), timeout=10) as raw, pytest.raises(ssl.SSLError) as refused:
        ctx.wrap_socket(raw, server_hostname="unknown.platform.test").close()
    assert "UNRECOGNIZED_NAME" in str(refused.value), f"the handshake for unknown.platform.test: {refused.value}"


def test_a_known_name_with_an_unknown_host_header_gets_421(site_names, ca):
    r = fetch(f"https://{SITES[0].name}/", ca, headers={"Host": "unknown.platform.test"})
    assert r.status_code == 421, f"Host: unknown.platform.test over {SITES[0].name}: HTTP {r.status_code}"


# Keycloak's exposed-path recommendations: published, admin-only, not published at all.
AUTH_PATHS = [  # path, status from the controller, status from the admin network (the host)
    ("/realms/platform/.well-known/openid-configuration", 200, 200),
    ("/resources/x/login.css", 200, 200),
    ("/.well-known/oauth-authorization-server", 200, 200),
    ("/robots.txt", 200, 200),
    ("/admin/master/console/", 403, 200),
    ("/realms/master/protocol/openid-connect/token", 403, 200),
    ("/metrics", 404, 404),
    ("/health/ready", 404, 404),
    ("/", 404, 404),
]


@pytest.mark.parametrize(("path", "status"), [(p, out) for p, out, _ in AUTH_PATHS], ids=[p for p, *_ in AUTH_PATHS])
def test_auth_site_from_outside_its_admin_network(path, status, site_names, ca):
    r = fetch(f"https://auth.platform.test{path}", ca)
    assert r.status_code == status, f"{path} from the controller: HTTP {r.status_code}, expected {status}"


@pytest.mark.parametrize(("path", "status"), [(p, ins) for p, _, ins in AUTH_PATHS], ids=[p for p, *_ in AUTH_PATHS])
def test_auth_site_from_its_admin_network(path, status, web, ca_on_host):
    got = curl_status(web, f"https://auth.platform.test{path}", "--cacert", ca_on_host,
                      "--resolve", "auth.platform.test:443:127.0.0.1")  # fmt: skip
    assert got == str(status), f"{path} from the host itself: HTTP {got}, expected {status}"


# An upstream on another host (as the wiring reaches Keycloak there): over TLS, its certificate
# verified against the install's CA for the site's upstream_tls_name. One with a self-signed
# certificate for that name, and the right certificate asked for another name, get no request.
def test_an_upstream_over_tls_is_reached_with_its_certificate_verified(site_names, ca):
    r = fetch("https://internal.platform.test/over-tls", ca)
    assert r.status_code == 200, f"https://internal.platform.test/over-tls: HTTP {r.status_code} {r.text[:300]}"
    assert {k: r.json()[k] for k in ("port", "path")} == {"port": 8443, "path": "/over-tls"}, r.json()


@pytest.mark.parametrize("name", ["rogue.platform.test", "misnamed.platform.test"])
def test_an_upstream_whose_certificate_does_not_verify_gets_no_request(name, site_names, ca, web):
    r = fetch(f"https://{name}/must-not-arrive", ca)
    assert r.status_code == 502, f"https://{name}/must-not-arrive: HTTP {r.status_code} {r.text[:300]}"
    log = web.run("tail -n 50 /var/log/nginx/error.log").stdout
    assert "upstream SSL certificate" in log, f"nginx's error log does not say why:\n{log[-1500:]}"


# ------------------------------------------------------------------------- from inside the host
@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_a_websocket_upgrade_reaches_only_the_websocket_site(site, web, ca_on_host):
    """By name inside the host (/etc/hosts), as an upgrade over HTTP/1.1."""
    out = web.run("curl -sS --fail --http1.1 --cacert %s -H 'Upgrade: websocket' -H 'Connection: Upgrade' %s",
                  ca_on_host, f"https://{site.name}/ws")  # fmt: skip
    assert out.rc == 0, f"https://{site.name}/ws from the host: rc {out.rc} {out.stderr}"
    body = json.loads(out.stdout)
    keys = ("x-forwarded-proto", "x-forwarded-host", "upgrade", "connection")
    seen = {"port": body["port"], **{k: body["headers"].get(k, "").lower() for k in keys}}
    upgrade = ("websocket", "upgrade") if site.websocket else ("", "")
    expected = {"port": site.port, **dict(zip(keys, ("https", site.name, *upgrade), strict=True))}
    assert seen == expected, f"the upstream of {site.name} got {body}"


def _announced_150m(web, ca_on_host: str, name: str) -> str:
    return curl_status(web, f"https://{name}/upload", "--http1.1", "--max-time", "5", "--cacert", ca_on_host,
                       "-X", "POST", "-H", f"Content-Length: {150 * 1024 * 1024}", "--data-binary", "")  # fmt: skip


def test_the_api_site_refuses_a_body_over_100m(web, ca_on_host):
    got = _announced_150m(web, ca_on_host, SITES[0].name)
    assert got == "413", f"150 MiB announced to {SITES[0].name}: HTTP {got}"


def test_the_hub_site_takes_a_body_of_150m(web, ca_on_host):
    """client_max_body_size 1g on the hub's site: nginx waits for the body instead of refusing."""
    got = _announced_150m(web, ca_on_host, SITES[1].name)
    assert got != "413", f"150 MiB announced to {SITES[1].name}: HTTP {got}"


def test_tls_1_1_is_refused_by_the_server(web, ca_on_host):
    """The client allows TLS 1.1 (security level 0): the refusal is the server's."""
    out = s_client(web, ca_on_host, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    said = out.stdout + out.stderr
    assert out.rc != 0 and "alert protocol version" in said, f"TLS 1.1: rc {out.rc} {said[-600:]}"


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_a_cbc_cipher_is_refused_over_tls_1_2(cipher, web, ca_on_host):
    out = s_client(web, ca_on_host, "-tls1_2", "-cipher", cipher)
    said = out.stdout + out.stderr
    assert out.rc != 0 and "alert handshake failure" in said, f"{cipher}: rc {out.rc} {said[-600:]}"


@pytest.mark.parametrize("args", [["-tls1_3"], ["-tls1_2"], ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]],
                         ids=["tls1_3", "tls1_2", "tls1_2-aead"])  # fmt: skip
def test_the_handshake_succeeds_and_the_chain_verifies_with_the_ca(args, web, ca_on_host):
    out = s_client(web, ca_on_host, *args)
    assert out.rc == 0 and "Verify return code: 0 (ok)" in out.stdout, (
        f"{' '.join(args)}: rc {out.rc} {(out.stdout + out.stderr)[-600:]}"
    )


def test_the_certificate_names_every_site_and_is_signed_by_the_ca(web):
    cert = certificate(web)
    issuer = cert.issuer.rfc4514_string()
    assert dns_names(cert) == CERT_NAMES, f"{CERT} names {dns_names(cert)}"
    assert issuer == "CN=Data platform private CA", f"{CERT} is issued by {issuer}"


def test_the_server_key_is_root_only(web):
    found = {p: (oct(web.file(p).mode), web.file(p).user) for p in ("/etc/nginx/tls", "/etc/nginx/tls/platform.key")}
    expected = {"/etc/nginx/tls": ("0o700", "root"), "/etc/nginx/tls/platform.key": ("0o600", "root")}
    assert found == expected, f"the server key and its directory: {found}"
