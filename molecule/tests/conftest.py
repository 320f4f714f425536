"""Fixtures of the host tests: the scenario's hosts, the platform's names and CA, its secrets, and
platform users (a hub API token each, their own server, a kernel in it).

Molecule's verify runs them (its testinfra verifier, configured in .config/molecule/config.yml),
each scenario picking its tests by marker (`verifier.options.m` in its molecule.yml). A test in a
subdirectory carries the directory's name as a marker (molecule/tests/exec_api/ -> `exec_api`).
By hand, against a converged scenario:

    pytest molecule/tests -m exec_api --platform-inventory <inventory file or dir>

(`--ansible-inventory`, which molecule passes, works as well.)

Secrets are read from `.secrets/` beside the inventory (where the lookup plugin generated them),
or from --platform-secrets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
from hostlib import RULES, Hub, browser_hub_token, resolve

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "files/exec_api"))  # the exec API's own typed client: exec_api.client
BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{BIN}:{os.environ['PATH']}"  # testinfra's ansible backend runs ansible-inventory

# The labels nginx publishes (roles/nginx, the wiring): https://<label>.<platform_domain>.
LABELS = ("api", "auth", "hub", "superset")

# Code every test kernel starts with: the exec API as the user calls it, with the server's own
# token (JUPYTERHUB_API_TOKEN) or another one, trusting the system store (which holds the CA).
KERNEL_PRELUDE = """
import json, os, ssl, urllib.error, urllib.request
API = {api!r}
def call(method, path, body=None, token=None, raw=None):
    tok = token if token is not None else os.environ["JUPYTERHUB_API_TOKEN"]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(API + path, data=data, method=method,
                                 headers={{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}})
    try:
        with urllib.request.urlopen(req, timeout=60, context=ssl.create_default_context()) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
def run_and_wait(path, parameters=None, timeout=120):
    import time
    s, sub = call("POST", "/db/executions", {{"notebook_path": path, "parameters": parameters or {{}}}})
    assert s == 202, (s, sub)
    eid = sub.get("execution_id", sub.get("id"))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s, ex = call("GET", f"/db/executions/{{eid}}")
        if ex["status"] in ("succeeded", "failed", "timeout", "cancelled"):
            return ex
        time.sleep(0.5)
    return ex
def notebook(path, cells, parameters="n = 1"):
    cell = lambda i, src, tags: {{"cell_type": "code", "execution_count": None, "id": f"c{{i}}",
                                 "metadata": {{"tags": tags}}, "outputs": [], "source": src}}
    nb = {{"cells": [cell(0, parameters, ["parameters"])] + [cell(i + 1, c, []) for i, c in enumerate(cells)],
           "metadata": {{"kernelspec": {{"name": "python3", "display_name": "Python 3", "language": "python"}}}},
           "nbformat": 4, "nbformat_minor": 5}}
    full = os.path.expanduser("~/notebooks/" + path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        json.dump(nb, f)
    return path
"""


def pytest_addoption(parser):
    parser.addoption("--platform-inventory", help="the scenario's Ansible inventory (file or directory)")
    parser.addoption("--platform-secrets", help="the install's secrets directory (default: .secrets beside it)")


def pytest_collection_modifyitems(config, items):
    """A test in molecule/tests/<area>/ carries the marker <area>: a scenario selects by area."""
    here = Path(__file__).parent
    for item in items:
        rel = Path(item.path).resolve().relative_to(here)
        if len(rel.parts) > 1:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))
    # The backup area restores the host's databases and files under every other test: it runs last
    # (on what the others left: their executions, logins and files are what it must bring back).
    items.sort(key=lambda item: item.get_closest_marker("backup") is not None)


@pytest.fixture(scope="session")
def inventory_path(request) -> Path:
    value = request.config.getoption("--platform-inventory") or request.config.getoption(
        "ansible_inventory", default=None
    )
    if not value:
        pytest.skip("no --platform-inventory: these tests run on booted test hosts (molecule verify)")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def inventory(inventory_path) -> dict:
    out = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inventory_path), "--list"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def _group(inventory: dict, name: str) -> list[str]:
    return inventory.get(name, {}).get("hosts", [])


@pytest.fixture(scope="session")
def group_hosts(inventory, inventory_path):
    """group_hosts("superset") -> the group's hosts as testinfra hosts; skips when the scenario
    has none."""

    def get(name: str) -> list:
        names = _group(inventory, name)
        if not names:
            pytest.skip(f"this scenario has no {name} host")
        return [testinfra.get_host(f"ansible://{n}", ansible_inventory=str(inventory_path)) for n in names]

    return get


@pytest.fixture(scope="session")
def browser(ca, names):
    """Debian's Chromium through Playwright, trusting the install's CA, the platform's names
    mapped to the nginx host: for what a person's browser does (forms, redirects, cookies)."""
    from browser import chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = chromium(pw, ca, names)
        b.playwright = pw  # held_callback() launches a second browser like this one
        yield b
        b.close()


@pytest.fixture(scope="session")
def hostvars(inventory) -> dict:
    return inventory["_meta"]["hostvars"]


@pytest.fixture(scope="session")
def hub_host_name(inventory) -> str:
    names = _group(inventory, "jupyterhub")
    if not names:
        pytest.skip("this scenario has no jupyterhub host")
    return names[0]


@pytest.fixture(scope="session")
def site(inventory_path, hub_host_name):
    """The host that runs the hub, the exec API and users' servers (where users have a shell)."""
    return testinfra.get_host(f"ansible://{hub_host_name}", ansible_inventory=str(inventory_path))


@pytest.fixture(scope="session")
def platform_vars(inventory, hostvars) -> dict:
    """The operator's inputs as the nginx host sees them (every host has the same `all` vars)."""
    return hostvars[_group(inventory, "nginx")[0]]


@pytest.fixture(scope="session")
def domain(platform_vars) -> str:
    return platform_vars.get("platform_domain", "platform.test")


@pytest.fixture(scope="session")
def names(inventory, hostvars, domain) -> dict[str, str]:
    """Each published name -> the nginx host's address; mapped for this test process."""
    nginx = _group(inventory, "nginx")[0]
    mapping = {f"{label}.{domain}": hostvars[nginx]["ansible_host"] for label in LABELS}
    resolve(mapping)
    return mapping


@pytest.fixture(scope="session")
def secrets_dir(request, inventory_path) -> Path:
    given = request.config.getoption("--platform-secrets")
    base = inventory_path if inventory_path.is_dir() else inventory_path.parent
    return Path(given) if given else base / ".secrets"


@pytest.fixture(scope="session")
def ca(secrets_dir) -> str:
    path = secrets_dir / "platform-ca.crt"
    assert path.is_file(), f"the install's CA certificate is not at {path}"
    return str(path)


@pytest.fixture(scope="session")
def secret_values(secrets_dir) -> dict[str, str]:
    """Every generated secret of the install (name -> value), long enough to search for."""
    found = {}
    for path in sorted(secrets_dir.rglob("*")):
        if not path.is_file() or path.suffix == ".crt":
            continue
        text = path.read_text().strip()
        if path.suffix == ".key" or "PRIVATE KEY" in text:  # one line of the key's body is enough
            lines = [line for line in text.splitlines() if not line.startswith("-----")]
            text = lines[1] if len(lines) > 1 else ""
        if len(text) >= 12:
            found[str(path.relative_to(secrets_dir))] = text
    assert found, f"no secrets found in {secrets_dir}"
    return found


@pytest.fixture(scope="session")
def users(platform_vars, secrets_dir) -> dict[str, dict]:
    """The provider's test users (platform_users) with their passwords (from the secrets directory)."""
    out = {}
    for u in platform_vars.get("platform_users", []):
        secret = secrets_dir / RULES["user_password_secret"](u["username"])
        if secret.is_file():
            out[u["username"]] = {**u, "password": secret.read_text().strip()}
    missing = {"alice", "bob"} - set(out)
    assert not missing, f"test users {missing} not in platform_users or without a password in {secrets_dir}"
    return out


@pytest.fixture(scope="session")
def hub_url(domain, names) -> str:
    return f"https://hub.{domain}"


@pytest.fixture(scope="session")
def api_url(domain, names) -> str:
    return f"https://api.{domain}"


@pytest.fixture(scope="session")
def superset_url(domain, names) -> str:
    return f"https://superset.{domain}"


@pytest.fixture(scope="session")
def provider_host(group_hosts):
    """The test harness's OpenID provider's host (scenarios with identity_provider: external)."""
    return group_hosts("oidc_test_provider")[0]


@pytest.fixture(scope="session")
def issuer(platform_vars, names) -> str:
    return platform_vars["platform_oidc_issuer"].rstrip("/")


@pytest.fixture(scope="session")
def hub_tokens(browser, hub_url, users) -> dict[str, str]:
    """alice's and bob's hub API tokens, each made after a real browser login."""
    return {name: browser_hub_token(browser, hub_url, users[name]) for name in ("alice", "bob")}


@pytest.fixture(scope="session")
def hubs(hub_url, ca, hub_tokens) -> dict[str, Hub]:
    return {name: Hub(hub_url, ca, name, tok) for name, tok in hub_tokens.items()}


@pytest.fixture(scope="session")
def api_token(hubs) -> str:
    """alice's hub token for the exec API: it asks for the exec API's scope, as a client should."""
    return hubs["alice"].new_token(["custom:exec-api:run"], "exec API")


@pytest.fixture(scope="session")
def kernels(hubs, api_url):
    """A kernel in each user's own server, started on first use; closed at the end."""
    opened: dict = {}

    def get(user: str):
        if user not in opened:
            hubs[user].start()
            k = hubs[user].kernel()
            k.run(KERNEL_PRELUDE.format(api=api_url))
            opened[user] = k
        return opened[user]

    yield get
    for k in opened.values():
        k.close()


@pytest.fixture(scope="session")
def alice(kernels):
    return kernels("alice")


@pytest.fixture(scope="session")
def bob(kernels):
    return kernels("bob")
