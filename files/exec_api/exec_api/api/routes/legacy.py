"""The prototype's execution endpoints: thin aliases of the one execution path.

They queue the run and return at once (202) with the execution id; ``wait=true`` waits for
the outcome (up to EXEC_API_WAIT_MAX_SECONDS) without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from exec_api.api.deps import DB, Cfg, User, refuse_path, submit_execution, with_db_read
from exec_api.api.routes.executions import QUEUE_FULL, submitted
from exec_api.core.config import Settings
from exec_api.core.db import get_sessionmaker
from exec_api.core.security import Principal, acting_user
from exec_api.models import Notebook, NotebookExecution
from exec_api.schemas import (
    ExecuteNotebookRequest,
    ExecuteRequest,
    ExecutionSubmitted,
    LegacySubmission,
    NotebookListEntry,
    RunNotebookRequest,
    SubmitExecution,
    Username,
)
from exec_api.services import queue as q
from exec_api.services.paths import PathRefused, area_to_list

router = APIRouter(tags=["execution (legacy endpoints)"])


def _submit(cfg: Settings, user: Principal, sub: SubmitExecution) -> ExecutionSubmitted:
    with get_sessionmaker()() as db:
        return submitted(submit_execution(db, cfg, user, sub))


async def _run(
    body: LegacySubmission, cfg: Settings, user: Principal, response: Response
) -> ExecutionSubmitted:
    res = await run_in_threadpool(_submit, cfg, user, body.submission())
    return await _maybe_wait(res, body.wait, cfg, response)


async def _maybe_wait(
    res: ExecutionSubmitted, wait: bool, cfg: Settings, response: Response
) -> ExecutionSubmitted:
    if not wait:
        response.status_code = status.HTTP_202_ACCEPTED
        return res
    deadline = time.monotonic() + cfg.wait_max_seconds

    def _load() -> NotebookExecution | None:
        with get_sessionmaker()() as db:
            return db.get(NotebookExecution, res.execution_id)

    delay = 0.02
    while time.monotonic() < deadline:
        ex = await run_in_threadpool(_load)
        if ex is not None and ex.status in q.TERMINAL:
            response.status_code = status.HTTP_200_OK
            return submitted(ex)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    response.status_code = status.HTTP_202_ACCEPTED
    ex = await run_in_threadpool(_load)
    return submitted(ex) if ex is not None else res


_RESP: dict[int | str, dict[str, Any]] = {
    202: {"model": ExecutionSubmitted, "description": "queued"},
    200: {"model": ExecutionSubmitted, "description": "finished (wait=true)"},
    **QUEUE_FULL,
}


@router.post("/execute", response_model=ExecutionSubmitted, responses=_RESP)
async def execute(
    body: ExecuteRequest, cfg: Cfg, user: User, response: Response
) -> ExecutionSubmitted:
    """Prototype shape ``{user, path, params}``; ``path`` is relative to the user's area."""
    return await _run(body, cfg, user, response)


@router.post("/run-notebook", response_model=ExecutionSubmitted, responses=_RESP)
async def run_notebook(
    body: RunNotebookRequest, cfg: Cfg, user: User, response: Response
) -> ExecutionSubmitted:
    """``input_path`` relative to the user's area; ``output_path`` is ignored: outputs go to
    the per-user output area, named by execution id (see ``output_path`` in the answer)."""
    return await _run(body, cfg, user, response)


@router.post("/execute-notebook", response_model=ExecutionSubmitted, responses=_RESP)
async def execute_notebook(
    body: ExecuteNotebookRequest, cfg: Cfg, user: User, response: Response
) -> ExecutionSubmitted:
    """Run a registered notebook (``notebook_id``) or one of your notebooks by path."""
    return await _run(body, cfg, user, response)


@router.get("/list-notebooks/{username}", response_model=list[NotebookListEntry])
@with_db_read
def list_notebooks(username: Username, db: DB, cfg: Cfg, user: User) -> list[NotebookListEntry]:
    """The ``.ipynb`` files of a user's notebook area (symlinks are not followed)."""
    owner = acting_user(user, username)
    try:
        root = area_to_list(cfg, owner)
    except PathRefused as e:
        raise refuse_path(e) from e
    registered = {
        nb.file_path: nb.id
        for nb in db.execute(select(Notebook).where(Notebook.username == owner)).scalars()
    }
    out: list[NotebookListEntry] = []
    if root is None:
        return out
    # fwalk moves through directory handles and never follows a symlink, even one swapped in
    # while it walks (os.walk re-opens each directory by name).
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.endswith(".ipynb") or f.startswith("."):
                continue
            try:
                if not stat.S_ISREG(os.stat(f, dir_fd=dirfd, follow_symlinks=False).st_mode):
                    continue
            except OSError:
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            out.append(
                NotebookListEntry(
                    path=rel, registered=full in registered, notebook_id=registered.get(full)
                )
            )
            if len(out) >= 5000:
                return out
    return out
