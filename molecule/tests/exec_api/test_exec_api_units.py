"""The exec API's units and files on its host (roles/exec_api): sandboxed units, limits on the
runs' slice and the API, no secret in the journal, an installation nobody else may change, and
the retention timer that runs.
"""

from __future__ import annotations

import pytest
from hostlib import exposure, unit_props

# The units the role installs score at most this (STYLE.md, threat model).
SERVICE_EXPOSURE = 4.0
INSTALL = "/opt/exec-api"


@pytest.mark.parametrize("unit", ["exec-api.service", "exec-api-launcher@probe.service", "exec-api-retention.service"])
def test_unit_exposure_is_at_most_4(api_host, unit):
    score = exposure(api_host, unit)
    assert score <= SERVICE_EXPOSURE, f"{unit}: systemd-analyze security exposure {score} > {SERVICE_EXPOSURE}"


def test_the_runs_slice_limits_memory_tasks_and_cpu(api_host):
    limits = unit_props(api_host, "exec-api-runs.slice", "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec")
    unlimited = {k: v for k, v in limits.items() if v in ("infinity", "")}
    assert len(limits) == 3 and not unlimited, f"exec-api-runs.slice: {limits}"


def test_the_api_unit_has_a_memory_limit(api_host):
    limits = unit_props(api_host, "exec-api.service", "MemoryMax")
    assert limits.get("MemoryMax") not in (None, "infinity", ""), f"exec-api.service: {limits}"


@pytest.fixture
def db_password_on_host(api_host, secrets_dir):
    """The exec API's database password in a root-only file on the host, copied from the secrets
    directory (only its path is on a command line); removed afterwards."""
    src = secrets_dir / "postgresql_exec_api_password"
    assert src.is_file(), f"the exec API's database password is not at {src}"
    dest = "/root/.verify-exec-api-db-password"
    api_host.ansible("copy", f"src={src} dest={dest} owner=root group=root mode=0600", check=False)
    yield dest
    api_host.run(f"rm -f {dest}")


def test_the_journal_never_saw_the_database_password(api_host, db_password_on_host):
    """Every field of every entry (command lines included); the password reaches grep through a
    descriptor, never a command line."""
    out = api_host.run(
        f"bash -c 'set -o pipefail; pw=$(cat {db_password_on_host}); journalctl --no-pager -q -n 1 > /dev/null; "
        'journalctl --no-pager -o export | grep -a -c -F -f /dev/fd/3 3<<<"$pw" || test $? = 1\''
    )
    assert out.rc == 0, f"searching the journal failed: rc {out.rc} {out.stderr.strip()}"
    assert out.stdout.strip() == "0", f"{out.stdout.strip()} journal entries carry the exec API's database password"


def test_nothing_under_the_installation_is_writable_by_others(api_host):
    out = api_host.check_output(f"find {INSTALL} -xdev -perm -0002 ! -type l")
    assert not out.strip(), f"writable by any user under {INSTALL}:\n{out}"


def test_uv_lock_files_are_roots_alone(api_host):
    """uv's .lock files were 0666: anyone could hold them and stall an install."""
    out = api_host.check_output(f"find {INSTALL} -xdev -name .lock \\( -perm /0077 -o ! -user root \\) -ls")
    assert not out.strip(), f"lock files others may open:\n{out}"


def test_the_retention_timer_is_enabled_and_active(api_host):
    timer = unit_props(api_host, "exec-api-retention.timer", "UnitFileState", "ActiveState")
    assert timer == {"UnitFileState": "enabled", "ActiveState": "active"}, f"exec-api-retention.timer: {timer}"


def test_a_retention_run_succeeds(api_host):
    started = api_host.run("systemctl start exec-api-retention.service")  # a oneshot: waits for its end
    ended = unit_props(api_host, "exec-api-retention.service", "Result", "ExecMainStatus")
    assert started.rc == 0 and ended == {"Result": "success", "ExecMainStatus": "0"}, (
        f"exec-api-retention.service: {ended} {started.stderr.strip()} (journalctl -u exec-api-retention.service)"
    )
