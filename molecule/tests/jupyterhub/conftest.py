"""Fixtures of the JupyterHub tests: the people the provider knows, by what their groups make them
at the hub (a member, the admin, an outsider, a name that cannot be a Unix account), the
jupyterhub role's settings on the hub's host, and the provider's host (testinfra), where its
administrator changes a user's groups.

Expected values come from the inventory (platform_users, oidc_test_provider_users_extra, the
operator's platform_oidc_*_group inputs) and the jupyterhub role's documented defaults
(roles/jupyterhub/defaults/main.yml), never from the hub's rendered configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hostlib import RULES

ROLE_DEFAULTS = Path(__file__).resolve().parents[3] / "roles/jupyterhub/defaults/main.yml"


@pytest.fixture(scope="session")
def hub_vars(hostvars, hub_host_name) -> dict:
    """The hub host's inventory over the jupyterhub role's defaults."""
    return {**yaml.safe_load(ROLE_DEFAULTS.read_text()), **hostvars[hub_host_name]}


@pytest.fixture(scope="session")
def setting(hub_vars):
    """setting("profiles") -> jupyterhub_profiles as the role gets it (the inventory's or the default)."""

    def get(name: str):
        value = hub_vars[f"jupyterhub_{name}"]
        assert "{{" not in json.dumps(value), f"jupyterhub_{name} is computed by the wiring; state it in the test"
        return value

    return get


@pytest.fixture(scope="session")
def admin_group(hub_vars) -> str:
    return hub_vars.get("platform_oidc_admin_group", "platform-admins")


@pytest.fixture(scope="session")
def users_group(hub_vars) -> str:
    return hub_vars.get("platform_oidc_users_group", "platform-users")


@pytest.fixture(scope="session")
def people(hub_vars, secrets_dir) -> dict[str, dict]:
    """Everyone the provider knows (platform_users and the provider-only users), with passwords.
    The secret's name is the platform's rule (filter_plugins/platform.py)."""
    out = {}
    for u in hub_vars.get("platform_users", []) + hub_vars.get("oidc_test_provider_users_extra", []):
        secret = secrets_dir / RULES["user_password_secret"](u["username"])
        assert secret.is_file(), f"no password for {u['username']} at {secret}"
        out[u["username"]] = {**u, "password": secret.read_text().strip()}
    return out


def _first(people: dict, what: str, match) -> dict:
    found = [u for u in people.values() if match(u)]
    if not found:
        pytest.skip(f"the provider knows no {what}")
    return found[0]


@pytest.fixture(scope="session")
def admin(people, admin_group) -> dict:
    """A member of the admin group (carol)."""
    return _first(people, f"member of {admin_group}", lambda u: admin_group in u["groups"])


@pytest.fixture(scope="session")
def outsider(people, users_group, admin_group) -> dict:
    """A user of the provider in neither platform group (mallory)."""
    return _first(people, "user outside the platform's groups",
                  lambda u: not {users_group, admin_group} & set(u["groups"]))  # fmt: skip


@pytest.fixture(scope="session")
def not_unix(people, users_group) -> dict:
    """A member of the users group whose name cannot be a Unix account (Dave.Jones)."""
    return _first(people, f"member of {users_group} with a name that cannot be a Unix account",
                  lambda u: users_group in u["groups"] and not RULES["valid_username"](u["username"]))  # fmt: skip
