"""Declared parameters of registered notebooks (``/db/parameters``); the rules they are
checked by are in :mod:`exec_api.services.params`."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from exec_api.core.security import Principal
from exec_api.models import NotebookParameter
from exec_api.schemas import ParameterBase, ParameterBulkItem, ParameterCreate, ParameterUpdate
from exec_api.services import params as P
from exec_api.services.access import get_notebook, get_parameter
from exec_api.services.errors import commit_or_conflict, param_error


def build_parameter(item: ParameterBase) -> NotebookParameter:
    """A declaration made through the API: name, rules and default checked (422 otherwise)."""
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


def discovered_parameter(d: P.Discovered) -> NotebookParameter:
    """A declaration read from the notebook's ``parameters`` cell: its default is the file's."""
    return NotebookParameter(
        param_name=d.name,
        param_type=d.type,
        default_value=d.default if d.has_default else None,
        description=d.description,
        required=0,
        validation_rules=None,
        default_from_notebook=True,
    )


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


def create(db: Session, principal: Principal, body: ParameterCreate) -> NotebookParameter:
    get_notebook(db, principal, body.notebook_id)
    p = build_parameter(body)
    p.notebook_id = body.notebook_id
    db.add(p)
    commit_or_conflict(db, p)
    return p


def create_bulk(
    db: Session, principal: Principal, notebook_id: int, items: list[ParameterBulkItem]
) -> list[NotebookParameter]:
    """Several declarations at once (all or none)."""
    get_notebook(db, principal, notebook_id)
    names = [b.param_name for b in items]
    if len(set(names)) != len(names):
        raise HTTPException(status.HTTP_409_CONFLICT, "duplicate parameter name for this notebook")
    rows = []
    for item in items:
        p = build_parameter(item)
        p.notebook_id = notebook_id
        rows.append(p)
    db.add_all(rows)
    commit_or_conflict(db, *rows)
    return rows


def of_notebook(db: Session, principal: Principal, notebook_id: int) -> list[NotebookParameter]:
    get_notebook(db, principal, notebook_id)
    return list(
        db.execute(
            select(NotebookParameter)
            .where(NotebookParameter.notebook_id == notebook_id)
            .order_by(NotebookParameter.id)
        ).scalars()
    )


def update(
    db: Session, principal: Principal, param_id: int, body: ParameterUpdate
) -> NotebookParameter:
    p = get_parameter(db, principal, param_id)
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
    new = build_parameter(merged)
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


def delete(db: Session, principal: Principal, param_id: int) -> None:
    p = get_parameter(db, principal, param_id)
    db.delete(p)
    db.commit()
