"""How the refusals the services meet answer over HTTP: a notebook path, a parameter, a unique
constraint."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exec_api.services.params import ParameterError
from exec_api.services.paths import NotANotebook, NotebookTooLarge


def refuse_path(e: Exception) -> HTTPException:
    if isinstance(e, FileNotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(e))
    if isinstance(e, NotebookTooLarge):
        return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(e))
    if isinstance(e, NotANotebook):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(e))
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"path refused: {e}")


def param_error(e: ParameterError) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        {"parameter": e.param, "message": e.message, "error": str(e)},
    )


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
