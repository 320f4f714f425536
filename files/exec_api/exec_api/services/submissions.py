"""Submitting an execution: the one path behind every submission endpoint (the legacy ones
convert their bodies with ``submission()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.core.security import Principal, acting_user
from exec_api.models import Notebook, NotebookExecution
from exec_api.schemas import ExecutionHistoryResponse, ExecutionSubmitted, SubmitExecution
from exec_api.services import params as P
from exec_api.services import queue as q
from exec_api.services.access import get_notebook
from exec_api.services.errors import param_error, refuse_path
from exec_api.services.notebooks import relative_of
from exec_api.services.parameters import discovered_parameter, specs_of
from exec_api.services.paths import NotANotebook, PathRefused, open_notebook, user_root


@dataclass
class Prepared:
    """A run checked and ready to queue: whose, which notebook, the parameters' values."""

    owner: str
    rel: str
    notebook: Notebook | None
    values: dict[str, Any]
    timeout: int


def submit(
    db: Session, settings: Settings, principal: Principal, sub: SubmitExecution
) -> ExecutionSubmitted:
    """Queues an execution and answers with it.

    Checks (in order, before anything is recorded): who acts, the notebook (registered id
    or a path confined to the owner's area), the parameters (names, types, rules), and the
    owner's queued runs (429 with Retry-After at ``EXEC_API_MAX_QUEUED_PER_USER``).
    A registered notebook's parameters are refreshed from its file first.
    """
    run = prepare(db, settings, principal, sub)
    ex = enqueue(db, settings, run, report_mode=sub.report_mode)
    return submitted(ex)


def enqueue(db: Session, settings: Settings, run: Prepared, **fields: Any) -> NotebookExecution:
    """Queue a prepared run (``fields``: q.submit's report_mode, schedule_id, ...); 429 with
    Retry-After when its owner's queue is full."""
    try:
        return q.submit(
            db,
            username=run.owner,
            input_path=run.rel,
            notebook_id=run.notebook.id if run.notebook is not None else None,
            parameters=run.values,
            timeout_seconds=run.timeout,
            runner=settings.runner,
            max_queued=settings.max_queued_per_user,
            **fields,
        )
    except q.QueueFull as e:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            str(e),
            headers={"Retry-After": str(settings.queue_retry_after_seconds)},
        ) from e


def prepare(
    db: Session,
    settings: Settings,
    principal: Principal,
    sub: SubmitExecution,
    refresh: bool = True,
) -> Prepared:
    """Every check of a submission but the queue's (HTTPException naming what is wrong): the
    same for a run submitted now, a schedule's parameters, and a schedule's planned run.
    ``refresh=False``: the notebook's declared parameters are not brought up to date from its
    file (that commits; a caller inside a transaction of its own, holding locks, must not)."""
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
            found = P.discover(opened.notebook())
        except NotANotebook as e:
            raise refuse_path(e) from e
        if refresh:
            refresh_parameters(db, nb, found)
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
    return Prepared(owner, rel, nb, values, timeout)


def submitted(ex: NotebookExecution) -> ExecutionSubmitted:
    """The answer to a submission: the execution as it is now."""
    return ExecutionSubmitted(
        execution_id=ex.id,
        status=ex.status,
        output_path=ex.output_path,
        execution=ExecutionHistoryResponse.model_validate(ex),
    )


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
