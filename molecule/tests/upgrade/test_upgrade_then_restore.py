"""A restore onto a new host (issue #15): after the upgrade, a backup; the host is destroyed, a new
one booted (a new machine, nothing of the old one but the backup repository, carried over as an
operator re-attaches the backup disk) and converged with the same inventory and secrets; then
playbooks/restore.yml puts the backup back. Every table's rows and every file in the homes are
as they were at the backup, the execution history and its outputs, carol's dashboard, and alice
logs in and finds her files. The backup's size and the backup, converge and restore times are
printed (pytest -s, or the scenario's log)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from backuplib import snapshots, start
from hostlib import ROOT, Hub, browser_hub_token, fetch, playbook_runner
from oidc import code_flow
from upgradelib import DASHBOARD, changed_tables, dashboard_title, data_digest, differences, state, timed

SCENARIO = "mol-upgrade"  # tools/testhost.py's name for it (molecule/shared/create.yml)
HARNESS = ["python3", str(ROOT / "tools/testhost.py")]
# A new host has no servers running: the hub forgets alice's (its server, its spawner's state and
# the server's OAuth client); every service's start writes its last activity and Superset's
# request log.
# The idle culler's hub token is made anew at each hub start (users' tokens are compared on their
# own: upgradelib.KEPT_ROWS).
TOUCHED = {"jupyterhub.users"}
DROPPED = {"jupyterhub.api_tokens", "jupyterhub.spawners", "jupyterhub.servers", "jupyterhub.oauth_clients",
           "superset.logs"}  # fmt: skip


def harness(*args: str) -> str:
    out = subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"testhost.py {' '.join(args)}: {out.stderr[-2000:]}"
    return out.stdout


def machine_dir() -> Path:
    return Path(json.loads(harness("status", SCENARIO))["machines"]["site1"]["dir"])


@pytest.fixture(scope="session")
def moved(upgraded, work, bk, restic, repository, inventory_path, provider_tokens, api_url, ca, tmp_path_factory):
    """Backup, destroy, boot, converge, restore; what each took, and the state before and after."""
    assert upgraded["first"].rc == 0, "the upgrade failed: nothing to move"
    result, backup_s = timed(start, bk, "platform-backup.service")
    assert result == "success", bk.run("journalctl -u platform-backup -n 30 --no-pager").stdout
    snapshot = snapshots(restic, "site1")[-1]
    at_backup = state(bk, work, api_url, ca, provider_tokens["alice"])
    old_id = bk.check_output("cat /etc/machine-id")
    size = int(bk.check_output("du -sb %s | cut -f1", repository))

    carried = tmp_path_factory.mktemp("repository") / "repo"
    subprocess.run(["cp", "-a", str(machine_dir()) + repository, str(carried)], check=True)
    platform = yaml.safe_load((ROOT / "molecule/upgrade/molecule.yml").read_text())["platforms"][0]
    address = bk.backend.get_variables().get("ansible_host")
    harness("down", SCENARIO)
    instance_config = os.environ.get("MOLECULE_INSTANCE_CONFIG", str(inventory_path.parent / "instance_config.yml"))
    spec = f"{platform['name']}={','.join(platform['aliases'])}"
    hosts = json.loads(harness("up", SCENARIO, spec, "--instance-config", instance_config))
    assert hosts[0]["address"] == address, f"the new host has another address: {hosts[0]['address']} != {address}"
    subprocess.run(["cp", "-a", str(carried), str(machine_dir()) + repository], check=True)

    converged, converge_s = timed(playbook_runner(inventory_path, ROOT / "molecule/shared/converge.yml"))
    restored, restore_s = (
        timed(playbook_runner(inventory_path, ROOT / "playbooks/restore.yml")) if converged.rc == 0 else (None, 0)
    )
    print(f"restore onto a new host: backup {backup_s:.0f} s, repository {size / 2**20:.1f} MiB, "
          f"snapshot {snapshot['short_id']}; the new host converged in {converge_s:.0f} s, "
          f"restored in {restore_s:.0f} s")  # fmt: skip
    return {"at_backup": at_backup, "old_id": old_id, "converged": converged, "restored": restored}


@pytest.fixture(scope="session")
def back(moved, bk, work, browser, provider, exec_api_client, users, api_url, ca) -> dict:
    assert moved["restored"] is not None and moved["restored"].rc == 0, "the restore failed"
    login = code_flow(browser, provider, exec_api_client, users["alice"])  # the provider is new too
    login.context.close()
    return state(bk, work, api_url, ca, login.tokens["access_token"], columns=moved["at_backup"]["columns"])


def test_the_host_is_a_new_machine(moved, bk):
    assert bk.check_output("cat /etc/machine-id") != moved["old_id"]


def test_the_new_host_converges(moved):
    assert moved["converged"].rc == 0, moved["converged"].output[-4000:]


def test_the_restore_succeeds(moved):
    done = moved["restored"] or moved["converged"]
    assert moved["restored"] is not None and done.rc == 0, done.output[-4000:]


def test_every_table_has_its_rows_back(moved, back):
    assert changed_tables(moved["at_backup"]["tables"], back["tables"], TOUCHED, DROPPED) == {}


def test_every_file_in_the_homes_is_back(moved, back):
    assert differences(moved["at_backup"]["files"], back["files"]) == {}


def test_alices_home_is_hers(bk, back):
    """restic restores numeric ids; alice's uid on the new host need not be the old one."""
    wrong = bk.check_output("find /home/alice ! -user alice | head -5")
    assert wrong == "", f"files in alice's home owned by someone else: {wrong}"


def test_the_execution_history_and_its_outputs_are_back(moved, back):
    assert len(back["history"]) >= 4  # three before the upgrade, one after
    assert back["history"] == moved["at_backup"]["history"]


@pytest.mark.parametrize(("label", "path"), [("api", "/health"), ("hub", "/hub/health"), ("superset", "/health")])
def test_every_service_answers(back, label, path, domain, names, ca):
    r = fetch(f"https://{label}.{domain}{path}", ca)
    assert r.status_code == 200, f"{label}{path} after the restore: HTTP {r.status_code}"


def test_carols_dashboard_is_back(work, back, browser, domain, ca, users):
    assert dashboard_title(browser, domain, ca, users["carol"], work.dashboard_id) == DASHBOARD


def test_alice_logs_in_and_finds_her_files(work, back, browser, hub_url, ca, users):
    alice = Hub(hub_url, ca, "alice", browser_hub_token(browser, hub_url, users["alice"]))
    alice.start()
    assert data_digest(alice) == work.file_digest
