"""Shared request dependencies and helpers for the routes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

from fastapi import Depends, HTTPException, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exec_api.core.config import Settings, get_settings
from exec_api.core.db import get_db, get_read_sessionmaker, get_sessionmaker
from exec_api.core.security import Principal, acting_user, current_user
from exec_api.models import Notebook, NotebookExecution, NotebookParameter
from exec_api.schemas import (
    MAX_ID,
    NotebookResponse,
    NotebookWithParameters,
    ParameterResponse,
    SubmitExecution,
)
from exec_api.services import params as P
from exec_api.services import queue as q
from exec_api.services.paths import (
    NotANotebook,
    NotebookTooLarge,
    PathRefused,
    open_notebook,
    user_root,
)

DB = Annotated[Session, Depends(get_db)]


def with_db(fn: Callable[..., T], *, readonly: bool = False) -> Callable[..., Awaitable[T]]:
    """Turn a blocking route ``fn(..., db: Session, ...)`` into an async route that runs
    ``fn`` in one worker thread with a session opened and closed in that same thread.

    So a request holds a pooled connection only while its own code runs: FastAPI's
    response validation and the dependency clean-up, which need the event loop or another
    thread, never wait while holding one (that pattern deadlocks a busy pool).
    ``readonly`` routes use autocommit sessions (no transaction round trips)."""
    maker = get_read_sessionmaker if readonly else get_sessionmaker
    sig = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    params = [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in sig.parameters.items()
        if name != "db"
    ]

    @functools.wraps(fn)
    async def route(*args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with maker()() as db:
                return fn(*args, db=db, **kwargs)

        return await run_in_threadpool(call)

    route.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=hints.get("return", sig.return_annotation)
    )
    del route.__wrapped__  # FastAPI must see the new signature, not fn's
    return route


def with_db_read(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """:func:`with_db` for routes that only read."""
    return with_db(fn, readonly=True)


User = Annotated[Principal, Depends(current_user)]


async def settings_dep() -> Settings:
    return get_settings()


Cfg = Annotated[Settings, Depends(settings_dep)]
IdPath = Annotated[int, PathParam(ge=1, le=MAX_ID)]
T = TypeVar("T")


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def can_see(principal: Principal, username: str) -> bool:
    return principal.is_admin or principal.username == username


def get_notebook(db: Session, principal: Principal, notebook_id: int) -> Notebook:
    nb = db.get(Notebook, notebook_id)
    if nb is None or not can_see(principal, nb.username):
        raise not_found("notebook")  # others' notebooks are indistinguishable from missing
    return nb


def get_execution(db: Session, principal: Principal, execution_id: int) -> NotebookExecution:
    ex = db.get(NotebookExecution, execution_id)
    if ex is None or not can_see(principal, ex.username):
        raise not_found("execution")
    return ex


def refuse_path(e: Exception) -> HTTPException:
    if isinstance(e, FileNotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(e))
    if isinstance(e, NotebookTooLarge):
        return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(e))
    if isinstance(e, NotANotebook):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(e))
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"path refused: {e}")


def param_error(e: P.ParameterError) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        {"parameter": e.param, "message": e.message, "error": str(e)},
    )


def relative_of(settings: Settings, nb: Notebook) -> str | None:
    try:
        return str(Path(nb.file_path).relative_to(user_root(settings, nb.username)))
    except (ValueError, PathRefused):
        return None


def notebook_out(settings: Settings, nb: Notebook, with_params: bool = False) -> NotebookResponse:
    data: dict[str, Any] = {
        "id": nb.id,
        "name": nb.name,
        "description": nb.description,
        "file_path": nb.file_path,
        "relative_path": relative_of(settings, nb),
        "username": nb.username,
        "tags": nb.tags,
        "metadata": nb.metadata_,
        "created_at": nb.created_at,
        "updated_at": nb.updated_at,
    }
    if with_params:
        data["parameters"] = [ParameterResponse.model_validate(p) for p in nb.parameters]
        return NotebookWithParameters(**data)
    return NotebookResponse(**data)


def specs_of(params: list[NotebookParameter]) -> list[P.ParamSpec]:
    return [
        P.ParamSpec(
            name=p.param_name,
            type=p.param_type,
            required=bool(p.required),
            default=p.default_value,
            has_default=p.default_value is not None and not p.default_from_notebook,
            rules=p.validation_rules,
        )
        for p in params
    ]


def refresh_parameters(db: Session, nb: Notebook, found: list[P.Discovered]) -> None:
    """The notebook's parameters as its file has them now: defaults that came from the file
    follow it, and (when the registration read the cell) names added to the cell are declared.
    Declarations a user made are left as they are."""
    by_name = {d.name: d for d in found}
    changed = False
    for p in nb.parameters:
        if not p.default_from_notebook:
            continue
        d = by_name.get(p.param_name)
        current = d.default if d is not None and d.has_default else None
        if p.default_value != current:
            p.default_value, changed = current, True
    if nb.detect_parameters:
        have = {p.param_name for p in nb.parameters}
        for d in found:
            if d.name not in have:
                nb.parameters.append(discovered_parameter(d))
                changed = True
    if not changed:
        return
    try:
        db.commit()
    except IntegrityError:  # another submission declared the same name first
        db.rollback()
    db.refresh(nb)


def discovered_parameter(d: P.Discovered) -> NotebookParameter:
    return NotebookParameter(
        param_name=d.name,
        param_type=d.type,
        default_value=d.default if d.has_default else None,
        description=d.description,
        required=0,
        validation_rules=None,
        default_from_notebook=True,
    )


def submit_execution(
    db: Session,
    settings: Settings,
    principal: Principal,
    sub: SubmitExecution,
) -> NotebookExecution:
    """The one execution path behind every submission endpoint (the legacy ones convert
    their bodies with ``submission()``).

    Checks (in order, before anything is recorded): who acts, the notebook (registered id
    or a path confined to the owner's area), the parameters (names, types, rules), and the
    owner's queued runs (429 with Retry-After at ``EXEC_API_MAX_QUEUED_PER_USER``).
    """
    username, notebook_id, path = sub.username, sub.notebook_id, sub.notebook_path
    parameters, timeout_seconds = sub.parameters, sub.timeout_seconds
    owner = acting_user(principal, username)
    nb: Notebook | None = None
    if notebook_id is not None:
        nb = get_notebook(db, principal, notebook_id)
        owner = nb.username
        rel = relative_of(settings, nb)
        if rel is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "notebook lies outside its owner's notebook area"
            )
    elif path:
        rel = path
    else:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "give notebook_id or a notebook path"
        )
    try:
        # Read through a handle of the user's area, once: never reopened by name (a swap
        # between a check and a read would hand another user's notebook to this process).
        opened = open_notebook(settings, owner, rel)
    except (PathRefused, FileNotFoundError) as e:
        raise refuse_path(e) from e
    rel = opened.rel
    if nb is None:
        abs_path = str(user_root(settings, owner) / rel)
        nb = db.execute(
            select(Notebook).where(Notebook.file_path == abs_path, Notebook.username == owner)
        ).scalar_one_or_none()
    if nb is not None:
        try:
            refresh_parameters(db, nb, P.discover(opened.notebook()))
        except NotANotebook as e:
            raise refuse_path(e) from e
        specs = specs_of(list(nb.parameters))
    else:
        try:
            disc = P.discover(opened.notebook())
        except NotANotebook as e:
            raise refuse_path(e) from e
        specs = [
            P.ParamSpec(name=d.name, type=d.type, default=d.default, has_default=d.has_default)
            for d in disc
        ]
    try:
        values = P.resolve(specs, parameters)
    except P.ParameterError as e:
        raise param_error(e) from e
    timeout = min(timeout_seconds or settings.default_timeout_seconds, settings.max_timeout_seconds)
    try:
        return q.submit(
            db,
            username=owner,
            input_path=rel,
            notebook_id=nb.id if nb is not None else None,
            parameters=values,
            timeout_seconds=timeout,
            runner=settings.runner,
            max_queued=settings.max_queued_per_user,
            report_mode=sub.report_mode,
        )
    except q.QueueFull as e:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            str(e),
            headers={"Retry-After": str(settings.queue_retry_after_seconds)},
        ) from e


# The unique constraints a request can run into, and what the caller is told (409).
_CONFLICTS = (
    ("uq_notebook_name_user", "you already have a notebook of that name"),
    ("file_path", "that file is already registered"),
    ("uq_param_notebook_name", "duplicate parameter name for this notebook"),
)


def commit_or_conflict(db: Session, *rows: object) -> None:
    """Commits; a unique constraint hit becomes 409 naming what clashed (nothing is kept).
    The given rows are refreshed from the database afterwards."""
    try:
        db.commit()
    except IntegrityError as e:
        db.rollback()
        msg = str(e.orig) if e.orig else str(e)
        detail = next((text for key, text in _CONFLICTS if key in msg), "conflict")
        raise HTTPException(status.HTTP_409_CONFLICT, detail) from e
    for row in rows:
        db.refresh(row)
