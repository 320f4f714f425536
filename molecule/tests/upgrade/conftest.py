"""Fixtures of the upgrade tests (marker `upgrade`, the upgrade scenario): the all-in-one host as
the previous release installed it (molecule/upgrade/converge.yml), and the work users did on it,
which the upgrade and the restore onto a new host must keep."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent / "backup"), str(HERE.parent / "superset")]

from backuplib import bk, repository, restic  # noqa: E402, F401 - the backup tests' fixtures
from hostlib import ROOT, playbook_runner  # noqa: E402
from oidc import *  # noqa: E402, F403 - the provider's fixtures (oidc.__all__): provider_tokens, ...
from upgradelib import Work, state, timed  # noqa: E402


@pytest.fixture(scope="session")
def work(bk, hubs, provider_tokens, api_url, ca, browser, domain, users) -> Work:  # noqa: F811
    """On the previous release: alice's files in her home, her template notebook registered with
    typed parameters and run three times through the exec API, her server running; carol (an
    admin) adds a dashboard in Superset. Then the state they are all compared with."""
    done = Work.make(bk, hubs["alice"], provider_tokens["alice"], api_url, ca, browser, domain, users["carol"])
    done.before = state(bk, done, api_url, ca, provider_tokens["alice"])
    return done


@pytest.fixture(scope="session")
def upgraded(work, inventory_path) -> dict:
    """The current code converged over the previous release, then once more (each run's output)."""
    run = playbook_runner(inventory_path, ROOT / "molecule/shared/converge.yml")
    first, first_s = timed(run)
    second, second_s = timed(run) if first.rc == 0 else (None, 0)
    print(f"upgrade: converge of the current code {first_s:.0f} s, second run {second_s:.0f} s")
    return {"first": first, "second": second}
