"""A restore (playbooks/restore.yml) onto the same host, after the damage a bad day does: alice's
file deleted, the execution history and Superset's dashboards wiped. The snapshot taken before
comes back with every row count and alice's file (hers), the services answer again, and a
restore that would overwrite newer data is refused unless forced. A restore onto a new host is
the upgrade scenario's (molecule/tests/upgrade/test_upgrade_then_restore.py)."""

from __future__ import annotations

import pytest
from backuplib import counts, snapshots, sql, start
from hostlib import ROOT, fetch, playbook_runner

RESTORE = "playbooks/restore.yml"
MARK_FILE = "/home/alice/notebooks/restore-mark.txt"
ESCAPE = "/etc/restore-escape"


@pytest.fixture(scope="module")
def day(bk, restic, inventory_path) -> dict:
    """The state before, its snapshot, the damage, a newer snapshot of the damaged state, then a
    refused and a forced restore of the first one."""
    made = bk.run("runuser -u alice -- sh -c %s", f"mkdir -p ~/notebooks && echo before > {MARK_FILE}")
    assert made.rc == 0, made.stderr
    before = counts(bk)
    # The other areas ran first (conftest.py): their runs, notebooks and logins are in these.
    kept = ("exec_api.notebook_executions", "superset.dashboards", "jupyterhub.users")
    assert all(before[k] > 0 for k in kept), before
    assert start(bk, "platform-backup.service") == "success"
    snapshot = snapshots(restic, bk.backend.get_hostname())[-1]

    bk.run("rm -f %s", MARK_FILE)
    # alice, hostile, leaves her notebooks as a link to a place only root may write: a restore that
    # followed it would create it as root.
    planted = bk.run("runuser -u alice -- sh -c %s", f"mv ~/notebooks ~/notebooks-gone && ln -s {ESCAPE} ~/notebooks")
    assert planted.rc == 0, planted.stderr
    sql(bk, "exec_api", "DELETE FROM notebook_executions")
    sql(bk, "superset", "TRUNCATE dashboards CASCADE")
    assert start(bk, "platform-backup.service") == "success"  # the damaged state is now the newest

    run = playbook_runner(inventory_path, ROOT / RESTORE)
    refused = run(restore_snapshot=snapshot["short_id"])
    restored = run(restore_snapshot=snapshot["short_id"], restore_force=True)
    return {"before": before, "snapshot": snapshot, "refused": refused, "restored": restored}


def test_a_restore_over_newer_data_is_refused(day):
    out = day["refused"]
    assert out.rc != 0 and "holds newer data" in out.output and "restore_force=true" in out.output, out.output[-2000:]


def test_the_forced_restore_succeeds(day):
    assert day["restored"].rc == 0, day["restored"].output[-3000:]


def test_every_row_count_is_back(bk, day):
    assert counts(bk) == day["before"]


def test_alices_file_is_back_and_hers(bk, day):
    f = bk.file(MARK_FILE)
    assert f.exists and f.content_string.strip() == "before" and f.user == "alice", (f.exists, f.user)


@pytest.mark.parametrize(("label", "path"), [("api", "/health"), ("hub", "/hub/health"), ("superset", "/health")])
def test_the_services_answer_after_the_restore(day, label, path, domain, names, ca):
    r = fetch(f"https://{label}.{domain}{path}", ca)
    assert r.status_code == 200, f"{label}{path} after the restore: HTTP {r.status_code}"


def test_a_link_alice_left_is_not_followed_and_what_was_there_is_kept_aside(bk, day):
    assert not bk.file(ESCAPE).exists, f"the restore followed alice's link and made {ESCAPE}"
    notebooks = bk.file("/home/alice/notebooks")
    assert notebooks.is_directory and not notebooks.is_symlink, "alice's notebooks is not the snapshot's directory"
    aside = bk.check_output("ls -d /var/backups/platform-backup/before-restore-* | tail -n 1")
    kept = bk.file(f"{aside}/home/alice/notebooks")
    assert kept.is_symlink and kept.linked_to == ESCAPE, "the home that was there is not kept aside"
    assert (bk.file(aside).user, bk.file(aside).mode) == ("root", 0o700)
