"""Retention: finished executions older than ``EXEC_API_RETENTION_DAYS``, and each user's
finished executions beyond the newest ``EXEC_API_RETENTION_PER_USER``, are deleted with their
output notebooks (``exec-api retention``, daily from ``exec-api-retention.timer``).

Queued and running executions are never touched.  Rows go in batches, each in its own
transaction: the batch's rows are locked (``SKIP LOCKED``: a row someone is cancelling
waits for the next pass), their output files removed, the rows deleted, then committed.  A
file whose row could not be deleted is gone with it (its download answers 404); an output
file left by a crash between the worker writing it and recording the run is swept once it
is a day old and no execution has its id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, field

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.services.paths import PathRefused, output_path_for
from exec_api.services.queue import TERMINAL, utcnow

log = logging.getLogger(__name__)


@dataclass
class Report:
    rows: int = 0
    files: int = 0
    orphan_files: int = 0
    ids: list[int] = field(default_factory=list)


def _pick_query() -> TextClause:
    """Finished rows to delete (locked): too old, or past the user's newest ``keep``."""
    return text(
        """
        SELECT e.id, e.username FROM notebook_executions AS e
         WHERE e.id IN (
            SELECT r.id FROM (
                SELECT id, coalesce(completed_at, submitted_at) AS at,
                       row_number() OVER (PARTITION BY username ORDER BY id DESC) AS rank
                  FROM notebook_executions WHERE status IN :terminal
            ) AS r
             WHERE r.at < :cutoff OR r.rank > :keep
             LIMIT :batch)
           AND e.status IN :terminal
         FOR UPDATE OF e SKIP LOCKED
        """
    ).bindparams(bindparam("terminal", expanding=True))


def _unlink(settings: Settings, username: str, execution_id: int) -> bool:
    try:
        p = output_path_for(settings, username, execution_id)
    except PathRefused:
        return False
    removed = False
    for f in (p, p.with_suffix(".ipynb.tmp")):
        try:
            os.unlink(f)  # unlink never follows a symlink: only the name goes
            removed = removed or f == p
        except FileNotFoundError:
            pass
    return removed


def apply(
    db: Session,
    settings: Settings,
    *,
    days: int | None = None,
    per_user: int | None = None,
    dry_run: bool = False,
    batch: int = 500,
    now: dt.datetime | None = None,
) -> Report:
    """Delete what the retention rules say; ``dry_run`` only counts (and lists ids)."""
    days = settings.retention_days if days is None else days
    keep = settings.retention_per_user if per_user is None else per_user
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    params = {"terminal": list(TERMINAL), "cutoff": cutoff, "keep": keep, "batch": batch}
    rep = Report()
    pick = _pick_query()
    if dry_run:
        params["batch"] = 2**31 - 1
        rows = db.execute(pick, params).all()
        db.rollback()
        rep.rows, rep.ids = len(rows), [int(r[0]) for r in rows]
        return rep
    while True:
        rows = db.execute(pick, params).all()
        if not rows:
            db.commit()
            break
        ids = [int(r[0]) for r in rows]
        for eid, username in rows:
            rep.files += _unlink(settings, str(username), int(eid))
        db.execute(
            text("DELETE FROM notebook_executions WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        db.commit()
        rep.rows += len(ids)
        rep.ids += ids
    rep.orphan_files = sweep_orphans(db, settings)
    return rep


def sweep_orphans(db: Session, settings: Settings, min_age_seconds: float = 86400) -> int:
    """Remove output files (and leftover ``.tmp`` files) a day old whose execution is gone."""
    root = settings.output_root
    if not os.path.isdir(root):
        return 0
    found: dict[int, list[str]] = {}
    limit = time.time() - min_age_seconds
    with os.scandir(root) as users:
        for u in users:
            if not u.is_dir(follow_symlinks=False):
                continue
            with os.scandir(u.path) as files:
                for f in files:
                    stem = f.name.split(".", 1)[0]
                    if not stem.isdigit() or not f.is_file(follow_symlinks=False):
                        continue
                    if f.stat(follow_symlinks=False).st_mtime < limit:
                        found.setdefault(int(stem), []).append(f.path)
    if not found:
        return 0
    known = set(
        db.execute(
            text("SELECT id FROM notebook_executions WHERE id = ANY(:ids)"),
            {"ids": list(found)},
        ).scalars()
    )
    db.commit()
    n = 0
    for eid, paths in found.items():
        if eid in known:
            continue
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                n += 1
    return n
