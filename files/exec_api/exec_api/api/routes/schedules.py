"""/db/schedules: a user's notebook run on a cron expression in a time zone
(exec_api.services.schedules: firing, policies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from exec_api.api.deps import CurrentUser, DbSession, IdPath, ReadDbSession, SettingsDep
from exec_api.models import NotebookExecution, Schedule
from exec_api.schemas import (
    QUEUE_FULL,
    ExecutionHistoryResponse,
    ScheduleCreate,
    ScheduleResponse,
    ScheduleUpdate,
    Username,
)
from exec_api.services import schedules

router = APIRouter(prefix="/db/schedules", tags=["schedules"])


@router.get("", response_model=list[ScheduleResponse])
async def list_schedules(
    db: ReadDbSession,
    user: CurrentUser,
    username: Annotated[Username | None, Query()] = None,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Schedule]:
    """Your schedules (admins: everyone's, or one user's with ``username``)."""
    return await run_in_threadpool(schedules.listing, db, user, username, skip, limit)


@router.post("", response_model=ScheduleResponse, status_code=status.HTTP_201_CREATED)
async def create_schedule(
    body: ScheduleCreate, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> Schedule:
    """Run one of your registered notebooks with these parameters (checked now as any run's)
    at each instant ``cron`` plans in ``timezone``, until ``ends_at``."""
    return await run_in_threadpool(schedules.create, db, cfg, user, body)


@router.get("/user/{username}", response_model=list[ScheduleResponse])
async def user_schedules(
    username: Username, db: ReadDbSession, user: CurrentUser
) -> list[Schedule]:
    return await run_in_threadpool(schedules.of_user, db, user, username)


@router.get("/{schedule_id}", response_model=ScheduleResponse)
async def read_schedule(schedule_id: IdPath, db: ReadDbSession, user: CurrentUser) -> Schedule:
    return await run_in_threadpool(schedules.get_schedule, db, user, schedule_id)


@router.put("/{schedule_id}", response_model=ScheduleResponse)
async def update_schedule(
    schedule_id: IdPath, body: ScheduleUpdate, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> Schedule:
    """Change the fields given; a new ``cron``, ``timezone`` or ``ends_at`` plans from now."""
    return await run_in_threadpool(schedules.update, db, cfg, user, schedule_id, body)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(schedule_id: IdPath, db: DbSession, user: CurrentUser) -> Response:
    """Delete a schedule; its executions stay (``schedule_id`` null)."""
    await run_in_threadpool(schedules.delete, db, user, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{schedule_id}/pause", response_model=ScheduleResponse)
async def pause_schedule(schedule_id: IdPath, db: DbSession, user: CurrentUser) -> Schedule:
    return await run_in_threadpool(schedules.set_paused, db, user, schedule_id, True)


@router.post("/{schedule_id}/resume", response_model=ScheduleResponse)
async def resume_schedule(schedule_id: IdPath, db: DbSession, user: CurrentUser) -> Schedule:
    """Resume: the next planned instant from now (what was missed while paused is not run)."""
    return await run_in_threadpool(schedules.set_paused, db, user, schedule_id, False)


@router.post(
    "/{schedule_id}/run",
    response_model=ExecutionHistoryResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses=QUEUE_FULL,
)
async def run_schedule_now(
    schedule_id: IdPath, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> NotebookExecution:
    """One run now with the schedule's notebook, parameters and retry policy."""
    return await run_in_threadpool(schedules.run_now, db, cfg, user, schedule_id)
