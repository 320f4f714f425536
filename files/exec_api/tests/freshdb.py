"""A database of its own, at the head migration, on the tests' PostgreSQL server: for tests
that look at every row (the claim order, retention) without other tests' rows in the way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from conftest import PKG
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker


def fresh_database(pg: Any, name: str) -> str:
    with psycopg.connect(
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True
    ) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = pg.url(name)
    cfg = Config(str(PKG / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")
    return str(url)


def fresh_sessions(pg: Any, prefix: str, pool_size: int = 20) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database of its own (a fixture's body: yields, then disposes)."""
    eng = create_engine(fresh_database(pg, f"{prefix}_{uuid.uuid4().hex[:8]}"), pool_size=pool_size)
    yield sessionmaker(bind=eng, expire_on_commit=False)
    eng.dispose()
