"""Fixtures of the nginx role's tests (scenario `nginx`): the host, its sites as
molecule/nginx/converge.yml states them, the install's CA on both sides, and re-runs of that
converge with extra variables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostlib import resolve
from nginx_sites import CA_ON_HOST, DOMAIN

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
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
    mapping = {f"{label}.{DOMAIN}": address for label in ("api", "hub", "auth", "extra", "unknown")}
    resolve(mapping)
    return mapping


@pytest.fixture(scope="session")
def ca_on_host(web, ca) -> str:
    """The install's CA certificate on the host, for the checks made from inside it (the nginx
    scenario's host does not trust it: only playbooks/nginx.yml adds it to the store)."""
    web.ansible("copy", f"src={ca} dest={CA_ON_HOST} owner=root group=root mode=0644", check=False)
    return CA_ON_HOST


@dataclass
class Run:
    rc: int
    output: str  # stdout and stderr (failures go to stderr: display_failed_stderr)

    def recap(self, key: str) -> int:
        """The sum of a PLAY RECAP counter (changed, failed) over the hosts."""
        recap = self.output[self.output.rfind("PLAY RECAP") :]
        return sum(int(n) for n in re.findall(rf"\b{key}=(\d+)", recap))


@pytest.fixture(scope="session")
def converge(inventory_path):
    """converge(**extra_vars) runs molecule/nginx/converge.yml's nginx role against the scenario's
    hosts, as separate ansible-playbook runs (molecule's idempotence step covers the whole
    converge). Under `molecule verify` the environment carries molecule's settings; by hand the
    ones the scenario needs are filled in."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.setdefault("ANSIBLE_ROLES_PATH", str(ROOT / "roles"))
    env.setdefault("ANSIBLE_LOOKUP_PLUGINS", str(ROOT / "lookup_plugins"))
    if (ROOT / "filter_plugins").is_dir():
        env.setdefault("ANSIBLE_FILTER_PLUGINS", str(ROOT / "filter_plugins"))
    inventory_dir = inventory_path if inventory_path.is_dir() else inventory_path.parent
    cfg = inventory_dir.parent / "ansible.cfg"  # molecule's, beside the inventory directory
    if cfg.is_file():
        env.setdefault("ANSIBLE_CONFIG", str(cfg))

    def run(**extra_vars) -> Run:
        cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory_path), "--tags", "nginx", str(CONVERGE)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        return Run(out.returncode, out.stdout + out.stderr)

    return run
