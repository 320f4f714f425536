"""The Notebook executions dashboard: alice runs one notebook that succeeds and one that fails
through the exec API; the dashboard, as its viewers see it in the browser, draws its charts
with those runs in them; Superset's REST API serves them; and the read-only database role behind
it reads the executions view and nothing else.
"""

from __future__ import annotations

import json
import shlex

import pytest
from supersetlib import CHARTS, DASHBOARD, RUNS

DATABASE = "exec_api"  # superset_executions_db_name
READER = "superset_reader"  # superset_executions_reader
VIEW = "reporting.notebook_executions"
PGPASS = "/root/.pgpass-superset-reader"


def test_alices_runs_end_as_they_should(executions):
    ended = {name: ex["status"] for name, ex in executions.items()}
    assert ended == RUNS, f"the runs through the exec API ended {ended}, expected {RUNS}"


# ------------------------------------------------------------------------------ in the browser
def test_dashboard_shows_its_title_and_charts(dashboard_page):
    body = dashboard_page.inner_text("body")
    missing = [title for title in ("Notebook executions", *CHARTS) if title not in body]
    assert not missing, f"the dashboard page lacks {missing}"


def test_dashboard_lists_both_runs_and_no_chart_error(dashboard_page):
    body = dashboard_page.inner_text("body")
    errors = dashboard_page.locator(".alert-danger, .ant-alert-error").all_inner_texts()
    assert all(name in body for name in RUNS), f"the dashboard does not show {list(RUNS)}"
    assert not errors, f"charts show errors: {errors}"


# ------------------------------------------------------------------------------ REST API
def test_dashboard_api_lists_its_charts(admin_session):
    r = admin_session.get(f"/api/v1/dashboard/{DASHBOARD}/charts")
    names = sorted(c["slice_name"] for c in r.json()["result"]) if r.status_code == 200 else None
    assert names == sorted(CHARTS), f"GET /api/v1/dashboard/{DASHBOARD}/charts: HTTP {r.status_code}, {names}"


def test_each_status_has_a_colour_that_reads_at_a_glance(admin_session):
    """Success green, failure red (not Superset's palette order, which drew failed green)."""
    r = admin_session.get(f"/api/v1/dashboard/{DASHBOARD}")
    assert r.status_code == 200, f"GET /api/v1/dashboard/{DASHBOARD}: HTTP {r.status_code}"
    colours = json.loads(r.json()["result"]["json_metadata"]).get("label_colors", {})
    assert colours.get("succeeded") == "#2e7d32" and colours.get("failed") == "#c62828", colours
    assert {"timed_out", "cancelled", "skipped"} <= colours.keys(), colours


def dataset_rows(session, executions: dict[str, dict], columns: list[str]) -> list[dict]:
    """The dashboard's dataset's rows for these runs, through Superset's chart data API."""
    r = session.get(f"/api/v1/dashboard/{DASHBOARD}/datasets")
    assert r.status_code == 200 and len(r.json()["result"]) == 1, f"the dashboard's datasets: HTTP {r.status_code}"
    dataset = r.json()["result"][0]["id"]
    query = {"columns": columns, "row_limit": 1000,
             "filters": [{"col": "id", "op": "IN", "val": [ex["id"] for ex in executions.values()]}]}  # fmt: skip
    body = {"datasource": {"id": dataset, "type": "table"}, "queries": [query], "force": True,
            "result_format": "json", "result_type": "full"}  # fmt: skip
    r = session.post("/api/v1/chart/data", body)
    assert r.status_code == 200, f"POST /api/v1/chart/data: HTTP {r.status_code} {r.text[:300]}"
    return r.json()["result"][0]["data"]


def test_dashboard_dataset_serves_alices_runs(admin_session, executions):
    data = dataset_rows(admin_session, executions, ["id", "notebook_name", "username", "status"])
    rows = {row["notebook_name"]: (row["username"], row["status"]) for row in data}
    want = {name: (ex["username"], ex["status"]) for name, ex in executions.items()}
    assert rows == want, f"the dataset has {rows} for the runs, expected {want}"


def test_dashboard_dataset_serves_what_each_run_used(admin_session, executions):
    """The figures the exec API measured (its systemd runner's kernels: CPU time, peak memory),
    as the dashboard's dataset serves them for the Resources chart."""
    data = dataset_rows(admin_session, executions, ["notebook_name", "cpu_seconds", "peak_memory_mib", "output_bytes"])
    rows = {row["notebook_name"]: row for row in data}
    for name, ex in executions.items():
        row = rows[name]
        assert row["cpu_seconds"] == ex["cpu_seconds"] and ex["cpu_seconds"] > 0, (name, row, ex["cpu_seconds"])
        assert ex["peak_memory_bytes"] > 10 * 2**20, (name, ex["peak_memory_bytes"])  # a Python kernel's RSS at least
        assert abs(float(row["peak_memory_mib"]) - ex["peak_memory_bytes"] / 2**20) < 0.01, (name, row)
    ok = rows["superset-check-ok"]
    assert ok["output_bytes"] > 0, ok


# ------------------------------------------------------------------------------ the read-only role
@pytest.fixture(scope="module")
def reader_sql(superset_host, secrets_dir):
    """reader_sql(statement) -> psql's result as the read-only role, logged in with its password
    (in a root-only file on the host, never on a command line or in the journal)."""
    password = (secrets_dir / "postgresql_superset_reader_password").read_text().strip()
    content = f"127.0.0.1:*:{DATABASE}:{READER}:{password}\n"
    superset_host.ansible("copy", json.dumps({"dest": PGPASS, "mode": "0600", "content": content}), check=False)

    def run(statement: str):
        args = ["psql", "-h", "127.0.0.1", "-U", READER, "-d", DATABASE, "-v", "ON_ERROR_STOP=1", "-tAc", statement]
        return superset_host.run(f"PGPASSFILE={PGPASS} {shlex.join(args)}")

    yield run
    superset_host.run(f"rm -f {PGPASS}")


def test_read_only_role_reads_the_executions_view(reader_sql, executions):
    out = reader_sql(f"SELECT status, count(*) FROM {VIEW} GROUP BY status")
    counts = dict(line.split("|") for line in out.stdout.split())
    assert out.rc == 0 and {"succeeded", "failed"} <= set(counts), (
        f"{READER} reading {VIEW}: rc {out.rc}, {counts} {out.stderr}"
    )


@pytest.mark.parametrize(
    "statement",
    [
        f"BEGIN READ WRITE; DELETE FROM {VIEW}; COMMIT",
        "BEGIN READ WRITE; UPDATE public.notebook_executions SET status = 'x'; COMMIT",
        "BEGIN READ WRITE; CREATE TABLE reporting.x (i int); COMMIT",
        "BEGIN READ WRITE; CREATE TABLE public.x (i int); COMMIT",
        "SELECT count(*) FROM public.notebooks",
        "SELECT count(*) FROM public.notebook_parameters",
    ],
    ids=["delete-view", "update-table", "create-in-reporting", "create-in-public", "read-notebooks", "read-params"],
)
def test_read_only_role_cannot_write_nor_read_behind_the_view(reader_sql, statement):
    out = reader_sql(statement)
    # Refused for its rights (a view with a join is not updatable at all), not for a failed login.
    refused = out.rc != 0 and ("permission denied" in out.stderr or "cannot delete from view" in out.stderr)
    assert refused, f"{READER}: {statement!r} gave rc {out.rc}: {out.stdout} {out.stderr}"
