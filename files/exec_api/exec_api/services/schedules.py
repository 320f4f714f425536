"""Schedules: a user's notebook run with stored parameters at the instants a cron expression
plans in a time zone (exec_api.services.cron).

Firing is exactly-once across workers and hosts: a worker takes due schedules with
``FOR UPDATE SKIP LOCKED`` (one worker handles a schedule at a time), and each first try is
inserted with ``ON CONFLICT DO NOTHING`` against the unique index on (schedule, planned instant):
even a worker that raced past the lock cannot plan the same instant twice.

Policies (fields of the schedule):

* catch-up, for planned instants more than ``schedule_grace_seconds`` in the past when a worker
  sees them (no worker ran): ``none`` runs none of them, ``latest`` the most recent, ``all`` each
  of them, at most ``catchup_max`` (the most recent);
* overlap, for a planned instant while an earlier run of the schedule is queued or running:
  ``skip`` records it as a ``skipped`` execution, ``queue`` queues it behind, ``cancel`` cancels
  the earlier run and queues this one;
* retries: ``retry_attempts`` more tries of a failed or timed-out run (never a cancelled one),
  each its own execution linked to the first (``retry_of``), after ``retry_backoff_seconds``
  doubled at each try (exec_api.services.queue.finish).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.core.security import Principal, acting_user
from exec_api.models import Notebook, NotebookExecution, Schedule
from exec_api.schemas import ScheduleCreate, ScheduleUpdate, SubmitExecution
from exec_api.services import notify
from exec_api.services import queue as q
from exec_api.services.access import can_see, get_notebook, not_found
from exec_api.services.cron import check_zone, planned
from exec_api.services.submissions import Prepared, enqueue, prepare

log = logging.getLogger("exec_api.schedules")
ACTIVE = ("queued", "running")


# ------------------------------------------------------------------------ the API's side
def get_schedule(
    db: Session, principal: Principal, schedule_id: int, lock: bool = False
) -> Schedule:
    stmt = select(Schedule).where(Schedule.id == schedule_id)
    row = db.execute(stmt.with_for_update() if lock else stmt).scalar_one_or_none()
    if row is None or not can_see(principal, row.username):
        raise not_found("schedule")
    return row


def _check(
    db: Session, settings: Settings, principal: Principal, sch: Schedule, refresh: bool = True
) -> Prepared:
    """The schedule's run checked as any submission: the notebook is the caller's (or an
    admin's view), its parameters pass the notebook's declarations. Inside a transaction that
    holds the schedule's lock (firing, changing), ``refresh=False`` (prepare would commit)."""
    return prepare(
        db,
        settings,
        principal,
        SubmitExecution(
            notebook_id=sch.notebook_id,
            parameters=sch.parameters or {},
            timeout_seconds=sch.timeout_seconds,
        ),
        refresh=refresh,
    )


def create(db: Session, settings: Settings, principal: Principal, body: ScheduleCreate) -> Schedule:
    nb = get_notebook(db, principal, body.notebook_id)
    have = db.execute(select(func.count()).where(Schedule.username == nb.username)).scalar() or 0
    if have >= settings.max_schedules_per_user:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{nb.username} has {have} schedules, the most one user may have "
            "(EXEC_API_MAX_SCHEDULES_PER_USER): delete one first",
        )
    data = body.model_dump()
    sch = Schedule(username=nb.username, **data)
    _check(db, settings, principal, sch)
    sch.next_run_at = _next(sch, q.utcnow())
    db.add(sch)
    db.commit()
    db.refresh(sch)
    return sch


def update(
    db: Session, settings: Settings, principal: Principal, schedule_id: int, body: ScheduleUpdate
) -> Schedule:
    sch = get_schedule(db, principal, schedule_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        setattr(sch, name, value)
    _check(db, settings, principal, sch, refresh=False)
    if {"cron", "timezone", "ends_at"} & changes.keys():
        sch.next_run_at = _next(sch, q.utcnow())
    db.commit()
    db.refresh(sch)
    return sch


def listing(
    db: Session, principal: Principal, username: str | None, skip: int, limit: int
) -> list[Schedule]:
    conds = []
    if not principal.is_admin or username:
        conds.append(Schedule.username == acting_user(principal, username))
    rows = db.execute(
        select(Schedule).where(*conds).order_by(Schedule.id).offset(skip).limit(limit)
    )
    return list(rows.scalars())


def of_user(db: Session, principal: Principal, username: str) -> list[Schedule]:
    if not can_see(principal, username):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "you may see only your own schedules")
    return listing(db, principal, username, 0, 10_000)


def delete(db: Session, principal: Principal, schedule_id: int) -> None:
    """Delete a schedule: its executions stay (schedule_id NULL); queued ones still run."""
    db.delete(get_schedule(db, principal, schedule_id, lock=True))
    db.commit()


def set_paused(db: Session, principal: Principal, schedule_id: int, paused: bool) -> Schedule:
    """Pause, or resume: a resumed schedule plans from now on (what was missed while paused is
    not caught up)."""
    sch = get_schedule(db, principal, schedule_id, lock=True)
    if sch.paused != paused:
        sch.paused = paused
        if not paused:
            sch.next_run_at = _next(sch, q.utcnow())
    db.commit()
    db.refresh(sch)
    return sch


def run_now(
    db: Session, settings: Settings, principal: Principal, schedule_id: int
) -> NotebookExecution:
    """One run of the schedule now, outside its plan (no planned instant; retries as planned)."""
    sch = get_schedule(db, principal, schedule_id)
    run = _check(db, settings, principal, sch)
    ex = enqueue(
        db,
        settings,
        run,
        report_mode=sch.report_mode,
        schedule_id=sch.id,
        max_tries=sch.retry_attempts + 1,
        retry_backoff_seconds=sch.retry_backoff_seconds,
    )
    return ex


# ------------------------------------------------------------------------ the worker's side
def _next(sch: Schedule, after: dt.datetime) -> dt.datetime | None:
    """The first planned instant after ``after``, or None past ``ends_at``."""
    nxt = next(planned(sch.cron, check_zone(sch.timezone), after))
    return None if sch.ends_at is not None and nxt > sch.ends_at else nxt


_DUE = (
    select(Schedule)
    .where(Schedule.paused.is_(False), Schedule.next_run_at.is_not(None))
    .order_by(Schedule.next_run_at)
)


def fire_due(
    db: Session, settings: Settings, now: dt.datetime | None = None, limit: int = 100
) -> list[int]:
    """Plan the runs of every schedule that is due (``next_run_at`` passed); the new executions'
    ids. Each schedule is handled in its own transaction, under its row lock."""
    now = now or q.utcnow()
    made: list[int] = []
    for _ in range(limit):
        sch = db.execute(
            _DUE.where(Schedule.next_run_at <= now).limit(1).with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if sch is None:
            db.rollback()
            break
        try:
            made += _fire(db, settings, sch, now)
            db.commit()
        except Exception:
            db.rollback()
            log.exception("schedule %s could not be fired; it is paused", sch.id)
            _pause_broken(db, sch.id)
    return made


def _pause_broken(db: Session, schedule_id: int) -> None:
    db.execute(text("UPDATE schedules SET paused = true WHERE id = :i"), {"i": schedule_id})
    db.commit()


def _fire(db: Session, settings: Settings, sch: Schedule, now: dt.datetime) -> list[int]:
    assert sch.next_run_at is not None
    zone = check_zone(sch.timezone)
    keep = sch.catchup_max + 1
    due: deque[dt.datetime] = deque(maxlen=keep)  # a long outage: only the newest count
    for t in planned(sch.cron, zone, sch.next_run_at - dt.timedelta(microseconds=1)):
        if t > now or (sch.ends_at is not None and t > sch.ends_at):
            break
        due.append(t)
    grace = dt.timedelta(seconds=settings.schedule_grace_seconds)
    on_time = [t for t in due if now - t <= grace]
    if sch.catchup_policy == "all":
        fire = list(due)[-sch.catchup_max :]
    elif sch.catchup_policy == "latest":
        fire = list(due)[-1:]
    else:
        fire = on_time
    missed = len(due) - len(fire)
    if missed:
        log.info("schedule %s: %d planned time(s) missed, not run (catchup_policy %s)",
                 sch.id, missed, sch.catchup_policy)  # fmt: skip
    made = [i for t in fire if (i := _plan(db, settings, sch, t)) is not None]
    if due:
        sch.last_planned_at = due[-1]
    sch.next_run_at = _next(sch, max(now, due[-1]) if due else now)
    if made:
        db.execute(text("SELECT pg_notify(:c, '')"), {"c": q.QUEUE_CHANNEL})
    return made


def _plan(db: Session, settings: Settings, sch: Schedule, planned_for: dt.datetime) -> int | None:
    """The execution for one planned instant (queued, or skipped/failed with the reason); None
    when that instant already has one."""
    owner = Principal(username=sch.username, via="schedule")
    row: dict[str, Any] = {
        "username": sch.username,
        "notebook_id": sch.notebook_id,
        "input_path": "",
        "parameters_used": sch.parameters or {},
        "status": "queued",
        "timeout_seconds": sch.timeout_seconds or settings.default_timeout_seconds,
        "runner": settings.runner,
        "report_mode": sch.report_mode,
        "schedule_id": sch.id,
        "planned_for": planned_for,
        "max_tries": sch.retry_attempts + 1,
        "retry_backoff_seconds": sch.retry_backoff_seconds,
    }
    try:
        run = _check(db, settings, owner, sch, refresh=False)
        row.update(input_path=run.rel, parameters_used=run.values, timeout_seconds=run.timeout)
    except HTTPException as e:  # the notebook moved, a parameter no longer passes: a failed run
        nb = db.get(Notebook, sch.notebook_id)
        row.update(
            status="failed",
            input_path=nb.file_path if nb else "",
            error_message=f"not started: {e.detail}",
        )
    active = _active(db, sch.id)
    if row["status"] == "queued" and active:
        if sch.overlap_policy == "skip":
            row.update(
                status="skipped",
                error_message=f"skipped: run {active[0]} of this schedule is still going",
            )
        elif sch.overlap_policy == "cancel":
            for eid in active:
                ex = db.get(NotebookExecution, eid)
                if ex is not None:
                    q.request_cancel(db, ex, commit=False)
    if (
        row["status"] == "queued"
        and q.queued_count(db, sch.username) >= settings.max_queued_per_user
    ):
        row.update(
            status="skipped",
            error_message="skipped: the owner's queue is full (EXEC_API_MAX_QUEUED_PER_USER)",
        )
    now = q.utcnow()
    row.update(submitted_at=now, started_at=now)
    if row["status"] != "queued":
        row["completed_at"] = now
    stmt = (
        insert(NotebookExecution)
        .values(**row)
        .on_conflict_do_nothing(
            index_elements=["schedule_id", "planned_for"],
            index_where=text("try_number = 1 AND planned_for IS NOT NULL"),
        )
        .returning(NotebookExecution.id)
    )
    made = db.execute(stmt).scalar_one_or_none()
    if made is not None and row["status"] == "failed":  # a run that could not start is a failure
        notify.fan_out(db, made, "failed", retried=False)
    return made


def _active(db: Session, schedule_id: int) -> list[int]:
    rows = db.execute(
        select(NotebookExecution.id)
        .where(NotebookExecution.schedule_id == schedule_id, NotebookExecution.status.in_(ACTIVE))
        .order_by(NotebookExecution.id)
    )
    return list(rows.scalars())
