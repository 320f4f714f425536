"""What the browser checks of the scenarios share (sso_check.py, the jupyterhub scenario's
hub_check.py): how a check reports, and Debian's Chromium driven by Playwright, trusting only the
install's CA, with the platform's names mapped to the test hosts.

A check prints ``ok: ...`` or stops the script with ``FAILED: ...``; figures are ``figure: ...``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
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


def nss_home(ca: str) -> str:
    """A HOME whose NSS database trusts the install's CA (Chromium reads it), and nothing else
    added; removed when the script ends."""
    home = tempfile.mkdtemp(prefix="browser-check-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    db = Path(home, ".pki/nssdb")
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-A", "-n", "platform-ca", "-t", "C,,", "-i", ca], check=True)
    return home


def chromium(pw, ca: str, resolve: dict[str, str], executable: str = "/usr/bin/chromium"):
    """Debian's Chromium: the platform's names resolve to the given addresses, only the CA is added."""
    rules = ",".join(f"MAP {host} {ip}" for host, ip in resolve.items())
    return pw.chromium.launch(
        executable_path=executable,
        args=[f"--host-resolver-rules={rules}", "--no-sandbox"],
        env={**os.environ, "HOME": nss_home(ca)},
    )
