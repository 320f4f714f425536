"""The request's database session: every route takes it from the ``get_db`` / ``get_read_db``
dependency, and a busy process with a small pool never deadlocks on pooled connections."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from exec_api.core import db as core_db
from exec_api.core.config import Settings


def _clear_db_caches() -> None:
    from exec_api.core.config import get_settings

    get_settings.cache_clear()
    for cached in (core_db.get_engine, core_db.get_sessionmaker, core_db.get_read_sessionmaker):
        cached.cache_clear()


def test_routes_take_their_session_from_the_dependency(app_client, user):
    """Overriding the dependencies reaches every session a route uses: none opens its own."""
    user.notebook("dep.ipynb", "print(1)")
    calls: Counter[str] = Counter()

    async def counted(name: str, real: Any) -> AsyncIterator[Session]:
        calls[name] += 1
        async for db in real():
            yield db

    async def write_db() -> AsyncIterator[Session]:
        async for db in counted("write", core_db.get_db):
            yield db

    async def read_db() -> AsyncIterator[Session]:
        async for db in counted("read", core_db.get_read_db):
            yield db

    overrides = app_client.app.dependency_overrides
    overrides[core_db.get_db] = write_db
    overrides[core_db.get_read_db] = read_db
    try:
        h = user.headers
        r = app_client.post(
            "/db/notebooks", json={"name": "d", "file_path": "dep.ipynb"}, headers=h
        )
        assert r.status_code == 201, r.text
        assert calls == {"write": 1}, calls
        assert app_client.get(f"/db/notebooks/{r.json()['id']}", headers=h).status_code == 200
        assert app_client.get("/db/executions", headers=h).status_code == 200
        r = app_client.post("/execute", json={"path": "dep.ipynb", "wait": False}, headers=h)
        assert r.status_code == 202, r.text
        assert calls == {"write": 2, "read": 2}, calls
    finally:
        overrides.clear()


@pytest.fixture
def small_pool_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app with 2 request threads and a pool of 6 connections (the smallest the settings
    allow for them), no worker; a request gives up after waiting 5 s for a connection."""
    from fastapi.testclient import TestClient

    from exec_api.main import create_app

    monkeypatch.setenv("EXEC_API_THREADPOOL_SIZE", "2")
    monkeypatch.setenv("EXEC_API_WORKER_CONCURRENCY", "1")
    monkeypatch.setenv("EXEC_API_DB_POOL_SIZE", "6")
    monkeypatch.setenv("EXEC_API_DB_MAX_OVERFLOW", "0")

    def engine(settings: Settings) -> Engine:  # as the service's, but gives up after 5 s
        return create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=5,
        )

    monkeypatch.setattr(core_db, "make_engine", engine)
    _clear_db_caches()
    try:
        with TestClient(create_app(start_worker=False)) as client:
            yield client
    finally:
        core_db.get_engine().dispose()
        monkeypatch.undo()
        _clear_db_caches()


def test_many_requests_on_a_small_pool_do_not_wait_for_connections(small_pool_app, user):
    """60 requests at once, 2 threads, 6 connections: a request holds a connection only while
    its thread works, so none waits for one that a queued request holds (which would stall
    them all until the pool gives up)."""
    h = user.headers
    user.notebook("busy.ipynb", "print(1)")
    r = small_pool_app.post(
        "/db/notebooks", json={"name": "busy", "file_path": "busy.ipynb"}, headers=h
    )
    assert r.status_code == 201, r.text
    paths = ["/db/notebooks", f"/db/notebooks/{r.json()['id']}", "/db/executions"]

    def get(i: int) -> int:
        return small_pool_app.get(paths[i % len(paths)], headers=h).status_code

    started = time.monotonic()
    pool = ThreadPoolExecutor(60)
    try:
        # A request that waited 5 s for a connection raises the pool's TimeoutError here.
        codes = Counter(f.result() for f in [pool.submit(get, i) for i in range(300)])
    finally:
        pool.shutdown(cancel_futures=True)
    elapsed = time.monotonic() - started
    assert codes == {200: 300}, codes
    assert elapsed < 20, f"300 requests took {elapsed:.1f} s: requests waited for connections"
