"""Fixtures of Keycloak's tests (scenario `keycloak`): its host, its public URL through nginx,
and its Admin REST API asked on the host (Keycloak listens on loopback only) as the permanent
administrator. Keycloak's server archive cannot be downloaded on the development and CI
machines: without one (KEYCLOAK_ARCHIVE, as molecule/keycloak/skip_unless.sh) every test here is
skipped with that reason."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The hub's and Superset's helpers (a person's login to each), shared with their own areas.
sys.path[:0] = [str(Path(__file__).resolve().parents[1] / area) for area in ("jupyterhub", "superset")]

import pytest  # noqa: E402
from hostlib import playbook_runner, resolve  # noqa: E402
from oidc import *  # noqa: E402, F403 - the provider's fixtures (oidc.__all__): provider, provider_tokens, ...

NO_ARCHIVE = (
    "Keycloak's server archive cannot be downloaded here, so Keycloak never ran: set "
    "KEYCLOAK_ARCHIVE=/path/to/keycloak-<version>.tar.gz (the release pinned in "
    "roles/keycloak/defaults/main.yml) and run the keycloak scenario"
)

# Runs on the Keycloak host with the system's python3: logs in to the master realm as `user`
# (password from a root-only file, never a command line), then GETs Admin REST API paths. Client
# secrets leave the host only as their SHA-256.
ADMIN_PROBE = r"""
import hashlib, json, sys, urllib.error, urllib.parse, urllib.request
base, user, password_file, *paths = sys.argv[1:]
with open(password_file) as f:
    form = {"grant_type": "password", "client_id": "admin-cli", "username": user, "password": f.read().strip()}
try:
    with urllib.request.urlopen(base + "/realms/master/protocol/openid-connect/token",
                                urllib.parse.urlencode(form).encode(), timeout=30) as r:
        token = json.load(r)["access_token"]
except urllib.error.HTTPError as e:
    print(json.dumps({"login": e.code}))
    sys.exit(0)
def hide(value):
    if isinstance(value, dict):
        return {(k + "_sha256" if k == "secret" else k): (hashlib.sha256(v.encode()).hexdigest() if k == "secret"
                else hide(v)) for k, v in value.items()}
    return [hide(v) for v in value] if isinstance(value, list) else value
out = {"login": 200}
for p in paths:
    req = urllib.request.Request(base + "/admin/realms/" + p, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        out[p] = hide(json.load(r))
print(json.dumps(out))
"""


@pytest.fixture(scope="session", autouse=True)
def _keycloak_archive():
    """Before any other fixture: without an archive, nothing here can run."""
    archive = os.environ.get("KEYCLOAK_ARCHIVE", "")
    if not (archive and Path(archive).is_file()):
        pytest.skip(NO_ARCHIVE)


@pytest.fixture(scope="session")
def kc(group_hosts):
    """The Keycloak host (root over SSH)."""
    return group_hosts("keycloak")[0]


@pytest.fixture(scope="session")
def kc_inputs(kc, inventory, hostvars) -> dict:
    """The inventory's inputs the expectations are stated from, with their defaults
    (group_vars/all/inputs.yml, roles/keycloak/defaults)."""
    given = hostvars[inventory["keycloak"]["hosts"][0]]
    defaults = {"platform_domain": "platform.test", "platform_keycloak_realm": "platform",
                "keycloak_admin_username": "platform-admin", "platform_oidc_admin_group": "platform-admins",
                "platform_oidc_users_group": "platform-users", "platform_oidc_groups_custom": []}  # fmt: skip
    return {name: given.get(name, default) for name, default in defaults.items()}


@pytest.fixture(scope="session")
def realm(kc_inputs) -> str:
    return kc_inputs["platform_keycloak_realm"]


@pytest.fixture(scope="session")
def auth_url(inventory, hostvars, group_hosts, kc_inputs) -> str:
    """https://auth.<domain>, the name mapped to the nginx host in this process."""
    group_hosts("nginx")  # skips without one
    name = f"auth.{kc_inputs['platform_domain']}"
    resolve({name: hostvars[inventory["nginx"]["hosts"][0]]["ansible_host"]})
    return f"https://{name}"


@pytest.fixture(scope="session")
def admin_login(kc, secrets_dir):
    """admin_login(user, secret, *paths) -> {"login": status, path: JSON answer, ...}: secret is a
    name in the secrets directory or a file holding the password (copied to the host, root-only,
    for the probe; removed at the end)."""
    copied: set[str] = set()

    def login(user: str, secret: str | Path, *paths: str) -> dict:
        source = Path(secrets_dir) / secret if isinstance(secret, str) else secret
        assert source.is_file(), f"no password file {source}"
        dest = f"/root/.platform-tests-{source.name}"
        kc.ansible("copy", f"src={source} dest={dest} owner=root group=root mode=0600", check=False)
        copied.add(dest)
        args = [ADMIN_PROBE, "http://127.0.0.1:8080", user, dest, *paths]
        out = kc.run("python3 -c" + " %s" * len(args), *args)
        assert out.rc == 0, f"the Admin API probe as {user}: rc {out.rc} {out.stderr[-800:]}"
        return json.loads(out.stdout.strip().splitlines()[-1])

    yield login
    for dest in copied:
        kc.run("rm -f %s", dest)


@pytest.fixture(scope="session")
def admin_api(admin_login, kc_inputs, realm) -> dict:
    """What the permanent administrator reads: the realm, its clients, scopes, groups, a user."""
    paths = [realm, f"{realm}/clients", f"{realm}/client-scopes", f"{realm}/groups",
             f"{realm}/users?username=alice&exact=true",
             "master/users?username=bootstrap-admin&exact=true"]  # fmt: skip
    got = admin_login(kc_inputs["keycloak_admin_username"], "keycloak_admin_password", *paths)
    assert got["login"] == 200, f"the permanent administrator could not log in: HTTP {got['login']}"
    return got


@pytest.fixture(scope="session")
def converge_keycloak(inventory_path):
    """converge_keycloak(**extra_vars) runs playbooks/keycloak.yml on the scenario's hosts."""
    return playbook_runner(inventory_path, Path(__file__).resolve().parents[3] / "playbooks/keycloak.yml")
