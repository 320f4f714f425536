"""A missing or weak secret stops a role with a message that names that variable (not a list of
every secret the role takes) and the fix, and never shows a secret's value: the checks carry
names only, so no no_log has to hide the result (older ansible-core hides the message with it)."""

from __future__ import annotations

import json

import pytest
from conftest import BIN, ROOT, WIRING, run

WEAK = "weakMARK7"  # shorter than any role accepts, and easy to spot if it were printed


def assert_play(inventory, role: str):
    play = inventory.parent / f"assert_{role}.yml"
    play.write_text(
        "- hosts: local1\n  gather_facts: true\n"  # roles size limits from facts
        f"  vars_files: {json.dumps(WIRING)}\n"
        "  tasks:\n"
        f"    - ansible.builtin.include_role: {{name: {role}, tasks_from: assert}}\n"
    )
    return play


def apply(inventory, role: str, *extra: str):
    env = {"ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    play = assert_play(inventory, role)
    return run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(play), *extra], env=env)


@pytest.mark.parametrize(
    ("role", "variable", "not_named"),
    [
        ("exec_api", "exec_api_database_password", None),
        ("jupyterhub", "jupyterhub_database_password", "jupyterhub_cookie_secret"),
        ("jupyterhub", "jupyterhub_cookie_secret", "jupyterhub_database_password"),
        ("superset", "superset_secret_key", "superset_database_password"),
        ("superset", "superset_executions_reader_password", "superset_secret_key"),
        ("keycloak", "keycloak_admin_password", "keycloak_db_password"),
    ],
)
def test_a_weak_secret_is_named_and_not_shown(local_inventory, role, variable, not_named):
    good = apply(local_inventory, role)
    assert good.returncode == 0, good.stdout[-3000:]
    bad = apply(local_inventory, role, "-e", f"{variable}={WEAK}")
    text = bad.stdout + bad.stderr
    assert bad.returncode != 0, text[-3000:]
    assert variable in text, text[-3000:]
    assert "censored" not in text, text[-3000:]
    assert WEAK not in text, text[-3000:]
    if not_named:  # a valid secret is not in the message
        assert not_named not in text, text[-3000:]
