"""Superset's host, read as root with testinfra, and what a local user there (alice has a shell)
can reach: its units and their sandbox scores, what listens where, Redis behind a socket only
Superset's user may open and a login on top, its files' owners and modes, nothing secret in the
journal; the security headers as a browser gets them through nginx. And the test provider the
scenario logs in with: its unit's score, forwarded headers only from nginx, reached only through
nginx.
"""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest
import requests
from hostlib import exposure

MAX_EXPOSURE = 4.0  # systemd-analyze security, for every unit we install (../shared/STYLE.md)
REDIS_DIR = "/run/redis-superset"  # the superset role's socket for Redis (roles/superset/README.md)
REDIS_SOCKET = f"{REDIS_DIR}/redis.sock"
SUPERSET_PORT, REDIS_PORT, PROVIDER_PORT = 8088, 6379, 3000


def listeners(host, port: int) -> list[str]:
    """The local addresses listening on TCP port `port`."""
    lines = host.check_output("ss -Hltn").splitlines()
    return [line.split()[3] for line in lines if line.split()[3].rsplit(":", 1)[-1] == str(port)]


def as_user(host, user: str, *argv: str):
    return host.run(shlex.join(["runuser", "-u", user, "--", *argv]))


# ------------------------------------------------------------------------------ units
@pytest.mark.parametrize("unit", ["superset.service", "redis-server.service"])
def test_superset_units_run_and_start_at_boot(superset_host, unit):
    service = superset_host.service(unit)
    assert service.is_running and service.is_enabled, (
        f"{unit}: running {service.is_running}, enabled {service.is_enabled}"
    )


@pytest.mark.parametrize("unit", ["superset.service", "redis-server.service"])
def test_superset_units_score_at_most_4(superset_host, unit):
    score = exposure(superset_host, unit)
    assert score <= MAX_EXPOSURE, f"{unit} scores {score} in systemd-analyze security"


def test_superset_listens_on_loopback_only(superset_host):
    found = listeners(superset_host, SUPERSET_PORT)
    assert found and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in found), f"port {SUPERSET_PORT}: {found}"


# ------------------------------------------------------------------------------ Redis
def test_nothing_listens_on_redis_tcp_port(superset_host):
    found = listeners(superset_host, REDIS_PORT)
    assert not found, f"something listens on Redis's port: {found}"


def test_local_user_finds_no_redis_on_loopback(superset_host, probe_user):
    out = as_user(superset_host, probe_user, "redis-cli", "-h", "127.0.0.1", "ping")
    assert "Connection refused" in out.stdout + out.stderr, f"redis-cli on 127.0.0.1: {out.stdout} {out.stderr}"


def test_local_user_cannot_open_redis_socket(superset_host, probe_user):
    out = as_user(superset_host, probe_user, "redis-cli", "-s", REDIS_SOCKET, "ping")
    assert "Permission denied" in out.stdout + out.stderr, f"redis-cli on {REDIS_SOCKET}: {out.stdout} {out.stderr}"


def test_superset_user_without_password_gets_noauth(superset_host):
    out = as_user(superset_host, "superset", "redis-cli", "-s", REDIS_SOCKET, "ping")
    assert "NOAUTH" in out.stdout + out.stderr, f"redis-cli as superset, no password: {out.stdout} {out.stderr}"


def test_redis_socket_and_directory_are_supersets_only(superset_host):
    found = {path: superset_host.file(path) for path in (REDIS_DIR, REDIS_SOCKET)}
    seen = {path: (f.user, f.group, oct(f.mode)) for path, f in found.items()}
    want = {REDIS_DIR: ("redis", "superset", oct(0o2750)), REDIS_SOCKET: ("redis", "superset", oct(0o660))}
    assert seen == want, f"owner, group, mode: {seen}"


# Superset's own Redis client (redis-py from its venv, as its user, with its settings and password).
REDIS_CLIENT = """
import json, redis
s = json.load(open('/etc/superset/settings.json'))['redis']
p = json.load(open('/etc/superset/secrets.json'))['redis_password']
out = {}
for db in (0, 1, 2):
    r = redis.Redis(unix_socket_path=s['socket'], username=s['user'], password=p, db=db)
    out[db] = {'ping': r.ping(), 'keys': r.dbsize()}
print(json.dumps(out))
"""


def test_superset_logs_in_to_redis_and_its_pages_fill_the_cache(superset_host, dashboard_page):
    out = superset_host.run(
        "cd / && "
        + shlex.join(["runuser", "-u", "superset", "--", "/opt/superset/venv/bin/python", "-c", REDIS_CLIENT])
    )
    assert out.rc == 0, f"Superset's client on the socket: {out.stderr[-1000:]}"
    databases = json.loads(out.stdout)
    assert all(db["ping"] for db in databases.values()), f"Superset's client on the socket: {databases}"
    assert databases["0"]["keys"] > 0, f"the dashboard left nothing in Superset's cache: {databases}"


# ------------------------------------------------------------------------------ files
def test_secrets_file_is_root_superset_0640(superset_host):
    f = superset_host.file("/etc/superset/secrets.json")
    assert (f.user, f.group, f.mode) == ("root", "superset", 0o640), f"{f.user}:{f.group} {oct(f.mode)}"


def test_nothing_under_superset_home_is_writable_by_others(superset_host):
    """uv leaves its .lock files 0666 (anyone may flock them and stall the next run): the role
    makes them root's only, and nothing else there is writable by others."""
    out = superset_host.check_output(
        "find /opt/superset '(' -perm -0002 -o -name .lock -perm /0077 ')' '!' -type l -print"
    )
    assert not out, f"writable by others, or a lock file not root's only:\n{out}"


def test_metadata_database_is_stamped_up_to_date_for_the_installed_environment(superset_host):
    # A re-run reads Superset's schema revision (seconds of its command line) only when this
    # stamp does not name the environment installed now (roles/superset/tasks/configure.yml).
    record = superset_host.file("/opt/superset/venv/installed-from.txt").content_string
    stamp = superset_host.file("/opt/superset/metadata-schema-up-to-date-for")
    owner = (stamp.user, stamp.group, stamp.mode)
    assert owner == ("root", "root", 0o644), f"owner, group, mode: {owner}"
    want = hashlib.sha1(record.encode()).hexdigest()
    assert stamp.content_string.strip() == want, f"stamp {stamp.content_string!r}, environment {want}"
    revisions = json.loads(superset_host.check_output("superset-manage db-revisions").splitlines()[-1])
    assert revisions["current"] == revisions["heads"], f"metadata database behind its release: {revisions}"


def test_no_secret_in_supersets_hosts_journal(superset_host, secret_values):
    """Every secret of the install, searched for in every field of the journal (read on the
    controller: the secrets never go to the host)."""
    journal = superset_host.check_output("journalctl --no-pager -o verbose")
    found = sorted(name for name, value in secret_values.items() if value in journal)
    print(f"{len(secret_values)} secrets searched in {journal.count(chr(10))} journal lines")
    assert not found, f"secrets in the journal of Superset's host: {found}"


# ------------------------------------------------------------------------------ through nginx
@pytest.mark.parametrize("path", ["/login/", "/health"])
def test_each_security_header_comes_once(superset_url, ca, path):
    """nginx sets HSTS, X-Frame-Options, X-Content-Type-Options and Referrer-Policy; Superset
    (Talisman) the content security policy only."""
    r = requests.get(superset_url + path, verify=ca, timeout=30, allow_redirects=False)
    names = ["Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
             "Content-Security-Policy", "X-XSS-Protection"]  # fmt: skip
    counts = {h: len(r.raw.headers.getlist(h)) for h in names}
    assert r.status_code in (200, 302), f"GET {path}: HTTP {r.status_code}"
    assert max(counts.values()) <= 1, f"a security header comes twice on {path}: {counts}"
    once = ("Strict-Transport-Security", "X-Content-Type-Options", "Content-Security-Policy")
    assert all(counts[h] == 1 for h in once), f"headers on {path}: {counts}"


# ------------------------------------------------------------------------------ the test provider
def test_test_provider_unit_scores_at_most_4(provider_host):
    score = exposure(provider_host, "test-oidc-provider.service")
    assert score <= MAX_EXPOSURE, f"test-oidc-provider.service scores {score} in systemd-analyze security"


def provider_address(provider_host) -> str:
    """The address the provider listens on (its host's platform address)."""
    found = listeners(provider_host, PROVIDER_PORT)
    assert found, f"nothing listens on port {PROVIDER_PORT} on the provider's host"
    return found[0].rsplit(":", 1)[0]


def test_test_provider_ignores_forwarded_headers_from_a_peer_not_nginx(provider_host):
    code = (
        "import json, sys, urllib.request as u; "
        "r = u.Request(sys.argv[1], headers={'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https'}); "
        "print(json.load(u.urlopen(r, timeout=10))['authorization_endpoint'])"
    )
    url = f"http://{provider_address(provider_host)}:{PROVIDER_PORT}/.well-known/openid-configuration"
    out = provider_host.run(shlex.join(["python3", "-c", code, url]))
    assert out.rc == 0 and "evil.example" not in out.stdout, f"discovery with forged headers: {out.stdout} {out.stderr}"


CONNECT = (
    "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); "
    "s.sendall(b'GET /.well-known/openid-configuration HTTP/1.0\\r\\n\\r\\n'); "
    "print(s.recv(64).split(b'\\r\\n')[0].decode())"
)


def test_local_user_on_nginx_host_cannot_reach_the_test_provider(nginx_host, provider_host, probe_user):
    out = as_user(nginx_host, probe_user, "python3", "-c", CONNECT, provider_address(provider_host), str(PROVIDER_PORT))
    assert out.rc != 0 and "ConnectionRefusedError" in out.stderr, f"{probe_user} got: {out.stdout} {out.stderr}"


def test_nginx_workers_reach_the_test_provider(nginx_host, provider_host):
    out = as_user(nginx_host, "www-data", "python3", "-c", CONNECT, provider_address(provider_host), str(PROVIDER_PORT))
    assert out.rc == 0 and " 200 " in out.stdout, f"www-data got: {out.stdout} {out.stderr}"
