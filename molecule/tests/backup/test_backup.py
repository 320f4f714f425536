"""Backups of the platform's state (roles/backup), on the all-in-one host: a run keeps every
database as a restorable dump, the users' homes and the services' state, and says so in its
status; what must not be kept is not; a repository that is gone fails the unit with a reason and
leaves the last good backup named; the weekly check passes; no secret leaks."""

from __future__ import annotations

import json
import time

import pytest
from backuplib import snapshots, start

MARK = f"backup mark {time.time():.0f}"
STAGING = "/var/backups/platform-backup/databases"


@pytest.fixture(scope="module")
def backed_up(bk, restic, repository) -> dict:
    """alice's file (and a cache file, excluded) in her home, then one backup run."""
    files = f"mkdir -p ~/notebooks ~/.cache && echo '{MARK}' > ~/notebooks/backup-mark.txt && echo x > ~/.cache/junk"
    made = bk.run("runuser -u alice -- sh -c %s", files)
    assert made.rc == 0, made.stderr
    result = start(bk, "platform-backup.service")
    assert result == "success", bk.run("journalctl -u platform-backup -n 30 --no-pager").stdout
    latest = snapshots(restic, bk.backend.get_hostname())[-1]
    return latest


def test_the_timers_are_enabled_and_scheduled(bk, repository):
    for timer in ("platform-backup.timer", "platform-backup-check.timer"):
        shown = bk.check_output("systemctl show -p UnitFileState,ActiveState %s", timer)
        props = dict(ln.split("=", 1) for ln in shown.splitlines())
        assert props == {"UnitFileState": "enabled", "ActiveState": "active"}, f"{timer}: {props}"


def test_a_snapshot_holds_the_homes_state_and_database_dumps(backed_up):
    expected = {"/home", "/var/lib/exec-api", "/var/lib/jupyterhub", "/var/lib/superset", STAGING}
    assert expected <= set(backed_up["paths"]), f"snapshot paths: {backed_up['paths']}"
    assert "platform" in backed_up.get("tags", [])


def test_each_database_dump_is_a_restorable_archive(bk, backed_up, restic):
    listing = restic("ls", "--json", backed_up["id"], STAGING)
    names = sorted(json.loads(ln)["name"] for ln in listing.splitlines() if '"struct_type":"node"' in ln)
    assert {"globals.sql", "exec_api.dump", "jupyterhub.dump", "superset.dump"} <= set(names), names
    out = bk.run("platform-backup restic dump %s %s | pg_restore --list", backed_up["id"], f"{STAGING}/exec_api.dump")
    assert out.rc == 0 and "TABLE public notebook_executions" in out.stdout, f"pg_restore --list: {out.stderr[-500:]}"


def test_a_users_file_is_kept_and_her_cache_is_not(restic, backed_up):
    got = restic("dump", backed_up["id"], "/home/alice/notebooks/backup-mark.txt")
    assert got.strip() == MARK
    cache = restic("ls", backed_up["id"], "/home/alice/.cache")
    assert "junk" not in cache, "~/.cache was kept"


def test_the_status_names_the_last_good_backup(bk, backed_up):
    out = bk.run("platform-backup status")
    assert out.rc == 0 and backed_up["id"][:8] in out.stdout, f"status: rc {out.rc} {out.stdout} {out.stderr}"


def test_the_weekly_check_passes(bk, backed_up):
    assert start(bk, "platform-backup-check.service") == "success", bk.run(
        "journalctl -u platform-backup-check -n 30 --no-pager"
    ).stdout


def test_a_repository_that_is_gone_fails_the_unit_with_the_reason(bk, backed_up, repository):
    """The repository's disk is away (moved); the run fails, says why, and the status still names
    the last good backup; once it is back, the next run succeeds."""
    assert repository.startswith("/"), "the scenario's repository is a local path"
    since = bk.check_output("date %s", "+%Y-%m-%d %H:%M:%S")
    bk.run("mv %s %s.away", repository, repository)
    try:
        result = start(bk, "platform-backup.service")
        journal = bk.run("journalctl -u platform-backup --since %s --no-pager -o cat", since).stdout
    finally:
        bk.run("mv %s.away %s", repository, repository)
    assert result == "exit-code", f"the run without its repository ended {result}"
    assert "platform-backup: restic backup failed" in journal, journal[-1500:]
    status = bk.run("platform-backup status")
    assert status.rc == 0 and backed_up["id"][:8] in status.stdout, status.stdout + status.stderr
    assert start(bk, "platform-backup.service") == "success", "the run after the repository came back"


def test_no_secret_is_in_the_settings_units_or_journal(bk, backed_up, secret_values):
    password = secret_values["backup_repository_password"]
    for path in ("/etc/platform-backup", "/etc/platform-backup/password", "/etc/platform-backup/backup.conf"):
        f = bk.file(path)
        assert (f.user, f.mode & 0o077) == ("root", 0), f"{path}: {f.user} {oct(f.mode)}"
    assert password not in bk.file("/etc/platform-backup/backup.conf").content_string
    shown = bk.run("systemctl cat platform-backup.service platform-backup-check.service; "
                   "journalctl -u platform-backup -u platform-backup-check --no-pager -o cat").stdout  # fmt: skip
    assert password not in shown


def test_a_lock_left_by_a_killed_restic_stops_neither_backup_nor_check(bk, backed_up, restic):
    """restic killed mid-command (kill -9, out of memory) keeps its lock in the repository; the next
    run and check clear it (only a lock whose process is gone) and succeed."""
    # A dump of the whole snapshot into a reader that never reads: restic blocks holding its lock.
    bk.check_output("setsid sh -c 'platform-backup restic dump latest / | sleep 300' >/dev/null 2>&1 </dev/null &")
    try:
        for _ in range(40):
            if restic("list", "locks", "--no-lock").strip():
                break
            time.sleep(0.25)
        else:
            pytest.fail("restic dump never took its lock")
    finally:
        bk.run("pkill -KILL -x restic; pkill -f '^sleep 300$'")
    assert restic("list", "locks", "--no-lock").strip(), "the killed restic left no lock: nothing is tested"
    assert start(bk, "platform-backup.service") == "success", bk.run(
        "journalctl -u platform-backup -n 20 --no-pager -o cat"
    ).stdout
    assert start(bk, "platform-backup-check.service") == "success", bk.run(
        "journalctl -u platform-backup-check -n 20 --no-pager -o cat"
    ).stdout
    assert not restic("list", "locks", "--no-lock").strip(), "a lock is left after the run and the check"
