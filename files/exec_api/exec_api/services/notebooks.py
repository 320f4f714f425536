"""The notebook registry (``/db/notebooks``) and the listing of a user's notebook area."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.core.security import Principal, acting_user
from exec_api.models import Notebook, NotebookParameter
from exec_api.schemas import (
    NotebookCreate,
    NotebookListEntry,
    NotebookResponse,
    NotebookUpdate,
    NotebookWithParameters,
    ParameterResponse,
)
from exec_api.services import params as P
from exec_api.services.access import get_notebook
from exec_api.services.errors import commit_or_conflict, refuse_path
from exec_api.services.parameters import build_parameter, discovered_parameter
from exec_api.services.paths import PathRefused, area_to_list, open_notebook, user_root

# The most files a listing of a notebook area returns.
MAX_LISTED = 5000


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


def listing(
    db: Session,
    settings: Settings,
    principal: Principal,
    username: str | None,
    skip: int,
    limit: int,
) -> list[NotebookResponse]:
    """The caller's notebooks (admins: everyone's, or one user's with ``username``)."""
    stmt = select(Notebook).order_by(Notebook.id).offset(skip).limit(limit)
    if not principal.is_admin or username:
        stmt = stmt.where(Notebook.username == acting_user(principal, username))
    return [notebook_out(settings, nb) for nb in db.execute(stmt).scalars()]


def of_user(
    db: Session, settings: Settings, principal: Principal, username: str
) -> list[NotebookResponse]:
    owner = acting_user(principal, username)
    rows = db.execute(
        select(Notebook).where(Notebook.username == owner).order_by(Notebook.id)
    ).scalars()
    return [notebook_out(settings, nb) for nb in rows]


def create(
    db: Session, settings: Settings, principal: Principal, body: NotebookCreate
) -> NotebookWithParameters:
    """Registers a notebook of the owner's area; the parameters found in its ``parameters``
    cell are declared (unless ``detect_parameters`` is false), explicit ones win."""
    owner = acting_user(principal, body.username)
    try:
        # One read, through a handle, of a file the owner owns: what is registered and what
        # the parameters are discovered from are the same file (no check-then-open race).
        f = open_notebook(settings, owner, body.file_path)
        rel = f.rel
        found = P.discover(f.notebook()) if body.detect_parameters else []
    except (PathRefused, FileNotFoundError) as e:
        raise refuse_path(e) from e
    declared: dict[str, NotebookParameter] = {}
    for d in found:
        declared[d.name] = discovered_parameter(d)
    for item in body.parameters or []:
        declared[item.param_name] = build_parameter(item)
    nb = Notebook(
        name=body.name,
        description=body.description,
        file_path=str(user_root(settings, owner) / rel),
        username=owner,
        tags=body.tags,
        metadata_=body.metadata,
        detect_parameters=body.detect_parameters,
    )
    nb.parameters = list(declared.values())
    db.add(nb)
    commit_or_conflict(db, nb)
    out = notebook_out(settings, nb, with_params=True)
    assert isinstance(out, NotebookWithParameters)
    return out


def read(
    db: Session, settings: Settings, principal: Principal, notebook_id: int
) -> NotebookResponse:
    return notebook_out(settings, get_notebook(db, principal, notebook_id), with_params=True)


def update(
    db: Session, settings: Settings, principal: Principal, notebook_id: int, body: NotebookUpdate
) -> NotebookResponse:
    nb = get_notebook(db, principal, notebook_id)
    fields = body.model_fields_set
    if "file_path" in fields and body.file_path is not None:
        try:
            rel = open_notebook(settings, nb.username, body.file_path).rel
        except (PathRefused, FileNotFoundError) as e:
            raise refuse_path(e) from e
        nb.file_path = str(user_root(settings, nb.username) / rel)
    if "name" in fields and body.name is not None:
        nb.name = body.name
    if "description" in fields:
        nb.description = body.description
    if "tags" in fields:
        nb.tags = body.tags
    if "metadata" in fields:
        nb.metadata_ = body.metadata
    commit_or_conflict(db, nb)
    return notebook_out(settings, nb)


def delete(db: Session, principal: Principal, notebook_id: int) -> None:
    """Its parameters go with it; its executions stay (notebook_id NULL)."""
    nb = get_notebook(db, principal, notebook_id)
    db.delete(nb)
    db.commit()


def area_files(
    db: Session, settings: Settings, principal: Principal, username: str
) -> list[NotebookListEntry]:
    """The ``.ipynb`` files of a user's notebook area (symlinks are not followed), each with
    its registration."""
    owner = acting_user(principal, username)
    try:
        root = area_to_list(settings, owner)
    except PathRefused as e:
        raise refuse_path(e) from e
    registered = {
        nb.file_path: nb.id
        for nb in db.execute(select(Notebook).where(Notebook.username == owner)).scalars()
    }
    out: list[NotebookListEntry] = []
    if root is None:
        return out
    # fwalk moves through directory handles and never follows a symlink, even one swapped in
    # while it walks (os.walk re-opens each directory by name).
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.endswith(".ipynb") or f.startswith("."):
                continue
            try:
                if not stat.S_ISREG(os.stat(f, dir_fd=dirfd, follow_symlinks=False).st_mode):
                    continue
            except OSError:
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            out.append(
                NotebookListEntry(
                    path=rel, registered=full in registered, notebook_id=registered.get(full)
                )
            )
            if len(out) >= MAX_LISTED:
                return out
    return out
