"""The platform's strategy (strategy_plugins/platform.py, named in ansible.cfg): over Mitogen, one
Python interpreter per host serves every task; without Mitogen, Ansible's own linear strategy runs
each module in a fresh process, with a warning that names the fix. Real ansible-playbook runs on
the controller (connection local)."""

from __future__ import annotations

import getpass
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
BECOME = """
- hosts: localhost
  connection: local
  gather_facts: false
  become: true
  become_user: "{{ lookup('env', 'USER') }}"
  tasks:
    - {name: whoami, ansible.builtin.command: id -un, register: who, changed_when: false}
    - ansible.builtin.debug: {msg: "ran as {{ who.stdout }}"}
"""
WARNING = "Mitogen is not installed beside Ansible"


def play(tmp_path: Path, text: str, **env: str) -> str:
    """Run a playbook with the project's ansible.cfg; its output."""
    book = tmp_path / "play.yml"
    book.write_text(text)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    } | env
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(book)]
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def run(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    """Run the two tasks; the parents of their commands, and the output."""
    output = play(tmp_path, PLAYBOOK, **env)
    line = next(line for line in output.splitlines() if "parents PPID=" in line)
    return [word for word in line.split() if word.startswith("PPID=")], output


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


def test_become_as_the_user_running_locally_calls_no_sudo(tmp_path):
    """As Ansible's own strategy does: `-c local` as root on a host without sudo still converges."""
    fail = tmp_path / "bin"
    fail.mkdir()
    (fail / "sudo").write_text("#!/bin/sh\necho 'sudo was called' >&2\nexit 1\n")
    (fail / "sudo").chmod(0o755)
    user = getpass.getuser()
    output = play(tmp_path, BECOME, PATH=f"{fail}:{os.environ['PATH']}", USER=user)
    assert f"ran as {user}" in output, output
