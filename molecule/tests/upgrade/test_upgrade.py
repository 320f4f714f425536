"""The current code converged over the previous release (molecule/upgrade/previous-release) with
users' work in it: the run succeeds, a second run changes nothing, every service answers, and
nothing is lost: every table's rows, every file in the homes, the execution history with its
outputs, carol's dashboard, alice's server still running with her files."""

from __future__ import annotations

import json

import pytest
from hostlib import fetch
from upgradelib import (
    DASHBOARD,
    api_client,
    changed_tables,
    changed_tasks,
    dashboard_title,
    data_digest,
    differences,
    state,
)

# Rows that change without anyone's work in them when the services restart: the last activity of
# the hub's users and servers (the same rows); the hub's tokens (the idle culler's is made anew at
# each hub start; users' tokens are compared on their own: upgradelib.KEPT_ROWS); Superset's
# request log.
TOUCHED = {"jupyterhub.users", "jupyterhub.spawners"}
DROPPED = {"jupyterhub.api_tokens", "superset.logs"}
# What a release changes on purpose: each database's schema revision, the dashboard the platform
# provisions (its charts, dataset, columns, metrics, connection; users' dashboards are compared on
# their own: upgradelib.KEPT_ROWS), and the Superset roles the platform keeps with their
# permissions (the analytics database's role per group; which users hold which role, ab_user_role,
# is still compared).
RELEASED = {"exec_api.alembic_version", "jupyterhub.alembic_version", "superset.alembic_version",
            "superset.dashboards", "superset.slices", "superset.tables", "superset.table_columns",
            "superset.sql_metrics", "superset.dbs", "superset.dashboard_slices", "superset.slice_user",
            "superset.ab_role", "superset.ab_view_menu", "superset.ab_permission_view",
            "superset.ab_permission_view_role"}  # fmt: skip


@pytest.fixture(scope="session")
def after(upgraded, bk, work, api_url, ca, provider_tokens) -> dict:
    assert upgraded["first"].rc == 0, "the upgrade failed"
    return state(bk, work, api_url, ca, provider_tokens["alice"], columns=work.before["columns"])


def test_the_current_code_converges_over_the_previous_release(upgraded):
    assert upgraded["first"].rc == 0, upgraded["first"].output[-4000:]


def test_a_second_run_changes_nothing(upgraded):
    second = upgraded["second"]
    assert second is not None and second.rc == 0, (second.output if second else "")[-3000:]
    assert second.recap("changed") == 0, f"changed on the second run: {changed_tasks(second.output)}"


def test_the_hub_database_is_at_the_releases_head(bk, upgraded):
    out = bk.run(
        "systemd-run --quiet --wait --pipe --collect --property=EnvironmentFile=/etc/jupyterhub/jupyterhub.env"
        " -- /opt/jupyterhub/venv/bin/python /opt/jupyterhub/hub_db.py"
    )
    assert out.rc == 0, out.stderr
    rev = json.loads(out.stdout.strip().splitlines()[-1])
    assert rev["current"] == rev["heads"] and rev["heads"], rev


@pytest.mark.parametrize(("label", "path"), [("api", "/health"), ("hub", "/hub/health"), ("superset", "/health")])
def test_every_service_answers(upgraded, label, path, domain, names, ca):
    r = fetch(f"https://{label}.{domain}{path}", ca)
    assert r.status_code == 200, f"{label}{path} after the upgrade: HTTP {r.status_code}"


def test_every_table_keeps_its_rows(work, after):
    assert changed_tables(work.before["tables"], after["tables"], TOUCHED, DROPPED | RELEASED) == {}


def test_every_file_in_the_homes_is_kept(work, after):
    assert differences(work.before["files"], after["files"]) == {}


def test_the_execution_history_and_its_outputs_are_kept(work, after):
    assert len(work.before["history"]) >= 3
    assert after["history"] == work.before["history"]


def test_alices_server_kept_running_and_reads_her_file(hubs, work, api_url):
    alice = hubs["alice"]
    assert (alice.server() or {}).get("ready"), "alice's server is not running after the upgrade"
    assert data_digest(alice) == work.file_digest


def test_carols_dashboard_is_kept(work, browser, domain, ca, users):
    assert dashboard_title(browser, domain, ca, users["carol"], work.dashboard_id) == DASHBOARD


def test_alices_notebook_runs_after_the_upgrade(work, after, api_url, ca, provider_tokens):
    with api_client(api_url, ca, provider_tokens["alice"]) as api:
        ex = api.wait(api.run(notebook_id=work.notebook_id, parameters={"month": 4}).id, timeout=300, poll=0.5)
        assert ex.status == "succeeded", ex.error_message
        assert b"report for north, month 4: 400" in api.output(ex.id)
