"""Confinement of notebook paths to the owner's notebook area.

The API's Unix user can read every user's notebook area, so it never opens a user-given name
the usual way: :func:`open_notebook` walks the path from a directory handle without following
symlinks and checks what it opened (a regular file the user owns) before reading it.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nbformat

from exec_api.core.config import Settings

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


class NotebookTooLarge(PathRefused):
    """The notebook file is larger than ``EXEC_API_NOTEBOOK_MAX_BYTES``."""


class NotANotebook(PathRefused):
    """The file was read but is not a notebook nbformat can read."""


def unix_uid(username: str) -> int:
    """The Unix account's uid: the owner every file of the user's notebook area must have."""
    try:
        return pwd.getpwnam(username).pw_uid
    except KeyError:
        raise PathRefused(f"no Unix account {username!r}") from None


@dataclass(frozen=True)
class NotebookFile:
    """A notebook read through a handle: ``rel`` is the normalised relative path, ``data`` the
    bytes read from the opened file (never from a second open by name)."""

    rel: str
    data: bytes

    def notebook(self) -> nbformat.NotebookNode:
        try:
            return nbformat.reads(self.data.decode("utf-8"), as_version=4)
        except (UnicodeDecodeError, ValueError) as e:  # json and nbformat errors
            raise NotANotebook(f"not a readable notebook: {e}") from e


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_SYMLINK = "symlinks are not followed in notebook paths"


def _open_at(name: str, flags: int, dir_fd: int | None, shown: str) -> int:
    """``openat`` that turns every failure into a refusal a caller may see."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileNotFoundError(f"notebook not found: {shown}") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            # Either a symlink (O_NOFOLLOW) or a file where a directory is expected: the lstat
            # only picks the message, nothing is read through it.
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise PathRefused(f"{_SYMLINK} ({shown})") from None
            raise PathRefused(f"not a directory: {shown}") from None
        raise PathRefused(f"cannot open {shown}: {e.strerror}") from None


def open_notebook(settings: Settings, username: str, path: str) -> NotebookFile:
    """Read one of ``username``'s notebooks without ever following a name the user controls.

    The area root (``EXEC_API_NOTEBOOK_ROOT_TEMPLATE``) is opened without following a symlink
    in its last component and must be a directory owned by the user; then each component of
    the path is opened relative to the previous directory handle (``openat`` with
    ``O_NOFOLLOW``: a symlink anywhere is refused, never resolved), the last one with
    ``O_NONBLOCK`` (a FIFO cannot hang us).  The opened file must be a regular file owned by
    the user's uid (so neither someone else's file nor a hard link to it is read) and no larger
    than ``EXEC_API_NOTEBOOK_MAX_BYTES``.  The bytes come from that handle.

    Raises :class:`PathRefused` (:class:`NotebookTooLarge`) or :class:`FileNotFoundError`,
    whose messages are safe to show to the caller.
    """
    rel = normalize_relative(path)
    root = user_root(settings, username)
    uid = unix_uid(username)
    parts = rel.split("/")
    fds: list[int] = []
    try:
        fds.append(_open_at(str(root), _DIR_FLAGS, None, "your notebook area"))
        st = os.fstat(fds[-1])
        if st.st_uid != uid:
            raise PathRefused("your notebook area is not owned by you")
        for i, part in enumerate(parts[:-1]):
            fds.append(_open_at(part, _DIR_FLAGS, fds[-1], "/".join(parts[: i + 1])))
        fd = _open_at(parts[-1], _FILE_FLAGS, fds[-1], rel)
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"not a regular file: {rel}")
        if st.st_uid != uid:
            raise PathRefused(f"not owned by you: {rel}")
        limit = settings.notebook_max_bytes
        if st.st_size > limit:
            raise NotebookTooLarge(f"notebook too large: {rel} ({st.st_size} bytes, limit {limit})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow after fstat: read at most limit + 1 bytes
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotebookTooLarge(f"notebook too large: {rel} (over {limit} bytes)")
        return NotebookFile(rel, b"".join(chunks))
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise PathRefused(f"cannot read {rel}: {e.strerror}") from None
    finally:
        for f in fds:
            os.close(f)


def area_to_list(settings: Settings, username: str) -> Path | None:
    """The user's notebook area for listing: None when it is missing or not a directory (a
    symlink there is not followed); refused when the user does not own it."""
    root = user_root(settings, username)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    if st.st_uid != unix_uid(username):
        raise PathRefused("your notebook area is not owned by you")
    return root


def read_notebook(
    settings: Settings, username: str, path: str
) -> tuple[str, nbformat.NotebookNode]:
    """:func:`open_notebook`, parsed: ``(relative path, notebook)``."""
    f = open_notebook(settings, username, path)
    return f.rel, f.notebook()


def resolve_notebook(
    settings: Settings, username: str, path: str, *, must_exist: bool = True
) -> tuple[str, Path]:
    """Check a notebook path as :func:`open_notebook` does and return ``(relative path,
    absolute path)``; the path is for a process that runs *as the user* (the runners).

    A privileged reader must not open the returned path: between this check and that open
    the user can swap the file.  Read with :func:`open_notebook` / :func:`read_notebook`.
    """
    rel = normalize_relative(path)
    if must_exist:
        open_notebook(settings, username, rel)
    return rel, user_root(settings, username) / rel


def output_path_for(settings: Settings, username: str, execution_id: int) -> Path:
    check_username(username)
    return Path(settings.output_root) / username / f"{execution_id}.ipynb"
