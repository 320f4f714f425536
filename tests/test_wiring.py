"""group_vars/ beside site.yml (the wiring) reaches the hosts however a playbook is started, and
reads as declarations.

Ansible reads playbook group_vars beside the *top* playbook only. The wiring lives at the root
(beside site.yml) and is linked as playbooks/group_vars, and the common role refuses to run
without it. These runs use a local-connection host and only the tasks tagged `always`
(argument validation and asserts), so they are quick and change nothing. What the wiring
computes is tested without Ansible in test_platform_filters.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, WIRING, run

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


def render(inventory: Path, expr: str, *extra: str):
    """Render one expression of the wiring for the inventory's host: (value or None, log)."""
    play, result = inventory.parent / "render.yml", inventory.parent / "rendered.json"
    result.unlink(missing_ok=True)
    play.write_text(
        "- hosts: local1\n  gather_facts: false\n"
        f"  vars_files: {json.dumps(WIRING)}\n"
        "  tasks:\n    - ansible.builtin.copy:\n"
        f"        dest: {result}\n        mode: '0600'\n"
        f'        content: "{{{{ ({expr}) | to_json }}}}"\n'
    )
    out = run([PLAYBOOK, "-i", str(inventory), str(play), *extra])
    if out.returncode != 0:
        return None, out.stdout + out.stderr
    return json.loads(result.read_text()), out.stdout


def test_oidc_clients_come_from_one_place(local_inventory):
    clients, log = render(local_inventory, "platform_oidc_client", "-e", "platform_domain=example.org")
    assert clients is not None, log[-3000:]
    assert set(clients) == {"jupyterhub", "superset", "exec_api"}
    hub = clients["jupyterhub"]
    assert hub["client_id"] == "jupyterhub"
    assert hub["redirect_uris"] == ["https://hub.example.org/hub/oauth_callback"]  # exact, no wildcard
    assert all("*" not in u for c in clients.values() for u in c["redirect_uris"] + c["post_logout_redirect_uris"])
    assert len({c["client_secret"] for c in clients.values()}) == 3  # generated, one per client
    assert clients["exec_api"]["audience"] == "exec-api"
    # Generated once, reused: a second rendering gives the same secrets.
    again, _ = render(local_inventory, "platform_oidc_client", "-e", "platform_domain=example.org")
    assert again == clients
    oidc, _ = render(local_inventory, "platform_oidc", "-e", "platform_domain=example.org")
    assert oidc["issuer"] == "https://auth.example.org/realms/platform"
    assert oidc["endpoints"]["end_session"].endswith("/protocol/openid-connect/logout")
    assert oidc["groups"] == ["platform-admins", "platform-users"]


def test_external_provider_client_secrets_are_never_generated(local_inventory):
    ext = ["-e", "identity_provider=external", "-e", "platform_oidc_issuer=https://login.example.org/"]
    clients, log = render(local_inventory, "platform_oidc_client", *ext)
    assert clients is None
    assert "platform_secrets.oidc_jupyterhub_client_secret" in log
    assert "identity_provider is external, so that provider issues it" in log
    assert not (local_inventory.parent / ".secrets/oidc_jupyterhub_client_secret").exists()
    # What to register at the provider is known before any secret is.
    regs, log = render(local_inventory, "platform_oidc_registrations", *ext)
    assert regs is not None, log[-3000:]
    assert {r["service"] for r in regs} == {"jupyterhub", "superset", "exec_api"}
    assert all("client_secret" not in r["client"] for r in regs)
    secrets = (
        '{"platform_secrets": {"oidc_jupyterhub_client_secret": "a", "oidc_superset_client_secret": "b",'
        ' "oidc_exec_api_client_secret": "c"}, "platform_oidc_client_ids": {"superset": "bi-tool"}}'
    )
    clients, log = render(local_inventory, "[platform_oidc_client, platform_oidc.issuer]", *ext, "-e", secrets)
    assert clients is not None, log[-3000:]
    assert clients[0]["superset"]["client_id"] == "bi-tool"
    assert clients[0]["jupyterhub"]["client_secret"] == "a"
    assert clients[1] == "https://login.example.org"


def test_superset_is_wired_from_the_same_places(local_inventory):
    """Superset's vhost, OIDC client, role mapping and read-only database role all come from the wiring."""
    dom = ["-e", "platform_domain=example.org"]
    sites, log = render(local_inventory, "nginx_sites", *dom)
    assert sites is not None, log[-3000:]
    site = next(s for s in sites if s["name"] == "superset")
    assert site["server_name"] == "superset.example.org" and site["upstreams"] == ["127.0.0.1:8088"]
    expr = (
        "{'url': superset_public_url, 'client': superset_oidc_client_id, 'logout': superset_oidc_post_logout_url,"
        " 'mapping': superset_roles_mapping, 'hba': postgresql_hba_entries,"
        " 'reader': superset_executions_reader, 'server': superset_executions_db_server}"
    )
    ss, log = render(local_inventory, expr, *dom)
    assert ss is not None, log[-3000:]
    assert ss["url"] == "https://superset.example.org" and ss["client"] == "superset"
    assert ss["logout"] == "https://superset.example.org/login/"
    assert ss["mapping"] == {"platform-admins": ["Admin"], "platform-users": ["Gamma"]}
    assert ss["server"] == "local1" and ss["reader"] == "superset_reader"
    reader = {"type": "host", "database": "exec_api", "user": "superset_reader", "address": "127.0.0.1/32",
              "method": "scram-sha-256"}  # fmt: skip
    # Then the analytics database's rules (roles/analytics; filter_plugins' analytics_hba has their tests).
    assert ss["hba"][0] == reader and all(r["database"] == "analytics" for r in ss["hba"][1:]), ss["hba"]


def wiring_text() -> dict[str, str]:
    return {Path(f).name: Path(f).read_text() for f in WIRING}


def test_the_wiring_declares_and_filters_compute():
    """No Jinja statements (loops, sets, JSON round trips) in group_vars/all/: what computes is a
    function in filter_plugins/platform.py, called from a one-line expression."""
    for name, text in wiring_text().items():
        assert "{%" not in text, f"group_vars/all/{name} has a Jinja statement: make it a filter in filter_plugins/"
        assert "from_json" not in text, f"group_vars/all/{name} parses JSON: return the data from a filter instead"


def test_every_input_is_read_once_under_its_own_name():
    """An operator input is read in inputs.yml only, with its default, as platform_inputs.<its name>;
    no other file reads it directly (which would repeat its default) or renames it."""
    inputs = yaml.safe_load((ROOT / "group_vars/all/inputs.yml").read_text())["platform_inputs"]
    for key, expr in inputs.items():
        assert re.fullmatch(r"\{\{ " + key + r" \| default\(.*\) \}\}", expr), f"inputs.yml: {key}: {expr}"
    for name, text in wiring_text().items():
        if name == "inputs.yml":
            continue
        code = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r"'[^']*'", "''", code)  # words in messages are not reads
        for key in inputs:
            direct = re.findall(r"(?<![\w.])" + key + r"\b", code)
            assert not direct, f"group_vars/all/{name} reads the input {key} directly: use platform_inputs.{key}"


# The second names the inputs once had in the wiring (platform_domain became platform_domain_name, ...).
SYNONYMS = ["platform_domain_name", "platform_identity_provider", "platform_keycloak_realm_name",
            "platform_admin_group", "platform_users_group", "platform_oidc_users", "platform_oidc_exec_api_audience",
            "platform_oidc_issuer_url"]  # fmt: skip


def test_no_input_has_a_second_name():
    files = [*map(Path, WIRING), ROOT / "site.yml", *(ROOT / "playbooks").glob("*.yml"), *(ROOT / "tools").glob("*.py"),
             *(ROOT / "roles").rglob("*.*"), *(ROOT / "molecule/shared").glob("oidc_test_provider*/**/*.j2"),
             ROOT / "molecule/shared/oidc_test_provider.yml"]  # fmt: skip
    for f in files:
        text = f.read_text(errors="replace")
        found = [s for s in SYNONYMS if re.search(rf"\b{s}\b", text)]
        assert not found, f"{f.relative_to(ROOT)} uses {found}: read the input (platform_inputs.<name>, platform_oidc)"
