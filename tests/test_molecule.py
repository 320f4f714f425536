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


def failure(text: str, before: int = 3, after: int = 80) -> str:
    """What a failed run printed about its failure: each failed task with its output (the
    "fatal:"/"failed:" blocks, which CI may show without the full log), then the last lines."""
    lines = text.splitlines()
    shown: list[str] = []
    for i, line in enumerate(lines):
        if re.match(r"^[\s│]*(fatal|failed): \[", line):  # molecule may box the output in "│"
            shown += ["...", *lines[max(0, i - before) : i + after]]
    return "\n".join([*shown[:400], "... last lines:", *lines[-40:]])


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
    why = failure(out.stdout + out.stderr)
    assert out.returncode == 0, f"molecule test -s {scenario} failed (full log: {log}):\n{why}"
    # The idempotence step passed only if the second converge changed nothing; say so in the log.
    recaps = re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", out.stdout, re.M)
    assert recaps, "no play recap in molecule's output"


def test_failure_shows_the_failed_task_not_only_the_last_lines():
    text = "\n".join(
        ["TASK [Chromium check] ***", "fatal: [api1 -> localhost]: FAILED! => changed=true",
         "  stdout_lines:", "  - 'FAILED: no output within 120 s'"]
        + [f"cleanup line {i}" for i in range(200)]
    )  # fmt: skip
    shown = failure(text)
    assert "FAILED: no output within 120 s" in shown and "TASK [Chromium check]" in shown
    assert "cleanup line 199" in shown
    assert failure("all good\nPLAY RECAP").startswith("... last lines:")
    assert "FAILED: boxed" in failure("  │ fatal: [api1]: FAILED! =>\n  │   FAILED: boxed\nend")
