"""group_vars/ beside site.yml (the wiring) reaches the hosts however a playbook is started.

Ansible reads playbook group_vars beside the *top* playbook only. The wiring lives at the root
(beside site.yml) and is linked as playbooks/group_vars, and the common role refuses to run
without it. These runs use a local-connection host and only the tasks tagged `always`
(argument validation and asserts), so they are quick and change nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import BIN, ROOT, run

PLAYBOOK = str(BIN / "ansible-playbook")


def probe(playbook: str, inventory: Path, cwd: Path | str):
    return run([PLAYBOOK, "-i", str(inventory), playbook, "--tags", "wiring-probe"], cwd=cwd)


@pytest.mark.parametrize(
    ("playbook", "cwd"),
    [
        ("site.yml", ROOT),
        ("playbooks/postgresql.yml", ROOT),
        ("playbooks/nginx.yml", ROOT),
        (str(ROOT / "site.yml"), "/"),  # elsewhere: no ansible.cfg is read either
        (str(ROOT / "playbooks/postgresql.yml"), "/"),
    ],
)
def test_wiring_reaches_hosts(playbook, cwd, local_inventory):
    out = probe(playbook, local_inventory, cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "The platform's wiring was read" in out.stdout
    # A value computed in the wiring from the inventory reached the host.
    assert "wiring: postgresql databases keycloak,exec_api,jupyterhub,superset" in out.stdout


def test_a_playbook_away_from_the_wiring_is_refused(tmp_path, local_inventory):
    """The guard can fail: a copy of a playbook outside the repository has no wiring."""
    (tmp_path / "playbooks").mkdir()
    shutil.copy(ROOT / "playbooks/postgresql.yml", tmp_path / "playbooks/postgresql.yml")
    shutil.copy(ROOT / "playbooks/facts.yml", tmp_path / "playbooks/facts.yml")
    (tmp_path / "playbooks/roles").symlink_to(ROOT / "roles")
    out = probe(str(tmp_path / "playbooks/postgresql.yml"), local_inventory, tmp_path)
    assert out.returncode != 0
    assert "group_vars/ beside site.yml were not read" in out.stdout


def test_external_identity_provider_drops_the_keycloak_database(local_inventory):
    out = run([PLAYBOOK, "-i", str(local_inventory), "site.yml", "--tags", "wiring-probe",
               "-e", "identity_provider=external"])  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert "wiring: postgresql databases exec_api,jupyterhub,superset" in out.stdout
