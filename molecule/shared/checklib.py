"""What the browser checks of the scenarios share (sso_check.py, the jupyterhub scenario's
hub_check.py, the superset scenario's superset_check.py): how a check reports, Debian's Chromium
driven by Playwright, trusting only the install's CA, with the platform's names mapped to the test
hosts, and a login held back at the client's callback (for the forged-state checks).

A check prints ``ok: ...`` or stops the script with ``FAILED: ...``; figures are ``figure: ...``.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", flush=True)
    sys.exit(1)


def ok(msg: str) -> None:
    print(f"ok: {msg}", flush=True)


def check(cond: object, msg: str) -> None:
    if not cond:
        fail(msg)
    ok(msg)


def figure(msg: str) -> None:
    print(f"figure: {msg}", flush=True)


# The browser itself lives with the host tests (molecule/tests/browser.py); the scripts not yet
# moved there import it from here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import chromium, held_callback, nss_home, sign_in  # noqa: E402,F401


def with_state(url: str, state: str) -> str:
    """The same callback URL with another state."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    check("code" in query and "state" in query, f"the provider's callback carries a code and a state ({parts.path})")
    query["state"] = state
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
