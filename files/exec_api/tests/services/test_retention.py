"""Retention (``exec-api retention``), against the real PostgreSQL: finished executions older
than EXEC_API_RETENTION_DAYS or beyond a user's newest EXEC_API_RETENTION_PER_USER go, with
their output files; queued and running ones stay, however old."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from freshdb import fresh_database
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from exec_api.core.config import Settings
from exec_api.services import retention

NOW = dt.datetime(2026, 6, 1, 12, 0)


@pytest.fixture
def setup(pg, tmp_path):
    url = fresh_database(pg, f"ret_{uuid.uuid4().hex[:8]}")
    settings = Settings(
        database_url=url,
        oidc_issuer="http://i",
        oidc_audience="a",
        output_root=str(tmp_path / "out"),
        retention_days=90,
        retention_per_user=3,
    )
    eng = create_engine(url)
    yield settings, sessionmaker(bind=eng, expire_on_commit=False), url
    eng.dispose()


def add(sf, settings, user: str, status: str, days_ago: float) -> int:
    at = NOW - dt.timedelta(days=days_ago)
    with sf() as db:
        eid = db.execute(
            text(
                "INSERT INTO notebook_executions (username, input_path, status, started_at,"
                " submitted_at, completed_at, attempts, cancel_requested)"
                " VALUES (:u, 'n.ipynb', :s, :at, :at, :done, 1, false) RETURNING id"
            ),
            {
                "u": user,
                "s": status,
                "at": at,
                "done": at if status not in ("queued", "running") else None,
            },
        ).scalar_one()
        db.commit()
    out = Path(settings.output_root) / user / f"{eid}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("{}")
    return int(eid)


def ids(sf) -> set[int]:
    with sf() as db:
        return set(db.execute(text("SELECT id FROM notebook_executions")).scalars())


def test_old_and_surplus_finished_runs_go_with_their_outputs(setup):
    settings, sf, _ = setup
    old_done = add(sf, settings, "alice", "succeeded", 120)
    old_queued = add(sf, settings, "alice", "queued", 200)
    old_running = add(sf, settings, "alice", "running", 150)
    alice = [add(sf, settings, "alice", s, 10 - i) for i, s in enumerate(
        ["failed", "succeeded", "cancelled", "timed_out", "succeeded"])]  # fmt: skip
    bob = [add(sf, settings, "bob", "succeeded", 5), add(sf, settings, "bob", "failed", 100)]

    dry = retention.apply(sf(), settings, dry_run=True, now=NOW)
    assert set(dry.ids) == {old_done, alice[0], alice[1], bob[1]}
    assert ids(sf) >= {old_done, *alice, *bob}, "a dry run deletes nothing"

    rep = retention.apply(sf(), settings, now=NOW, batch=2)
    gone = {old_done, alice[0], alice[1], bob[1]}
    assert set(rep.ids) == gone and rep.rows == 4 and rep.files == 4, rep
    assert ids(sf) == {old_queued, old_running, *alice[2:], bob[0]}
    left = {int(p.stem) for p in Path(settings.output_root).rglob("*.ipynb")}
    assert left == {old_queued, old_running, *alice[2:], bob[0]}
    assert retention.apply(sf(), settings, now=NOW).rows == 0, "a second pass finds nothing"


def test_orphaned_outputs_are_swept_once_a_day_old(setup):
    settings, sf, _ = setup
    keep = add(sf, settings, "carol", "succeeded", 1)
    d = Path(settings.output_root) / "carol"
    old, fresh = d / "999001.ipynb", d / "999002.ipynb.tmp"
    old.write_text("{}")
    fresh.write_text("{}")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    os.utime(d / f"{keep}.ipynb", (time.time() - 2 * 86400,) * 2)
    rep = retention.apply(sf(), settings, now=NOW)
    assert rep.orphan_files == 1
    assert sorted(p.name for p in d.iterdir()) == sorted([f"{keep}.ipynb", fresh.name])


def test_the_cli_command_uses_the_service_settings(setup, monkeypatch, capsys):
    from exec_api import cli
    from exec_api.core.config import get_settings
    from exec_api.core.db import get_engine, get_read_sessionmaker, get_sessionmaker

    settings, sf, url = setup
    eid = add(sf, settings, "dave", "succeeded", 400)
    monkeypatch.setenv("EXEC_API_DATABASE_URL", url)
    monkeypatch.setenv("EXEC_API_OUTPUT_ROOT", settings.output_root)
    monkeypatch.setenv("EXEC_API_OIDC_ISSUER", "http://i")
    monkeypatch.setenv("EXEC_API_OIDC_AUDIENCE", "a")
    for c in (get_settings, get_engine, get_sessionmaker, get_read_sessionmaker):
        c.cache_clear()
    try:
        assert cli.main(["retention", "--dry-run"]) == 0
        assert json.loads(capsys.readouterr().out)["executions_to_delete"] == 1
        assert eid in ids(sf)
        assert cli.main(["retention"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["executions_deleted"] == 1 and report["outputs_deleted"] == 1, report
        assert eid not in ids(sf)
    finally:
        get_engine().dispose()
        for c in (get_settings, get_engine, get_sessionmaker, get_read_sessionmaker):
            c.cache_clear()
