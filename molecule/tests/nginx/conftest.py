"""Fixtures of the nginx role's tests (scenario `nginx`): the host, its sites as
molecule/nginx/converge.yml states them, the install's CA on both sides, and re-runs of that
converge with extra variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostlib import playbook_runner, resolve
from nginx_sites import CA_ON_HOST, DOMAIN

ROOT = Path(__file__).resolve().parents[3]
CONVERGE = ROOT / "molecule/nginx/converge.yml"


@pytest.fixture(scope="session")
def web(group_hosts):
    """The nginx host (root over SSH)."""
    return group_hosts("nginx")[0]


@pytest.fixture(scope="session")
def address(inventory, hostvars) -> str:
    return hostvars[inventory["nginx"]["hosts"][0]]["ansible_host"]


@pytest.fixture(scope="session")
def site_names(address) -> dict[str, str]:
    """Every name the tests ask for (the sites, a third one, an unknown one) -> the host."""
    labels = ("api", "hub", "auth", "internal", "rogue", "misnamed", "extra", "unknown")
    mapping = {f"{label}.{DOMAIN}": address for label in labels}
    resolve(mapping)
    return mapping


@pytest.fixture(scope="session")
def ca_on_host(web, ca) -> str:
    """The install's CA certificate on the host, for the checks made from inside it (the nginx
    scenario's host does not trust it: only playbooks/nginx.yml adds it to the store)."""
    web.ansible("copy", f"src={ca} dest={CA_ON_HOST} owner=root group=root mode=0644", check=False)
    return CA_ON_HOST


@pytest.fixture(scope="session")
def converge(inventory_path):
    """converge(**extra_vars) runs molecule/nginx/converge.yml's nginx role against the scenario's
    hosts (hostlib.playbook_runner)."""
    return playbook_runner(inventory_path, CONVERGE, "--tags", "nginx")
