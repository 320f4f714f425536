"""Shared helpers for the repository tests (controller side)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
# The wiring's files (group_vars/all/), for a play's vars_files as the platform's playbooks read them.
WIRING = [str(p) for p in sorted((ROOT / "group_vars/all").glob("*.yml"))]


def run(cmd: list[str], cwd: Path | str = ROOT, env: dict | None = None, timeout: int = 600):
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def local_inventory(tmp_path: Path) -> Path:
    """An inventory whose one host is this machine (local connection) in every service group."""
    inv = tmp_path / "inventory"
    inv.mkdir()
    groups = ["postgresql", "keycloak", "exec_api", "jupyterhub", "superset", "nginx"]
    text = "---\nall:\n  hosts:\n    local1:\n      ansible_connection: local\n" + (
        "      ansible_python_interpreter: /usr/bin/python3\n  children:\n"
    )
    text += "".join(f"    {g}:\n      hosts:\n        local1:\n" for g in groups)
    (inv / "hosts.yml").write_text(text)
    return inv / "hosts.yml"


# What each molecule scenario's verify ran (tests/test_molecule.py fills it): scenario -> HostTests.
HOST_TESTS = pytest.StashKey[dict]()
# How long each scenario took, destroy to destroy (scenarios run MOLECULE_PARALLEL at a time): scenario -> seconds.
SCENARIO_SECONDS = pytest.StashKey[dict]()


def pytest_collection_modifyitems(items):
    """The molecule scenarios last: they run in worker threads from the end of collection on
    (tests/test_molecule.py), and the other tests run meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("molecule") is not None)


def pytest_collection_finish(session):
    from test_molecule import start_scenarios

    start_scenarios(session)


def pytest_terminal_summary(terminalreporter):
    """The host tests each molecule scenario ran (tests/test_molecule.py), by name and outcome."""
    results = terminalreporter.config.stash.get(HOST_TESTS, {})
    seconds = terminalreporter.config.stash.get(SCENARIO_SECONDS, {})
    if seconds:
        terminalreporter.section("molecule scenarios, destroy to destroy")
        for scenario, took in seconds.items():
            terminalreporter.line(f"{scenario:12} {took:5.0f} s")
    for scenario, tests in results.items():
        terminalreporter.section(f"host tests of molecule scenario {scenario}: {tests.counts()}")
        for outcome, names in tests.outcomes.items():
            for name in names:
                why = f" ({tests.details[name].splitlines()[0]})" if outcome == "skipped" else ""
                terminalreporter.line(f"{outcome.upper():8} {name}{why}")
