"""The exec API package's own checks (lint, types, its pytest suite on a real PostgreSQL)."""

from __future__ import annotations

from conftest import ROOT, run

PKG = ROOT / "files/exec_api"


def test_exec_api_package_ci():
    script = PKG / "ci.sh"
    assert script.exists(), "files/exec_api/ci.sh is the package's one entry point for CI"
    out = run(["bash", str(script)], cwd=PKG, timeout=1500)
    (ROOT / ".molecule-logs").mkdir(exist_ok=True)
    (ROOT / ".molecule-logs/exec_api.log").write_text(out.stdout + out.stderr)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-60:])
    assert out.returncode == 0, f"files/exec_api/ci.sh failed:\n{tail}"
