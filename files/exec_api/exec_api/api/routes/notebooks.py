"""/db/notebooks: the notebook registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from exec_api.api.deps import CurrentUser, DbSession, IdPath, ReadDbSession, SettingsDep
from exec_api.schemas import (
    NotebookCreate,
    NotebookResponse,
    NotebookUpdate,
    NotebookWithParameters,
    Username,
)
from exec_api.services import notebooks

router = APIRouter(prefix="/db/notebooks", tags=["notebooks"])


@router.get("", response_model=list[NotebookResponse])
async def list_notebooks(
    db: ReadDbSession,
    cfg: SettingsDep,
    user: CurrentUser,
    username: Annotated[Username | None, Query()] = None,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookResponse]:
    """Your notebooks (admins: everyone's, or one user's with ``username``)."""
    return await run_in_threadpool(notebooks.listing, db, cfg, user, username, skip, limit)


@router.post("", response_model=NotebookWithParameters, status_code=status.HTTP_201_CREATED)
async def create_notebook(
    body: NotebookCreate, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> NotebookWithParameters:
    """Register a notebook of your notebook area (``file_path`` is relative to it).

    Its ``parameters`` cell is read (never run) and the parameters found are declared,
    unless ``detect_parameters`` is false; explicit ``parameters`` win.
    """
    return await run_in_threadpool(notebooks.create, db, cfg, user, body)


@router.get("/user/{username}", response_model=list[NotebookResponse])
async def user_notebooks(
    username: Username, db: ReadDbSession, cfg: SettingsDep, user: CurrentUser
) -> list[NotebookResponse]:
    return await run_in_threadpool(notebooks.of_user, db, cfg, user, username)


@router.get("/{notebook_id}", response_model=NotebookWithParameters)
async def read_notebook(
    notebook_id: IdPath, db: ReadDbSession, cfg: SettingsDep, user: CurrentUser
) -> NotebookResponse:
    return await run_in_threadpool(notebooks.read, db, cfg, user, notebook_id)


@router.put("/{notebook_id}", response_model=NotebookResponse)
async def update_notebook(
    notebook_id: IdPath, body: NotebookUpdate, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> NotebookResponse:
    return await run_in_threadpool(notebooks.update, db, cfg, user, notebook_id, body)


@router.delete("/{notebook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_notebook(notebook_id: IdPath, db: DbSession, user: CurrentUser) -> Response:
    """Delete a notebook: its parameters go with it; its executions stay (notebook_id NULL)."""
    await run_in_threadpool(notebooks.delete, db, user, notebook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
