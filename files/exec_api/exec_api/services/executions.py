"""Executions once submitted: the history, one execution, cancelling, the output notebook."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.core.security import Principal, acting_user
from exec_api.models import NotebookExecution
from exec_api.services import queue as q
from exec_api.services.access import get_execution, get_notebook
from exec_api.services.paths import output_path_for


def history(
    db: Session,
    principal: Principal,
    username: str | None,
    notebook_id: int | None,
    status_: str | None,
    skip: int,
    limit: int,
    schedule_id: int | None = None,
) -> tuple[int, list[NotebookExecution]]:
    """The number of matching executions, and a page of them, newest first."""
    conds = []
    if schedule_id is not None:
        conds.append(NotebookExecution.schedule_id == schedule_id)
    if not principal.is_admin or username:
        conds.append(NotebookExecution.username == acting_user(principal, username))
    if notebook_id is not None:
        conds.append(NotebookExecution.notebook_id == notebook_id)
    if status_ is not None:
        conds.append(NotebookExecution.status == status_)
    total = db.execute(select(func.count()).select_from(NotebookExecution).where(*conds)).scalar()
    rows = db.execute(
        select(NotebookExecution)
        .where(*conds)
        .order_by(NotebookExecution.id.desc())
        .offset(skip)
        .limit(limit)
    ).scalars()
    return total or 0, list(rows)


def of_notebook(
    db: Session, principal: Principal, notebook_id: int, skip: int, limit: int
) -> list[NotebookExecution]:
    get_notebook(db, principal, notebook_id)
    return list(
        db.execute(
            select(NotebookExecution)
            .where(NotebookExecution.notebook_id == notebook_id)
            .order_by(NotebookExecution.id.desc())
            .offset(skip)
            .limit(limit)
        ).scalars()
    )


def cancel(db: Session, principal: Principal, execution_id: int) -> NotebookExecution:
    """A queued run is cancelled at once; a running one has its kernel (and all it started)
    killed by its worker.  Finished runs are left as they are (409)."""
    ex = get_execution(db, principal, execution_id)
    if ex.status in q.TERMINAL:
        raise HTTPException(status.HTTP_409_CONFLICT, f"execution already {ex.status}")
    return q.request_cancel(db, ex)


def output_file(db: Session, settings: Settings, principal: Principal, execution_id: int) -> Path:
    """The execution's output notebook, where the service wrote it (404 if none)."""
    ex = get_execution(db, principal, execution_id)
    expected = output_path_for(settings, ex.username, ex.id)
    if not ex.output_path or Path(ex.output_path) != expected or not expected.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no output for this execution (yet)")
    return expected


def current(db: Session, execution_id: int) -> NotebookExecution | None:
    """The execution as the database has it now, for a request that waits for it: the session
    is closed after the read, so the request holds no connection between its reads."""
    try:
        return db.get(NotebookExecution, execution_id, populate_existing=True)
    finally:
        db.close()
