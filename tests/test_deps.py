"""tools/deps.sh, which `make demo` and `make test` run first: Debian packages installed when
missing, and one line of error (no traceback) when that cannot be done. apt-get, dpkg-query and
id are stand-ins on PATH that record their calls, so the machine's packages are left alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fakes(tmp_path: Path, *, installed: bool, uid: int, update_rc: int = 0, install_rc: int = 0) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    scripts = {
        "dpkg-query": f"echo -n '{'install ok installed' if installed else 'unknown ok not-installed'}'",
        "id": f"echo {uid}",
        "apt-get": f"""echo "apt-get $*" >> {log}
case "$1" in
  update) [ {update_rc} -eq 0 ] || {{ echo "E: Failed to fetch http://mirror/dists/bookworm/InRelease"
           echo "W: Temporary failure resolving 'mirror'"; exit {update_rc}; }} ;;
  *) [ {install_rc} -eq 0 ] || {{ echo "E: Unable to locate package chromium"; exit {install_rc}; }} ;;
esac""",
        "npm": "true",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"env": {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, "log": log}


def deps(what: str, f: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "tools/deps.sh"), what], env=f["env"], capture_output=True, text=True)


def test_nothing_is_done_when_everything_is_installed(tmp_path):
    f = fakes(tmp_path, installed=True, uid=0)
    out = deps("test", f)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "") and not f["log"].exists()


def test_missing_packages_are_installed_as_root(tmp_path):
    f = fakes(tmp_path, installed=False, uid=0)
    out = deps("demo", f)
    assert out.returncode == 0, out.stderr
    calls = f["log"].read_text().splitlines()
    assert calls[0] == "apt-get update -qq"
    assert calls[1].split()[-5:] == ["debootstrap", "systemd-container", "iptables", "iproute2", "openssh-client"]


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"uid": 1000}, "installing them needs root: run it as root, or first: apt-get install debootstrap"),
        ({"uid": 0, "update_rc": 100}, "cannot read the Debian package lists (apt-get update: W: Temporary failure"),
        ({"uid": 0, "install_rc": 100}, "(apt-get install: E: Unable to locate package chromium)"),
    ],
    ids=["not-root", "no-mirror", "not-installable"],
)
def test_what_cannot_be_done_is_said_in_one_line(tmp_path, kw, said):
    out = deps("test", fakes(tmp_path, installed=False, **kw))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr
