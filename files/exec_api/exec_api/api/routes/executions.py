"""/db/executions: submit, follow, cancel and download executions; history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select

from exec_api.api.deps import (
    DB,
    Cfg,
    IdPath,
    User,
    get_execution,
    get_notebook,
    submit_execution,
    with_db,
    with_db_read,
)
from exec_api.core.security import acting_user
from exec_api.models import NotebookExecution
from exec_api.schemas import (
    ExecutionHistoryResponse,
    ExecutionSubmitted,
    Status,
    SubmitExecution,
    Username,
)
from exec_api.services import queue as q
from exec_api.services.paths import output_path_for

router = APIRouter(prefix="/db/executions", tags=["executions"])


def submitted(ex: NotebookExecution) -> ExecutionSubmitted:
    return ExecutionSubmitted(
        execution_id=ex.id,
        status=ex.status,
        output_path=ex.output_path,
        execution=ExecutionHistoryResponse.model_validate(ex),
    )


@router.get("", response_model=list[ExecutionHistoryResponse])
@with_db_read
def list_executions(
    db: DB,
    user: User,
    response: Response,
    username: Annotated[Username | None, Query()] = None,
    notebook_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookExecution]:
    """Execution history, newest first; ``X-Total-Count`` gives the number of matches."""
    conds = []
    if not user.is_admin or username:
        conds.append(NotebookExecution.username == acting_user(user, username))
    if notebook_id is not None:
        conds.append(NotebookExecution.notebook_id == notebook_id)
    if status_ is not None:
        conds.append(NotebookExecution.status == status_)
    total = db.execute(select(func.count()).select_from(NotebookExecution).where(*conds)).scalar()
    response.headers["X-Total-Count"] = str(total or 0)
    return list(
        db.execute(
            select(NotebookExecution)
            .where(*conds)
            .order_by(NotebookExecution.id.desc())
            .offset(skip)
            .limit(limit)
        ).scalars()
    )


QUEUE_FULL: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "the owner has EXEC_API_MAX_QUEUED_PER_USER runs queued; "
        "the Retry-After header says when to try again"
    }
}


@router.post(
    "",
    response_model=ExecutionSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=QUEUE_FULL,
)
@with_db
def submit(body: SubmitExecution, db: DB, cfg: Cfg, user: User) -> ExecutionSubmitted:
    """Queue an execution; returns at once with its id."""
    return submitted(submit_execution(db, cfg, user, body))


@router.get("/notebook/{notebook_id}", response_model=list[ExecutionHistoryResponse])
@with_db_read
def notebook_executions(
    notebook_id: IdPath,
    db: DB,
    user: User,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookExecution]:
    get_notebook(db, user, notebook_id)
    return list(
        db.execute(
            select(NotebookExecution)
            .where(NotebookExecution.notebook_id == notebook_id)
            .order_by(NotebookExecution.id.desc())
            .offset(skip)
            .limit(limit)
        ).scalars()
    )


@router.get("/{execution_id}", response_model=ExecutionHistoryResponse)
@with_db_read
def read_execution(execution_id: IdPath, db: DB, user: User) -> NotebookExecution:
    return get_execution(db, user, execution_id)


@router.post("/{execution_id}/cancel", response_model=ExecutionHistoryResponse)
@with_db
def cancel_execution(execution_id: IdPath, db: DB, user: User) -> NotebookExecution:
    """Cancel: a queued run is cancelled at once; a running one has its kernel (and all it
    started) killed by its worker.  Finished runs are left as they are (409)."""
    ex = get_execution(db, user, execution_id)
    if ex.status in q.TERMINAL:
        raise HTTPException(status.HTTP_409_CONFLICT, f"execution already {ex.status}")
    return q.request_cancel(db, ex)


@router.get(
    "/{execution_id}/output",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-ipynb+json": {}}}},
)
@with_db_read
def download_output(execution_id: IdPath, db: DB, cfg: Cfg, user: User) -> FileResponse:
    """The executed notebook (also for failed runs: it shows the failing cell)."""
    ex = get_execution(db, user, execution_id)
    expected = output_path_for(cfg, ex.username, ex.id)
    if not ex.output_path or Path(ex.output_path) != expected or not expected.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no output for this execution (yet)")
    return FileResponse(
        expected, media_type="application/x-ipynb+json", filename=f"execution-{ex.id}.ipynb"
    )
