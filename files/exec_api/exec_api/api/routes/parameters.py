"""/db/parameters: typed parameter declarations of a notebook."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool

from exec_api.api.deps import CurrentUser, DbSession, IdPath, ReadDbSession
from exec_api.models import NotebookParameter
from exec_api.schemas import (
    ParameterBulkItem,
    ParameterCreate,
    ParameterResponse,
    ParameterUpdate,
)
from exec_api.services import parameters
from exec_api.services.access import get_parameter

router = APIRouter(prefix="/db/parameters", tags=["parameters"])


@router.post("", response_model=ParameterResponse, status_code=status.HTTP_201_CREATED)
async def create_parameter(
    body: ParameterCreate, db: DbSession, user: CurrentUser
) -> NotebookParameter:
    return await run_in_threadpool(parameters.create, db, user, body)


@router.post(
    "/bulk/{notebook_id}",
    response_model=list[ParameterResponse],
    status_code=status.HTTP_201_CREATED,
)
async def create_parameters_bulk(
    notebook_id: IdPath, body: list[ParameterBulkItem], db: DbSession, user: CurrentUser
) -> list[NotebookParameter]:
    """Declare several parameters at once (all or none)."""
    return await run_in_threadpool(parameters.create_bulk, db, user, notebook_id, body)


@router.get("/notebook/{notebook_id}", response_model=list[ParameterResponse])
async def notebook_parameters(
    notebook_id: IdPath, db: ReadDbSession, user: CurrentUser
) -> list[NotebookParameter]:
    return await run_in_threadpool(parameters.of_notebook, db, user, notebook_id)


@router.get("/{param_id}", response_model=ParameterResponse)
async def read_parameter(
    param_id: IdPath, db: ReadDbSession, user: CurrentUser
) -> NotebookParameter:
    return await run_in_threadpool(get_parameter, db, user, param_id)


@router.put("/{param_id}", response_model=ParameterResponse)
async def update_parameter(
    param_id: IdPath, body: ParameterUpdate, db: DbSession, user: CurrentUser
) -> NotebookParameter:
    return await run_in_threadpool(parameters.update, db, user, param_id, body)


@router.delete("/{param_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_parameter(param_id: IdPath, db: DbSession, user: CurrentUser) -> Response:
    await run_in_threadpool(parameters.delete, db, user, param_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
