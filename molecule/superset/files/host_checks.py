#!/usr/bin/python3
"""Host-side checks of the superset scenario, run as root on the Superset host by verify.yml.
Each prints one JSON object (the evidence) and exits 0; verify.yml asserts on it.

  host_checks.py headers URL...      how many times each security header comes back through nginx
  host_checks.py journal             how many of the secrets (secrets.json, and one per line on
                                     stdin) appear in the journal (any field); never prints one
  host_checks.py redis               Superset's own client (redis-py from its venv, as its user)
                                     logs in over the socket: keys in each database
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from urllib.parse import urlsplit

HEADERS = [
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "x-xss-protection",
]
CONF = "/etc/superset"


def headers(urls: list[str]) -> dict:
    ctx = ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt")
    out = {}
    for url in urls:
        u = urlsplit(url)
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, context=ctx, timeout=30)
        conn.request("GET", u.path or "/")
        resp = conn.getresponse()
        resp.read()
        out[url] = {
            "status": resp.status,
            "count": {h: len(resp.msg.get_all(h) or []) for h in HEADERS},
            "hsts": resp.msg.get_all("strict-transport-security") or [],
        }
        conn.close()
    return out


def journal() -> dict:
    with open(f"{CONF}/secrets.json") as f:
        secrets = [v for v in json.load(f).values() if isinstance(v, str) and len(v) >= 8]
    secrets += [line.strip() for line in sys.stdin if len(line.strip()) >= 8]
    text = subprocess.run(
        ["journalctl", "--no-pager", "-o", "verbose"], capture_output=True, text=True, check=True
    ).stdout
    return {"secrets": len(secrets), "found": sum(1 for s in secrets if s in text), "lines": text.count("\n")}


REDIS = """
import json, redis
s = json.load(open('/etc/superset/settings.json'))['redis']
p = json.load(open('/etc/superset/secrets.json'))['redis_password']
out = {}
for db in (0, 1, 2):
    r = redis.Redis(unix_socket_path=s['socket'], username=s['user'], password=p, db=db)
    out[db] = {'ping': r.ping(), 'keys': r.dbsize()}
print(json.dumps(out))
"""


def redis_keys() -> dict:
    run = subprocess.run(
        ["/usr/sbin/runuser", "-u", "superset", "--", "/opt/superset/venv/bin/python", "-c", REDIS],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    if run.returncode:
        return {"error": run.stderr[-2000:]}
    return json.loads(run.stdout)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    result = {"headers": lambda: headers(args), "journal": journal, "redis": redis_keys}[cmd]()
    print(json.dumps(result))
