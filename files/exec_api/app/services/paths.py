"""Confinement of notebook paths to the owner's notebook area."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from app.core.config import Settings

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@\-]{0,99}$")


class PathRefused(ValueError):
    """The path is not acceptable; the message says why (safe to show to the caller)."""


def check_username(username: str) -> str:
    if not USERNAME_RE.match(username) or username in {".", ".."}:
        raise PathRefused(f"invalid username {username!r}")
    return username


def user_root(settings: Settings, username: str) -> Path:
    check_username(username)
    return Path(settings.notebook_root_template.format(username=username))


def normalize_relative(path: str) -> str:
    """Validate the *form* of a user-given notebook path and return it normalised.

    Refused: empty, NUL/control characters, URLs (``http:``, ``s3:``...), absolute paths,
    home-relative ``~`` paths, any ``..`` component, and names not ending in ``.ipynb``.
    """
    if not isinstance(path, str) or not path.strip():
        raise PathRefused("empty notebook path")
    if len(path) > 400:
        raise PathRefused("notebook path too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise PathRefused("control characters in notebook path")
    if _SCHEME.match(path) or "://" in path:
        raise PathRefused("URLs are not accepted: give a path relative to your notebook area")
    if "\\" in path:
        raise PathRefused("backslashes are not accepted in notebook paths")
    if path.startswith(("/", "~")):
        raise PathRefused(
            "absolute paths are not accepted: give a path relative to your notebook area"
        )
    parts = PurePosixPath(path).parts
    if any(p == ".." for p in parts):
        raise PathRefused("'..' is not accepted in notebook paths")
    clean = [p for p in parts if p not in (".", "")]
    if not clean:
        raise PathRefused("empty notebook path")
    rel = "/".join(clean)
    if not rel.endswith(".ipynb"):
        raise PathRefused("notebook path must end in .ipynb")
    return rel


def resolve_notebook(
    settings: Settings, username: str, path: str, *, must_exist: bool = True
) -> tuple[str, Path]:
    """Return ``(relative path, real absolute path)`` inside the user's notebook area.

    Symlinks are resolved and the result must still lie inside the (resolved) area.
    """
    rel = normalize_relative(path)
    root = user_root(settings, username)
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root / rel))
    if target != root_real and root_real not in target.parents:
        raise PathRefused("notebook path leads outside your notebook area")
    if must_exist and not target.is_file():
        raise FileNotFoundError(f"notebook not found: {rel}")
    return rel, target


def output_path_for(settings: Settings, username: str, execution_id: int) -> Path:
    check_username(username)
    return Path(settings.output_root) / username / f"{execution_id}.ipynb"
