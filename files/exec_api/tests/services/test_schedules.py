"""Firing schedules against the real PostgreSQL (exec_api.services.schedules): each planned
instant gets exactly one first try with two workers racing, the catch-up and overlap policies,
the end of a schedule, and retries (their links, backoff, and never for a cancelled run)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from freshdb import fresh_sessions
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from exec_api.core.config import Settings
from exec_api.models import Notebook, NotebookExecution, Schedule
from exec_api.services import params as P
from exec_api.services import queue as q
from exec_api.services import schedules
from exec_api.services.submissions import refresh_parameters

T0 = dt.datetime(2026, 6, 1, 12, 0)  # a Monday, noon UTC


@pytest.fixture
def sf(pg: Any) -> Iterator[sessionmaker[Session]]:
    yield from fresh_sessions(pg, "sched")


@pytest.fixture
def settings(env: dict[str, str], sf: sessionmaker[Session]) -> Settings:
    return Settings(database_url=str(sf.kw["bind"].url.render_as_string(hide_password=False)))


@pytest.fixture
def schedule(sf, user, settings):
    """make(**fields) -> a schedule of `user`'s registered notebook (parameter n), due at T0."""

    path = user.notebook("report.ipynb", "print(n)", params="n = 1")
    with sf() as db:
        nb = Notebook(name="report", file_path=str(path), username=user.name)
        nb.detect_parameters = True
        db.add(nb)
        db.commit()
        refresh_parameters(
            db, nb, P.discover(nbformat.read(str(path), as_version=4))
        )  # as registering does
        nid = nb.id

    def make(**fields: Any) -> int:
        values: dict[str, Any] = {
            "cron": "* * * * *",
            "timezone": "UTC",
            "parameters": {"n": 2},
            "next_run_at": T0,
        } | fields
        with sf() as db:
            sch = Schedule(username=user.name, notebook_id=nid, **values)
            db.add(sch)
            db.commit()
            return sch.id

    return make


def runs(sf, schedule_id: int) -> list[NotebookExecution]:
    with sf() as db:
        rows = db.execute(
            select(NotebookExecution)
            .where(NotebookExecution.schedule_id == schedule_id)
            .order_by(NotebookExecution.id)
        )
        return list(rows.scalars())


def fire(sf, settings, now: dt.datetime) -> list[int]:
    with sf() as db:
        return schedules.fire_due(db, settings, now=now)


def test_a_due_schedule_queues_its_run_with_the_planned_instant(sf, settings, schedule):
    sid = schedule()
    assert fire(sf, settings, T0 + dt.timedelta(seconds=3))
    [ex] = runs(sf, sid)
    assert ex.status == "queued", ex.error_message
    assert (ex.planned_for, ex.parameters_used, ex.input_path) == (T0, {"n": 2}, "report.ipynb")
    with sf() as db:
        assert db.get(Schedule, sid).next_run_at == T0 + dt.timedelta(minutes=1)
    assert fire(sf, settings, T0 + dt.timedelta(seconds=30)) == []  # nothing new is due


def test_two_workers_racing_plan_each_instant_once(sf, settings, schedule):
    """Ten schedules, each with five planned instants due; two workers (threads, sessions of
    their own) fire at the same moment, over and over: one first try per instant."""
    ids = [schedule(catchup_policy="all", catchup_max=5, overlap_policy="queue") for _ in range(10)]
    now = T0 + dt.timedelta(minutes=4, seconds=1)
    barrier = threading.Barrier(2)
    made: list[list[int]] = [[], []]

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            made[i] += fire(sf, settings, now)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_instant = Counter((ex.schedule_id, ex.planned_for) for sid in ids for ex in runs(sf, sid))
    assert len(per_instant) == 50 and set(per_instant.values()) == {1}
    assert sorted(made[0] + made[1]) == sorted({*made[0], *made[1]})  # no id fired twice
    assert made[0] and made[1] or len(made[0] + made[1]) == 50


def test_the_database_refuses_a_second_first_try_of_an_instant(sf, settings, schedule):
    sid = schedule()
    fire(sf, settings, T0)
    [ex] = runs(sf, sid)
    with sf() as db, pytest.raises(IntegrityError, match="uq_executions_schedule_planned"):
        db.add(
            NotebookExecution(
                username=ex.username,
                input_path="x",
                status="queued",
                schedule_id=sid,
                planned_for=T0,
            )
        )
        db.commit()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("none", []),  # six missed hours: none run
        ("latest", [T0 + dt.timedelta(hours=5)]),
        ("all", [T0 + dt.timedelta(hours=h) for h in range(2, 6)]),  # catchup_max 4
    ],
)
def test_catch_up_after_downtime(sf, settings, schedule, policy, expected):
    """Hourly, and no worker from 12:00 to 17:10: six planned instants, all missed."""
    sid = schedule(cron="0 * * * *", catchup_policy=policy, catchup_max=4, overlap_policy="queue")
    fire(sf, settings, T0 + dt.timedelta(hours=5, minutes=10))
    assert [ex.planned_for for ex in runs(sf, sid)] == expected
    with sf() as db:
        assert db.get(Schedule, sid).next_run_at == T0 + dt.timedelta(hours=6)


def test_an_on_time_run_is_not_caught_up_but_run(sf, settings, schedule):
    sid = schedule(catchup_policy="none")
    fire(sf, settings, T0 + dt.timedelta(seconds=20))
    assert [ex.planned_for for ex in runs(sf, sid)] == [T0]


def test_overlap_skip_records_the_skipped_instant(sf, settings, schedule):
    sid = schedule(overlap_policy="skip")
    fire(sf, settings, T0)
    fire(sf, settings, T0 + dt.timedelta(minutes=1))
    first, second = runs(sf, sid)
    assert first.status == "queued"
    assert second.status == "skipped" and f"run {first.id} of this schedule" in second.error_message
    assert second.completed_at is not None


def test_overlap_queue_queues_behind(sf, settings, schedule):
    sid = schedule(overlap_policy="queue")
    fire(sf, settings, T0)
    fire(sf, settings, T0 + dt.timedelta(minutes=1))
    assert [ex.status for ex in runs(sf, sid)] == ["queued", "queued"]


def test_overlap_cancel_cancels_the_earlier_run(sf, settings, schedule):
    sid = schedule(overlap_policy="cancel")
    fire(sf, settings, T0)
    fire(sf, settings, T0 + dt.timedelta(minutes=1))
    assert [ex.status for ex in runs(sf, sid)] == ["cancelled", "queued"]


def test_a_schedule_ends(sf, settings, schedule):
    end = T0 + dt.timedelta(minutes=1, seconds=30)
    sid = schedule(ends_at=end, catchup_policy="all", overlap_policy="queue")
    fire(sf, settings, T0 + dt.timedelta(minutes=5))
    assert [ex.planned_for for ex in runs(sf, sid)] == [T0, T0 + dt.timedelta(minutes=1)]
    with sf() as db:
        assert db.get(Schedule, sid).next_run_at is None
    assert fire(sf, settings, T0 + dt.timedelta(days=1)) == []


def test_a_paused_schedule_does_not_fire(sf, settings, schedule):
    sid = schedule(paused=True)
    fire(sf, settings, T0 + dt.timedelta(minutes=5))
    assert runs(sf, sid) == []


def test_a_parameter_that_no_longer_passes_records_a_failed_run(sf, settings, schedule):
    sid = schedule(parameters={"n": "not a number"})
    fire(sf, settings, T0)
    [ex] = runs(sf, sid)
    assert ex.status == "failed" and ex.error_message.startswith("not started:")
    assert "parameter 'n'" in ex.error_message


# ------------------------------------------------------------------------ retries
def sql(db: Session, select_: str, execution_id: int) -> Any:
    """One value of an execution's row (``select_`` is the SELECT clause)."""
    return db.execute(
        text(f"{select_} FROM notebook_executions WHERE id = :i"), {"i": execution_id}
    ).scalar()


def hurry(db: Session, execution_id: int) -> None:
    """The retry's backoff is over."""
    db.execute(
        text("UPDATE notebook_executions SET not_before = NULL WHERE id = :i"), {"i": execution_id}
    )
    db.commit()


def run_once(sf, worker: int, status: str) -> int:
    with sf() as db:
        job = q.claim(db, worker, 60)
    assert job is not None
    with sf() as db:
        assert q.finish(db, job.id, worker, status=status, duration=1.0)
    return job.id


def test_a_failed_run_is_retried_as_its_own_row_after_the_backoff(sf, settings, schedule):
    sid = schedule(retry_attempts=2, retry_backoff_seconds=30)
    fire(sf, settings, T0)
    first = run_once(sf, 7, "failed")
    rows = runs(sf, sid)
    assert [(r.id, r.status, r.try_number, r.retry_of) for r in rows] == [
        (first, "failed", 1, None),
        (rows[1].id, "queued", 2, first),
    ]
    with sf() as db:
        waited = sql(db, "SELECT not_before - timezone('utc', now())", rows[1].id)
        assert dt.timedelta(seconds=25) < waited <= dt.timedelta(seconds=30)
        assert q.claim(db, 7, 60) is None  # not before its backoff
        hurry(db, rows[1].id)
    second = run_once(sf, 7, "timed_out")
    third_row = runs(sf, sid)[-1]
    assert (third_row.try_number, third_row.retry_of, third_row.planned_for) == (3, first, T0)
    with sf() as db:
        backoff = sql(db, "SELECT not_before - submitted_at", third_row.id)
        assert backoff == dt.timedelta(seconds=60)  # doubled
        hurry(db, third_row.id)
    run_once(sf, 7, "failed")
    assert len(runs(sf, sid)) == 3 and second  # no fourth try: max_tries is 3


@pytest.mark.parametrize("status", ["cancelled", "succeeded"])
def test_a_cancelled_or_succeeded_run_is_not_retried(sf, settings, schedule, status):
    sid = schedule(retry_attempts=3)
    fire(sf, settings, T0)
    run_once(sf, 8, status)
    assert len(runs(sf, sid)) == 1


def test_a_run_cancelled_while_running_is_not_retried_though_it_ends_failed(sf, settings, schedule):
    sid = schedule(retry_attempts=3)
    fire(sf, settings, T0)
    with sf() as db:
        job = q.claim(db, 9, 60)
        q.request_cancel(db, db.get(NotebookExecution, job.id))
    with sf() as db:
        q.finish(db, job.id, 9, status="failed", duration=1.0)
    assert len(runs(sf, sid)) == 1


def test_retention_deletes_a_first_try_before_its_retries(sf, settings, schedule):
    """Deleting a first try nulls its retries' retry_of: two retries of one planned instant
    must not then collide on the exactly-once index (it is keyed on try_number)."""
    from exec_api.services import retention

    sid = schedule(retry_attempts=2, retry_backoff_seconds=1)
    fire(sf, settings, T0)
    first = run_once(sf, 7, "failed")
    for _ in range(2):
        with sf() as db:
            for r in runs(sf, sid):
                if r.status == "queued":
                    hurry(db, r.id)
        run_once(sf, 7, "failed")
    assert [r.try_number for r in runs(sf, sid)] == [1, 2, 3]
    with sf() as db:  # only the first try is old enough to go
        db.execute(
            text(
                "UPDATE notebook_executions SET completed_at = completed_at - interval '400 days' "
                "WHERE id = :i"
            ),
            {"i": first},
        )
        db.commit()
        retention.apply(db, settings, days=90, per_user=1000, dry_run=False)
    assert [(r.try_number, r.retry_of) for r in runs(sf, sid)] == [(2, None), (3, None)]


def test_forged_usage_figures_are_dropped(sf):
    from exec_api.services.runners import SubprocessRunner

    for usage in (
        {"cpu_seconds": float("inf"), "peak_memory_bytes": 2**64},
        {"cpu_seconds": -1, "peak_memory_bytes": "1"},
    ):
        out = SubprocessRunner.parse({"status": "succeeded", "usage": usage})
        assert (out.cpu_seconds, out.peak_memory_bytes) == (None, None), usage
    out = SubprocessRunner.parse(
        {"status": "succeeded", "usage": {"cpu_seconds": 1.5, "peak_memory_bytes": 2**27}}
    )
    assert (out.cpu_seconds, out.peak_memory_bytes) == (1.5, 2**27)
