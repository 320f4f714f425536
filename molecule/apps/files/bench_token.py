"""alice's access token for the benchmark (bench.yml), the way she gets one: a browser login
through the provider's form, with the host tests' own code (molecule/tests/oidc.py, browser.py).

Input: a JSON file named by $BENCH_LOGIN_FILE (so no secret is on a command line) with issuer,
ca, resolve {name: address}, client (oidc.Client's fields), user {username, password}, out (the
token file to write, 0600).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "molecule/tests"), str(ROOT / "files/exec_api")]

from browser import chromium  # noqa: E402
from hostlib import resolve  # noqa: E402
from oidc import Client, Provider, code_flow  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

cfg = json.loads(Path(os.environ["BENCH_LOGIN_FILE"]).read_text())
resolve(cfg["resolve"])
client = Client(**cfg["client"])
with sync_playwright() as pw:
    browser = chromium(pw, cfg["ca"], cfg["resolve"])
    try:
        login = code_flow(browser, Provider(cfg["issuer"], cfg["ca"]), client, cfg["user"])
    finally:
        browser.close()
fd = os.open(cfg["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({cfg["user"]["username"]: login.tokens["access_token"]}, f)
print(f"{cfg['user']['username']} logged in in {login.seconds:.2f} s")
