"""Database engine and sessions (SQLAlchemy 2, psycopg 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache

import anyio
import anyio.to_thread
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
    """FastAPI dependency: one session per request (used by sync endpoints, in threads).

    Creating a session does no I/O; closing one that still holds a connection does (a
    rollback), so that happens in a worker thread, never on the event loop."""
    db = get_sessionmaker()()
    try:
        yield db
    finally:
        if db.in_transaction():
            # Own threads for the clean-up: if it queued behind request work for the shared
            # thread pool, request threads waiting for a pooled connection could block the
            # very clean-ups that give connections back (a deadlock until the pool timeout).
            await anyio.to_thread.run_sync(db.close, limiter=_close_limiter())
        else:
            db.close()


_CLOSE_LIMITER: anyio.CapacityLimiter | None = None


def _close_limiter() -> anyio.CapacityLimiter:
    global _CLOSE_LIMITER
    if _CLOSE_LIMITER is None:
        _CLOSE_LIMITER = anyio.CapacityLimiter(8)
    return _CLOSE_LIMITER
