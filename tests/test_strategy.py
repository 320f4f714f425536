"""The platform's strategy (strategy_plugins/platform.py, named in ansible.cfg): over Mitogen, one
Python interpreter per host serves every task; without Mitogen, Ansible's own linear strategy runs
each module in a fresh process, with a warning that names the fix. Real ansible-playbook runs on
the controller (connection local)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - {name: first, ansible.builtin.command: "sh -c 'echo PPID=$PPID'", register: first, changed_when: false}
    - {name: second, ansible.builtin.command: "sh -c 'echo PPID=$PPID'", register: second, changed_when: false}
    - ansible.builtin.debug: {msg: "parents {{ first.stdout }} {{ second.stdout }}"}
"""
WARNING = "Mitogen is not installed beside Ansible"


def run(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    """Run the two tasks with the project's ansible.cfg; the parents of their commands, and the output."""
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    } | env
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(book)]
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(line for line in out.stdout.splitlines() if "parents PPID=" in line)
    return [word for word in line.split() if word.startswith("PPID=")], out.stdout + out.stderr


def test_with_mitogen_tasks_share_one_interpreter(tmp_path):
    parents, output = run(tmp_path)
    assert parents[0] == parents[1], f"each task in a new process: {parents}"
    assert WARNING not in output


def test_without_mitogen_ansibles_linear_runs_with_a_warning(tmp_path):
    # A package of that name that fails to import hides the installed Mitogen.
    hidden = tmp_path / "hide" / "ansible_mitogen"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    parents, output = run(tmp_path, PYTHONPATH=str(hidden.parent))
    assert parents[0] != parents[1], f"tasks shared a process without Mitogen: {parents}"
    assert WARNING in output and "make tools" in output, output
