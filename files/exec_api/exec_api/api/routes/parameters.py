"""/db/parameters: typed parameter declarations of a notebook."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select

from exec_api.api.deps import (
    DB,
    IdPath,
    User,
    commit_or_conflict,
    get_notebook,
    not_found,
    param_error,
    with_db,
    with_db_read,
)
from exec_api.api.routes.notebooks import build_parameter
from exec_api.core.security import Principal
from exec_api.models import NotebookParameter
from exec_api.schemas import (
    ParameterBulkItem,
    ParameterCreate,
    ParameterResponse,
    ParameterUpdate,
)
from exec_api.services import params as P

router = APIRouter(prefix="/db/parameters", tags=["parameters"])


def _dup() -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, "duplicate parameter name for this notebook")


def _get_param(db: DB, user: Principal, param_id: int) -> NotebookParameter:
    p = db.get(NotebookParameter, param_id)
    if p is None:
        raise not_found("parameter")
    try:
        get_notebook(db, user, p.notebook_id)
    except HTTPException:
        raise not_found("parameter") from None
    return p


@router.post("", response_model=ParameterResponse, status_code=status.HTTP_201_CREATED)
@with_db
def create_parameter(body: ParameterCreate, db: DB, user: User) -> NotebookParameter:
    get_notebook(db, user, body.notebook_id)
    p = build_parameter(body)
    p.notebook_id = body.notebook_id
    db.add(p)
    commit_or_conflict(db, p)
    return p


@router.post(
    "/bulk/{notebook_id}",
    response_model=list[ParameterResponse],
    status_code=status.HTTP_201_CREATED,
)
@with_db
def create_parameters_bulk(
    notebook_id: IdPath, body: list[ParameterBulkItem], db: DB, user: User
) -> list[NotebookParameter]:
    """Declare several parameters at once (all or none)."""
    get_notebook(db, user, notebook_id)
    names = [b.param_name for b in body]
    if len(set(names)) != len(names):
        raise _dup()
    rows = []
    for item in body:
        p = build_parameter(item)
        p.notebook_id = notebook_id
        rows.append(p)
    db.add_all(rows)
    commit_or_conflict(db, *rows)
    return rows


@router.get("/notebook/{notebook_id}", response_model=list[ParameterResponse])
@with_db_read
def notebook_parameters(notebook_id: IdPath, db: DB, user: User) -> list[NotebookParameter]:
    get_notebook(db, user, notebook_id)
    return list(
        db.execute(
            select(NotebookParameter)
            .where(NotebookParameter.notebook_id == notebook_id)
            .order_by(NotebookParameter.id)
        ).scalars()
    )


@router.get("/{param_id}", response_model=ParameterResponse)
@with_db_read
def read_parameter(param_id: IdPath, db: DB, user: User) -> NotebookParameter:
    return _get_param(db, user, param_id)


@router.put("/{param_id}", response_model=ParameterResponse)
@with_db
def update_parameter(
    param_id: IdPath, body: ParameterUpdate, db: DB, user: User
) -> NotebookParameter:
    p = _get_param(db, user, param_id)
    f = body.model_fields_set
    # A default given here is the user's (injected); null gives the notebook's own back.
    from_notebook = body.default_value is None if "default_value" in f else p.default_from_notebook
    kept_default = None if from_notebook else p.default_value  # the file's is not checked
    merged = ParameterBulkItem(
        param_name=body.param_name if "param_name" in f and body.param_name else p.param_name,
        param_type=body.param_type if "param_type" in f and body.param_type else p.param_type,  # type: ignore[arg-type]
        default_value=body.default_value if "default_value" in f else kept_default,
        description=body.description if "description" in f else p.description,
        required=body.required
        if "required" in f and body.required is not None
        else bool(p.required),
        validation_rules=body.validation_rules if "validation_rules" in f else p.validation_rules,
    )
    try:
        new = build_parameter(merged)
    except P.ParameterError as e:  # pragma: no cover - build_parameter raises HTTP errors
        raise param_error(e) from e
    for attr in (
        "param_name",
        "param_type",
        "default_value",
        "description",
        "required",
        "validation_rules",
    ):
        if attr != "default_value" or not from_notebook or "default_value" in f:
            setattr(p, attr, getattr(new, attr))
    p.default_from_notebook = from_notebook
    commit_or_conflict(db, p)
    return p


@router.delete("/{param_id}", status_code=status.HTTP_204_NO_CONTENT)
@with_db
def delete_parameter(param_id: IdPath, db: DB, user: User) -> Response:
    p = _get_param(db, user, param_id)
    db.delete(p)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
