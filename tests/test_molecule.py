"""Every molecule scenario, on booted systemd-nspawn test hosts: converge, idempotence, verify.

Each scenario's full output is kept in .molecule-logs/<scenario>.log for reading after a failure.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import BIN, ROOT, run

LOGS = ROOT / ".molecule-logs"
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    skip_reason = ROOT / "molecule" / scenario / "skip_unless.sh"
    if skip_reason.exists():
        check = run(["bash", str(skip_reason)])
        if check.returncode != 0:
            pytest.skip(check.stdout.strip() or f"{scenario}: prerequisites missing")
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
    out = run([str(BIN / "molecule"), "test", "-s", scenario], env=env, timeout=2400)
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"{scenario}.log"
    log.write_text(out.stdout + out.stderr)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-60:])
    assert out.returncode == 0, f"molecule test -s {scenario} failed (full log: {log}):\n{tail}"
    # The idempotence step passed only if the second converge changed nothing; say so in the log.
    recaps = re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", out.stdout, re.M)
    assert recaps, "no play recap in molecule's output"
