"""/db/executions: submit, follow, cancel and download executions; history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from exec_api.api.deps import CurrentUser, DbSession, IdPath, ReadDbSession, SettingsDep
from exec_api.models import NotebookExecution
from exec_api.schemas import (
    QUEUE_FULL,
    ExecutionHistoryResponse,
    ExecutionSubmitted,
    Status,
    SubmitExecution,
    Username,
)
from exec_api.services import executions, submissions
from exec_api.services.access import get_execution

router = APIRouter(prefix="/db/executions", tags=["executions"])


@router.get("", response_model=list[ExecutionHistoryResponse])
async def list_executions(
    db: ReadDbSession,
    user: CurrentUser,
    response: Response,
    username: Annotated[Username | None, Query()] = None,
    notebook_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    schedule_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookExecution]:
    """Execution history, newest first; ``X-Total-Count`` gives the number of matches."""
    total, rows = await run_in_threadpool(
        executions.history, db, user, username, notebook_id, status_, skip, limit, schedule_id
    )
    response.headers["X-Total-Count"] = str(total)
    return rows


@router.post(
    "",
    response_model=ExecutionSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=QUEUE_FULL,
)
async def submit(
    body: SubmitExecution, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> ExecutionSubmitted:
    """Queue an execution; returns at once with its id."""
    return await run_in_threadpool(submissions.submit, db, cfg, user, body)


@router.get("/notebook/{notebook_id}", response_model=list[ExecutionHistoryResponse])
async def notebook_executions(
    notebook_id: IdPath,
    db: ReadDbSession,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookExecution]:
    return await run_in_threadpool(executions.of_notebook, db, user, notebook_id, skip, limit)


@router.get("/{execution_id}", response_model=ExecutionHistoryResponse)
async def read_execution(
    execution_id: IdPath, db: ReadDbSession, user: CurrentUser
) -> NotebookExecution:
    return await run_in_threadpool(get_execution, db, user, execution_id)


@router.post("/{execution_id}/cancel", response_model=ExecutionHistoryResponse)
async def cancel_execution(
    execution_id: IdPath, db: DbSession, user: CurrentUser
) -> NotebookExecution:
    """Cancel: a queued run is cancelled at once; a running one has its kernel (and all it
    started) killed by its worker.  Finished runs are left as they are (409)."""
    return await run_in_threadpool(executions.cancel, db, user, execution_id)


@router.get(
    "/{execution_id}/output",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-ipynb+json": {}}}},
)
async def download_output(
    execution_id: IdPath, db: ReadDbSession, cfg: SettingsDep, user: CurrentUser
) -> FileResponse:
    """The executed notebook (also for failed runs: it shows the failing cell)."""
    path = await run_in_threadpool(executions.output_file, db, cfg, user, execution_id)
    return FileResponse(
        path, media_type="application/x-ipynb+json", filename=f"execution-{execution_id}.ipynb"
    )
