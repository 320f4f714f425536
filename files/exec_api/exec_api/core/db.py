"""Database engine and sessions (SQLAlchemy 2, psycopg 3), and the request's session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from exec_api.core.config import Settings, get_settings


def make_engine(settings: Settings) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,
        pool_recycle=1800,
        future=True,
    )


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings())


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False, future=True)


@lru_cache(maxsize=1)
def get_read_sessionmaker() -> sessionmaker[Session]:
    """Sessions for read-only requests: autocommit, so no BEGIN/ROLLBACK round trips."""
    eng = get_engine().execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=eng, expire_on_commit=False, future=True)


async def get_db() -> AsyncIterator[Session]:
    """FastAPI dependency: the request's session.  Nothing is committed for the route: what it
    does not commit itself is rolled back when the session closes."""
    db = get_sessionmaker()()
    try:
        yield db
    finally:
        await _close(db)


async def get_read_db() -> AsyncIterator[Session]:
    """FastAPI dependency: the request's session for routes that only read (autocommit)."""
    db = get_read_sessionmaker()()
    try:
        yield db
    finally:
        await _close(db)


async def _close(db: Session) -> None:
    """Creating a session does no I/O, so it happens on the event loop; closing one that still
    holds a connection does (a rollback), so that happens in a thread of a limiter of its own:
    if it queued behind request work for the shared thread pool, request threads waiting for a
    pooled connection could block the very clean-ups that give connections back (a deadlock
    until the pool timeout)."""
    if db.in_transaction():
        await anyio.to_thread.run_sync(db.close, limiter=_close_limiter())
    else:
        db.close()


_CLOSE_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("exec_api_close_limiter")


def _close_limiter() -> anyio.CapacityLimiter:
    """Eight threads for closing sessions, per event loop."""
    try:
        return _CLOSE_LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(8)
        _CLOSE_LIMITER.set(limiter)
        return limiter
