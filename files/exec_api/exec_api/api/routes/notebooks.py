"""/db/notebooks: the notebook registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import select

from exec_api.api.deps import (
    DB,
    Cfg,
    IdPath,
    User,
    commit_or_conflict,
    discovered_parameter,
    get_notebook,
    notebook_out,
    param_error,
    refuse_path,
    with_db,
    with_db_read,
)
from exec_api.core.security import acting_user
from exec_api.models import Notebook, NotebookParameter
from exec_api.schemas import (
    NotebookCreate,
    NotebookResponse,
    NotebookUpdate,
    NotebookWithParameters,
    Username,
)
from exec_api.services import params as P
from exec_api.services.paths import (
    PathRefused,
    open_notebook,
    user_root,
)

router = APIRouter(prefix="/db/notebooks", tags=["notebooks"])


@router.get("", response_model=list[NotebookResponse])
@with_db_read
def list_notebooks(
    db: DB,
    cfg: Cfg,
    user: User,
    username: Annotated[Username | None, Query()] = None,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[NotebookResponse]:
    """Your notebooks (admins: everyone's, or one user's with ``username``)."""
    stmt = select(Notebook).order_by(Notebook.id).offset(skip).limit(limit)
    if not user.is_admin or username:
        stmt = stmt.where(Notebook.username == acting_user(user, username))
    return [notebook_out(cfg, nb) for nb in db.execute(stmt).scalars()]


@router.post("", response_model=NotebookWithParameters, status_code=status.HTTP_201_CREATED)
@with_db
def create_notebook(body: NotebookCreate, db: DB, cfg: Cfg, user: User) -> NotebookWithParameters:
    """Register a notebook of your notebook area (``file_path`` is relative to it).

    Its ``parameters`` cell is read (never run) and the parameters found are declared,
    unless ``detect_parameters`` is false; explicit ``parameters`` win.
    """
    owner = acting_user(user, body.username)
    try:
        # One read, through a handle, of a file the owner owns: what is registered and what
        # the parameters are discovered from are the same file (no check-then-open race).
        f = open_notebook(cfg, owner, body.file_path)
        rel = f.rel
        found = P.discover(f.notebook()) if body.detect_parameters else []
    except (PathRefused, FileNotFoundError) as e:
        raise _refused(e) from e
    declared: dict[str, NotebookParameter] = {}
    for d in found:
        declared[d.name] = discovered_parameter(d)
    for item in body.parameters or []:
        declared[item.param_name] = build_parameter(item)
    nb = Notebook(
        name=body.name,
        description=body.description,
        file_path=str(user_root(cfg, owner) / rel),
        username=owner,
        tags=body.tags,
        metadata_=body.metadata,
        detect_parameters=body.detect_parameters,
    )
    nb.parameters = list(declared.values())
    db.add(nb)
    commit_or_conflict(db, nb)
    out = notebook_out(cfg, nb, with_params=True)
    assert isinstance(out, NotebookWithParameters)
    return out


def _refused(e: PathRefused | FileNotFoundError) -> HTTPException:
    return refuse_path(e)


def build_parameter(item: object) -> NotebookParameter:
    from exec_api.schemas import ParameterBase

    assert isinstance(item, ParameterBase)
    try:
        P.check_name(item.param_name)
        rules = (
            item.validation_rules.model_dump(exclude_none=True) if item.validation_rules else None
        )
        P.check_rules(item.param_name, item.param_type, rules)
        default = item.default_value
        if default is not None:
            default = P.coerce(item.param_name, item.param_type, default)
            P.apply_rules(item.param_name, item.param_type, default, rules)
    except P.ParameterError as e:
        raise param_error(e) from e
    return NotebookParameter(
        param_name=item.param_name,
        param_type=item.param_type,
        default_value=default,
        description=item.description,
        required=int(item.required),
        validation_rules=rules or None,
    )


@router.get("/user/{username}", response_model=list[NotebookResponse])
@with_db_read
def user_notebooks(username: Username, db: DB, cfg: Cfg, user: User) -> list[NotebookResponse]:
    owner = acting_user(user, username)
    rows = db.execute(
        select(Notebook).where(Notebook.username == owner).order_by(Notebook.id)
    ).scalars()
    return [notebook_out(cfg, nb) for nb in rows]


@router.get("/{notebook_id}", response_model=NotebookWithParameters)
@with_db_read
def read_notebook(notebook_id: IdPath, db: DB, cfg: Cfg, user: User) -> NotebookResponse:
    return notebook_out(cfg, get_notebook(db, user, notebook_id), with_params=True)


@router.put("/{notebook_id}", response_model=NotebookResponse)
@with_db
def update_notebook(
    notebook_id: IdPath, body: NotebookUpdate, db: DB, cfg: Cfg, user: User
) -> NotebookResponse:
    nb = get_notebook(db, user, notebook_id)
    fields = body.model_fields_set
    if "file_path" in fields and body.file_path is not None:
        try:
            rel = open_notebook(cfg, nb.username, body.file_path).rel
        except (PathRefused, FileNotFoundError) as e:
            raise _refused(e) from e
        nb.file_path = str(user_root(cfg, nb.username) / rel)
    if "name" in fields and body.name is not None:
        nb.name = body.name
    if "description" in fields:
        nb.description = body.description
    if "tags" in fields:
        nb.tags = body.tags
    if "metadata" in fields:
        nb.metadata_ = body.metadata
    commit_or_conflict(db, nb)
    return notebook_out(cfg, nb)


@router.delete("/{notebook_id}", status_code=status.HTTP_204_NO_CONTENT)
@with_db
def delete_notebook(notebook_id: IdPath, db: DB, user: User) -> Response:
    """Delete a notebook: its parameters go with it; its executions stay (notebook_id NULL)."""
    nb = get_notebook(db, user, notebook_id)
    db.delete(nb)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
