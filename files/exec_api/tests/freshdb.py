"""A database of its own, at the head migration, on the tests' PostgreSQL server: for tests
that look at every row (the claim order, retention) without other tests' rows in the way."""

from __future__ import annotations

from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from conftest import PKG


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
