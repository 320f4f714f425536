"""The execution queue, kept in PostgreSQL (table ``notebook_executions``).

* submit: INSERT a ``queued`` row and ``NOTIFY exec_api_queue`` in the same transaction.
* submit refuses (:class:`QueueFull`) a user who already has ``max_queued`` runs waiting;
  a per-user transaction lock makes the count and the insert one step for every API process.
* claim:  ``UPDATE ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1)``, fairly:
  the oldest queued run of the user with the fewest running runs, among users below
  ``max_running`` (so 50 runs of alice do not hold every worker while bob waits).  Claims take
  one transaction-level advisory lock, so the running counts they read are never stale and the
  per-user cap holds across workers and processes (a claim takes about a millisecond).
* cancel: a queued row becomes ``cancelled`` at once; a running one gets
  ``cancel_requested`` and ``NOTIFY exec_api_cancel`` (the worker kills the kernel).
* orphans: each worker holds a session advisory lock on its ``worker_id`` while it lives.
  A ``running`` row whose worker's lock can be taken has lost its worker (crash, kill -9):
  it is marked failed or requeued (``EXEC_API_ORPHAN_POLICY``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from exec_api.models import NotebookExecution
from exec_api.services import notify

QUEUE_CHANNEL = "exec_api_queue"
CANCEL_CHANNEL = "exec_api_cancel"
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "skipped")
# Advisory-lock key space: (class id, worker id) two-int form avoids clashing with others.
LOCK_CLASS = 0x45584543  # "EXEC"
CLAIM_LOCK_CLASS = 0x45584344  # "EXCD": (class, 0) serialises claims
SUBMIT_LOCK_CLASS = 0x45585355  # "EXSU": (class, hashtext(username)) serialises a user's submits


class QueueFull(Exception):
    """The user already has ``limit`` queued executions."""

    def __init__(self, username: str, waiting: int, limit: int) -> None:
        self.username, self.waiting, self.limit = username, waiting, limit
        super().__init__(
            f"too many queued executions: {username} has {waiting} waiting, the limit is "
            f"{limit} per user (EXEC_API_MAX_QUEUED_PER_USER); retry when some have started"
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def submit(
    db: Session,
    *,
    username: str,
    input_path: str,
    notebook_id: int | None,
    parameters: dict[str, Any],
    timeout_seconds: int,
    runner: str,
    max_queued: int | None = None,
    report_mode: bool = False,
    schedule_id: int | None = None,
    max_tries: int = 1,
    retry_backoff_seconds: int = 60,
) -> NotebookExecution:
    """Queue a run; with ``max_queued``, refuse (:class:`QueueFull`) a user already at it."""
    if max_queued is not None:
        db.execute(
            text("SELECT pg_advisory_xact_lock(:c, hashtext(:u))"),
            {"c": SUBMIT_LOCK_CLASS, "u": username},
        )
        waiting = queued_count(db, username)
        if waiting >= max_queued:
            db.rollback()
            raise QueueFull(username, waiting, max_queued)
    now = utcnow()
    ex = NotebookExecution(
        notebook_id=notebook_id,
        username=username,
        input_path=input_path,
        parameters_used=parameters,
        status="queued",
        submitted_at=now,
        started_at=now,
        timeout_seconds=timeout_seconds,
        runner=runner,
        report_mode=report_mode,
        attempts=0,
        cancel_requested=False,
        schedule_id=schedule_id,
        max_tries=max_tries,
        retry_backoff_seconds=retry_backoff_seconds,
    )
    db.add(ex)
    db.flush()
    db.execute(text("SELECT pg_notify(:c, :p)"), {"c": QUEUE_CHANNEL, "p": str(ex.id)})
    db.commit()
    return ex


def queued_count(db: Session, username: str) -> int:
    n = db.execute(
        select(func.count())
        .select_from(NotebookExecution)
        .where(NotebookExecution.username == username, NotebookExecution.status == "queued")
    ).scalar()
    return int(n or 0)


def request_cancel(db: Session, ex: NotebookExecution, commit: bool = True) -> NotebookExecution:
    """Cancel: immediate for a queued run, via the worker for a running one."""
    row = db.execute(
        select(NotebookExecution).where(NotebookExecution.id == ex.id).with_for_update()
    ).scalar_one()
    if row.status == "queued":
        now = utcnow()
        row.status = "cancelled"
        row.cancel_requested = True
        row.completed_at = now
        row.error_message = "cancelled before it started"
    elif row.status == "running":
        row.cancel_requested = True
        db.execute(text("SELECT pg_notify(:c, :p)"), {"c": CANCEL_CHANNEL, "p": str(row.id)})
    if commit:
        db.commit()
        db.refresh(row)
    return row


@dataclass
class Claimed:
    id: int
    username: str
    input_path: str
    notebook_id: int | None
    parameters: dict[str, Any]
    timeout_seconds: int
    attempts: int
    report_mode: bool = False


_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(:c, 0)")

# The head (oldest queued run) of each user below the running cap, the user with the fewest
# running runs first, then the oldest; SKIP LOCKED passes over a row being cancelled.
_CLAIM = text(
    """
    WITH running AS (
        SELECT username, count(*) AS n FROM notebook_executions
         WHERE status = 'running' GROUP BY username
    ), heads AS (
        SELECT q.username, min(q.id) AS id FROM notebook_executions AS q
         WHERE q.status = 'queued' AND NOT q.cancel_requested
           AND (q.not_before IS NULL OR q.not_before <= timezone('utc', now()))
         GROUP BY q.username
    ), ranked AS (
        SELECT h.id, coalesce(r.n, 0) AS n FROM heads AS h
          LEFT JOIN running AS r ON r.username = h.username
         WHERE coalesce(r.n, 0) < :max_running
    )
    UPDATE notebook_executions AS e
       SET status = 'running', started_at = timezone('utc', now()), worker_id = :w,
           attempts = e.attempts + 1
     WHERE e.id = (SELECT c.id FROM notebook_executions AS c JOIN ranked AS k ON k.id = c.id
                    WHERE c.status = 'queued' AND NOT c.cancel_requested
                      AND (c.not_before IS NULL OR c.not_before <= timezone('utc', now()))
                    ORDER BY k.n, k.id
                    FOR UPDATE OF c SKIP LOCKED
                    LIMIT 1)
    RETURNING e.id, e.username, e.input_path, e.notebook_id, e.parameters_used,
              e.timeout_seconds, e.attempts, e.report_mode
    """
)


def claim(
    db: Session, worker_id: int, default_timeout: int, max_running: int = 2**31 - 1
) -> Claimed | None:
    """Take the next run fairly (see the module's docstring), or None."""
    db.execute(_CLAIM_LOCK, {"c": CLAIM_LOCK_CLASS})
    row = db.execute(_CLAIM, {"w": worker_id, "max_running": max_running}).first()
    db.commit()
    if row is None:
        return None
    return Claimed(
        id=row[0],
        username=row[1],
        input_path=row[2],
        notebook_id=row[3],
        parameters=dict(row[4] or {}),
        timeout_seconds=int(row[5] or default_timeout),
        attempts=int(row[6]),
        report_mode=bool(row[7]),
    )


def finish(
    db: Session,
    execution_id: int,
    worker_id: int,
    *,
    status: str,
    duration: float | None,
    output_path: str | None = None,
    error_message: str | None = None,
    error_detail: Any = None,
    cpu_seconds: float | None = None,
    peak_memory_bytes: int | None = None,
    output_bytes: int | None = None,
) -> bool:
    """Record the outcome, only if this worker still owns the running row."""
    res = db.execute(
        text(
            """
            UPDATE notebook_executions
               SET status = :s, completed_at = timezone('utc', now()),
                   duration_seconds = :d,
                   execution_time_seconds = CASE WHEN CAST(:d AS float) IS NULL THEN NULL
                                                 ELSE CAST(round(CAST(:d AS numeric)) AS int) END,
                   output_path = COALESCE(:o, output_path),
                   error_message = :em, error_detail = CAST(:ed AS json),
                   cpu_seconds = :cpu, peak_memory_bytes = :mem, output_bytes = :ob
             WHERE id = :id AND status = 'running' AND worker_id = :w
            """
        ),
        {
            "s": status,
            "d": duration,
            "o": output_path,
            "em": error_message,
            "ed": None if error_detail is None else _json(error_detail),
            "id": execution_id,
            "w": worker_id,
            "cpu": cpu_seconds,
            "mem": peak_memory_bytes,
            "ob": output_bytes,
        },
    )
    if res.rowcount:  # type: ignore[attr-defined]
        retried = status in RETRIED and bool(db.execute(_RETRY, {"id": execution_id}).rowcount)  # type: ignore[attr-defined]
        notify.fan_out(db, execution_id, status, retried)
    # A slot is free, and this user may be below the running cap again: wake every worker.
    db.execute(text("SELECT pg_notify(:c, '')"), {"c": QUEUE_CHANNEL})
    db.commit()
    return bool(res.rowcount)  # type: ignore[attr-defined]


# What a retry policy retries: runs that failed or ran out of time (what notifications call a
# failure), never cancelled ones.
RETRIED = notify.FAILED
# The next try of a run that has tries left: its own row, linked to the first try, queued
# for after the backoff (doubled at each try).
_RETRY = text(
    """
    INSERT INTO notebook_executions
        (notebook_id, username, input_path, parameters_used, status, submitted_at, started_at,
         timeout_seconds, runner, report_mode, attempts, cancel_requested, schedule_id,
         planned_for, retry_of, try_number, max_tries, retry_backoff_seconds, not_before)
    SELECT notebook_id, username, input_path, parameters_used, 'queued',
           timezone('utc', now()), timezone('utc', now()), timeout_seconds, runner,
           report_mode, 0, false, schedule_id, planned_for, coalesce(retry_of, id),
           try_number + 1, max_tries, retry_backoff_seconds,
           timezone('utc', now())
             + make_interval(secs => retry_backoff_seconds * power(2, try_number - 1))
      FROM notebook_executions
     WHERE id = :id AND try_number < max_tries AND NOT cancel_requested
    """
)


def _json(v: Any) -> str:
    import json

    return json.dumps(v, default=str)


def cancel_requested(db: Session, execution_id: int) -> bool:
    v = db.execute(
        select(NotebookExecution.cancel_requested).where(NotebookExecution.id == execution_id)
    ).scalar()
    db.commit()
    return bool(v)


def running_with_cancel(db: Session, worker_id: int) -> list[int]:
    ids = (
        db.execute(
            select(NotebookExecution.id).where(
                NotebookExecution.status == "running",
                NotebookExecution.worker_id == worker_id,
                NotebookExecution.cancel_requested.is_(True),
            )
        )
        .scalars()
        .all()
    )
    db.commit()
    return list(ids)


def recover_orphans(
    db: Session, policy: str, max_attempts: int, exclude_worker: int | None = None
) -> list[int]:
    """Fail or requeue ``running`` rows whose worker is gone (its advisory lock is free)."""
    workers = (
        db.execute(
            text("SELECT DISTINCT worker_id FROM notebook_executions WHERE status = 'running'")
        )
        .scalars()
        .all()
    )
    db.commit()
    recovered: list[int] = []
    for w in workers:
        if w is None or w == exclude_worker:
            continue
        got = db.execute(
            text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": _lock_key(w)}
        ).scalar()
        if not got:
            db.commit()
            continue
        try:
            rows = (
                db.execute(
                    select(NotebookExecution)
                    .where(NotebookExecution.status == "running", NotebookExecution.worker_id == w)
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            for ex in rows:
                recovered.append(ex.id)
                if ex.cancel_requested:
                    ex.status = "cancelled"
                    ex.completed_at = utcnow()
                    ex.error_message = "cancelled (its worker stopped)"
                elif policy == "requeue" and ex.attempts < max_attempts:
                    ex.status = "queued"
                    ex.worker_id = None
                    ex.error_message = f"requeued after its worker stopped (attempt {ex.attempts})"
                else:
                    ex.status = "failed"
                    ex.completed_at = utcnow()
                    ex.error_message = (
                        "worker stopped while the notebook was running (orphaned execution)"
                    )
            if any(r.status == "queued" for r in rows):
                db.execute(text("SELECT pg_notify(:c, '')"), {"c": QUEUE_CHANNEL})
            db.commit()
        finally:
            db.execute(
                text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": _lock_key(w)}
            )
            db.commit()
    return recovered


def _lock_key(worker_id: int) -> int:
    # The two-int advisory lock form takes int4 keys.
    return int(worker_id % 2_000_000_000)


def queue_stats(db: Session) -> dict[str, int]:
    rows = db.execute(
        select(NotebookExecution.status, func.count())
        .where(NotebookExecution.status.in_(("queued", "running")))
        .group_by(NotebookExecution.status)
    ).all()
    db.commit()
    out = {"queued": 0, "running": 0}
    for s, n in rows:
        out[str(s)] = int(n)
    return out
