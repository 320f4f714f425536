"""The prototype's execution endpoints: thin aliases of the one execution path.

They queue the run and return at once (202) with the execution id; ``wait=true`` waits for
the outcome (up to EXEC_API_WAIT_MAX_SECONDS) without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from exec_api.api.deps import CurrentUser, DbSession, ReadDbSession, SettingsDep
from exec_api.core.config import Settings
from exec_api.core.security import Principal
from exec_api.schemas import (
    QUEUE_FULL,
    ExecuteNotebookRequest,
    ExecuteRequest,
    ExecutionSubmitted,
    LegacySubmission,
    NotebookListEntry,
    RunNotebookRequest,
    Username,
)
from exec_api.services import executions, notebooks, submissions
from exec_api.services import queue as q

router = APIRouter(tags=["execution (legacy endpoints)"])


async def _run(
    body: LegacySubmission, db: Session, cfg: Settings, user: Principal, response: Response
) -> ExecutionSubmitted:
    res = await run_in_threadpool(submissions.submit, db, cfg, user, body.submission())
    if not body.wait:
        response.status_code = status.HTTP_202_ACCEPTED
        return res
    deadline = time.monotonic() + cfg.wait_max_seconds
    delay = 0.02
    while time.monotonic() < deadline:
        ex = await run_in_threadpool(executions.current, db, res.execution_id)
        if ex is not None and ex.status in q.TERMINAL:
            response.status_code = status.HTTP_200_OK
            return submissions.submitted(ex)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    response.status_code = status.HTTP_202_ACCEPTED
    ex = await run_in_threadpool(executions.current, db, res.execution_id)
    return submissions.submitted(ex) if ex is not None else res


_RESP: dict[int | str, dict[str, Any]] = {
    202: {"model": ExecutionSubmitted, "description": "queued"},
    200: {"model": ExecutionSubmitted, "description": "finished (wait=true)"},
    **QUEUE_FULL,
}


@router.post("/execute", response_model=ExecutionSubmitted, responses=_RESP)
async def execute(
    body: ExecuteRequest, db: DbSession, cfg: SettingsDep, user: CurrentUser, response: Response
) -> ExecutionSubmitted:
    """Prototype shape ``{user, path, params}``; ``path`` is relative to the user's area."""
    return await _run(body, db, cfg, user, response)


@router.post("/run-notebook", response_model=ExecutionSubmitted, responses=_RESP)
async def run_notebook(
    body: RunNotebookRequest,
    db: DbSession,
    cfg: SettingsDep,
    user: CurrentUser,
    response: Response,
) -> ExecutionSubmitted:
    """``input_path`` relative to the user's area; ``output_path`` is ignored: outputs go to
    the per-user output area, named by execution id (see ``output_path`` in the answer)."""
    return await _run(body, db, cfg, user, response)


@router.post("/execute-notebook", response_model=ExecutionSubmitted, responses=_RESP)
async def execute_notebook(
    body: ExecuteNotebookRequest,
    db: DbSession,
    cfg: SettingsDep,
    user: CurrentUser,
    response: Response,
) -> ExecutionSubmitted:
    """Run a registered notebook (``notebook_id``) or one of your notebooks by path."""
    return await _run(body, db, cfg, user, response)


@router.get("/list-notebooks/{username}", response_model=list[NotebookListEntry])
async def list_notebooks(
    username: Username, db: ReadDbSession, cfg: SettingsDep, user: CurrentUser
) -> list[NotebookListEntry]:
    """The ``.ipynb`` files of a user's notebook area (symlinks are not followed)."""
    return await run_in_threadpool(notebooks.area_files, db, cfg, user, username)
