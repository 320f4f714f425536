"""Who sees what: users see and act on their own notebooks, parameters and executions,
admins on everyone's.  Another user's object answers 404, like a missing one."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from exec_api.core.security import Principal
from exec_api.models import Notebook, NotebookExecution, NotebookParameter


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def can_see(principal: Principal, username: str) -> bool:
    return principal.is_admin or principal.username == username


def get_notebook(db: Session, principal: Principal, notebook_id: int) -> Notebook:
    nb = db.get(Notebook, notebook_id)
    if nb is None or not can_see(principal, nb.username):
        raise not_found("notebook")
    return nb


def get_parameter(db: Session, principal: Principal, param_id: int) -> NotebookParameter:
    p = db.get(NotebookParameter, param_id)
    if p is None:
        raise not_found("parameter")
    try:
        get_notebook(db, principal, p.notebook_id)
    except HTTPException:
        raise not_found("parameter") from None
    return p


def get_execution(db: Session, principal: Principal, execution_id: int) -> NotebookExecution:
    ex = db.get(NotebookExecution, execution_id)
    if ex is None or not can_see(principal, ex.username):
        raise not_found("execution")
    return ex
