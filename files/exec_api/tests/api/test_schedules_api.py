"""/db/schedules over HTTP: create, read, change, pause, resume, run now and delete; bad input
named by field with nothing stored; another user's notebook or schedule is not found; and a
due schedule fired by the embedded worker runs as any run, recording its schedule and instant."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from conftest import wait_status

from exec_api.worker import _psycopg_dsn


def _count(db_url: str, username: str) -> int:
    with psycopg.connect(_psycopg_dsn(db_url)) as c:
        row = c.execute(
            "SELECT count(*) FROM schedules WHERE username = %s", (username,)
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def report(app_client, user) -> int:
    """user's registered notebook with parameters month (int, 1..12) and region."""
    user.notebook(
        "report.ipynb", "print(f'{region} {month}')", params="month = 1\nregion = 'north'"
    )
    r = app_client.post(
        "/db/notebooks", headers=user.headers, json={"name": "report", "file_path": "report.ipynb"}
    )
    assert r.status_code == 201, r.text
    nid = r.json()["id"]
    month = next(p for p in r.json()["parameters"] if p["param_name"] == "month")
    r = app_client.put(
        f"/db/parameters/{month['id']}",
        headers=user.headers,
        json={"validation_rules": {"min": 1, "max": 12}},
    )
    assert r.status_code == 200, r.text
    return nid


def body(nid: int, **over):
    return {
        "notebook_id": nid,
        "cron": "0 6 1 * *",
        "timezone": "Europe/Berlin",
        "parameters": {"month": 3, "region": "south"},
    } | over


def test_create_read_change_pause_resume_delete(app_client, user, report):
    r = app_client.post("/db/schedules", headers=user.headers, json=body(report, name="monthly"))
    assert r.status_code == 201, r.text
    sch = r.json()
    assert (sch["username"], sch["cron"], sch["overlap_policy"], sch["catchup_policy"]) == (
        user.name,
        "0 6 1 * *",
        "skip",
        "latest",
    )
    nxt = dt.datetime.fromisoformat(sch["next_run_at"])
    assert nxt > dt.datetime.now(dt.UTC).replace(tzinfo=None) and nxt.minute == 0
    sid = sch["id"]
    assert app_client.get(f"/db/schedules/{sid}", headers=user.headers).json()["name"] == "monthly"
    assert [s["id"] for s in app_client.get("/db/schedules", headers=user.headers).json()] == [sid]
    mine = app_client.get(f"/db/schedules/user/{user.name}", headers=user.headers).json()
    assert [s["id"] for s in mine] == [sid]

    r = app_client.put(f"/db/schedules/{sid}", headers=user.headers, json={"cron": "*/5 * * * *"})
    assert r.status_code == 200 and r.json()["cron"] == "*/5 * * * *"
    assert dt.datetime.fromisoformat(r.json()["next_run_at"]).minute % 5 == 0

    r = app_client.post(f"/db/schedules/{sid}/pause", headers=user.headers)
    assert r.status_code == 200 and r.json()["paused"] is True
    r = app_client.post(f"/db/schedules/{sid}/resume", headers=user.headers)
    assert r.status_code == 200 and r.json()["paused"] is False

    assert app_client.delete(f"/db/schedules/{sid}", headers=user.headers).status_code == 204
    assert app_client.get(f"/db/schedules/{sid}", headers=user.headers).status_code == 404


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"cron": "0 6 1 * * *"}, "cron", "five fields"),
        ({"cron": "0 25 * * *"}, "cron", "not a valid cron expression"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "no time zone"),
        ({"overlap_policy": "sometimes"}, "overlap_policy", ""),
        ({"retry_attempts": 99}, "retry_attempts", ""),
        ({"unknown": 1}, "unknown", ""),
        ({"catchup_max": 1000}, "catchup_max", ""),
    ],
)
def test_bad_fields_are_named_and_nothing_is_stored(
    app_client, user, report, db_url, over, field, words
):
    r = app_client.post("/db/schedules", headers=user.headers, json=body(report, **over))
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == field and words in e["msg"] for e in errors), errors
    assert _count(db_url, user.name) == 0


@pytest.mark.parametrize(
    ("parameters", "name"),
    [({"month": 13}, "month"), ({"month": "march"}, "month"), ({"colour": "red"}, "colour")],
)
def test_parameters_that_fail_validation_are_named(
    app_client, user, report, db_url, parameters, name
):
    r = app_client.post(
        "/db/schedules", headers=user.headers, json=body(report, parameters=parameters)
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["parameter"] == name
    assert _count(db_url, user.name) == 0


def test_someone_elses_notebook_and_schedule_are_not_found(
    app_client, user, make_user, report, db_url
):
    bob = make_user()
    r = app_client.post("/db/schedules", headers=bob.headers, json=body(report))
    assert r.status_code == 404 and r.json()["detail"] == "notebook not found"
    assert _count(db_url, bob.name) == 0
    sid = app_client.post("/db/schedules", headers=user.headers, json=body(report)).json()["id"]
    for method, path in [
        ("GET", ""),
        ("PUT", ""),
        ("DELETE", ""),
        ("POST", "/pause"),
        ("POST", "/run"),
    ]:
        r = app_client.request(
            method,
            f"/db/schedules/{sid}{path}",
            headers=bob.headers,
            json={} if method == "PUT" else None,
        )
        assert r.status_code == 404, (method, path, r.status_code)
    assert app_client.get(f"/db/schedules/user/{user.name}", headers=bob.headers).status_code == 403
    assert app_client.get("/db/schedules", headers=bob.headers).json() == []


def test_run_now_runs_with_the_schedules_parameters(app_client, user, report):
    sid = app_client.post("/db/schedules", headers=user.headers, json=body(report)).json()["id"]
    r = app_client.post(f"/db/schedules/{sid}/run", headers=user.headers)
    assert r.status_code == 202, r.text
    ex = wait_status(app_client, r.json()["id"], user.headers)
    assert ex["status"] == "succeeded", ex
    assert (ex["schedule_id"], ex["planned_for"], ex["parameters_used"]) == (
        sid,
        None,
        {"month": 3, "region": "south"},
    )
    # The local runner's pooled kernels cannot tell a run's own CPU and memory: null, not a guess.
    assert ex["output_bytes"] > 0 and ex["cpu_seconds"] is None and ex["peak_memory_bytes"] is None


def test_a_due_schedule_is_fired_by_the_worker(app_client, user, report, db_url):
    sid = app_client.post(
        "/db/schedules", headers=user.headers, json=body(report, cron="* * * * *")
    ).json()["id"]
    due = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
    with psycopg.connect(_psycopg_dsn(db_url), autocommit=True) as c:
        c.execute("UPDATE schedules SET next_run_at = %s WHERE id = %s", (due, sid))
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    runs: list = []
    while not runs and dt.datetime.now() < deadline:
        runs = app_client.get(f"/db/executions?schedule_id={sid}", headers=user.headers).json()
        time.sleep(0.2)
    assert runs, "the worker did not fire the due schedule"
    ex = wait_status(app_client, runs[0]["id"], user.headers)
    assert ex["status"] == "succeeded" and ex["planned_for"] == due.isoformat(), ex
    out = app_client.get(f"/db/executions/{ex['id']}/output", headers=user.headers).text
    assert "south 3" in out


def test_a_user_may_have_so_many_schedules_and_subscriptions(
    app_client, user, report, db_url, monkeypatch
):
    from exec_api.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_schedules_per_user", 2)
    monkeypatch.setattr(get_settings(), "max_subscriptions_per_user", 1)
    for _ in range(2):
        assert (
            app_client.post("/db/schedules", headers=user.headers, json=body(report)).status_code
            == 201
        )
    r = app_client.post("/db/schedules", headers=user.headers, json=body(report))
    assert r.status_code == 409 and "EXEC_API_MAX_SCHEDULES_PER_USER" in r.json()["detail"]
    assert _count(db_url, user.name) == 2
    hook = {"kind": "webhook", "target": "https://1.1.1.1/h"}
    assert app_client.post("/db/notifications", headers=user.headers, json=hook).status_code == 201
    r = app_client.post("/db/notifications", headers=user.headers, json=hook)
    assert r.status_code == 409 and "EXEC_API_MAX_SUBSCRIPTIONS_PER_USER" in r.json()["detail"]


@pytest.mark.parametrize(
    "field", ["cron", "timezone", "retry_attempts", "parameters", "overlap_policy"]
)
def test_a_change_to_null_is_refused_and_changes_nothing(app_client, user, report, field):
    sid = app_client.post("/db/schedules", headers=user.headers, json=body(report)).json()["id"]
    r = app_client.put(f"/db/schedules/{sid}", headers=user.headers, json={field: None})
    assert r.status_code == 422 and f"{field} cannot be null" in r.text, r.text
    assert (
        app_client.get(f"/db/schedules/{sid}", headers=user.headers).json()["cron"] == "0 6 1 * *"
    )
