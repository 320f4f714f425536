"""Alembic: the migration creates exactly the models' schema, and downgrades cleanly."""

from __future__ import annotations

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from conftest import PKG
from sqlalchemy import create_engine, inspect

from exec_api.models import Base


def test_upgrade_matches_models_and_downgrades(pg):
    with psycopg.connect(
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True
    ) as c:
        c.execute("CREATE DATABASE migtest")
    url = pg.url("migtest")
    cfg = Config(str(PKG / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")
    eng = create_engine(url)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    insp = inspect(eng)
    fks = {
        fk["referred_table"]: fk["options"].get("ondelete")
        for t in ("notebook_parameters", "notebook_executions")
        for fk in insp.get_foreign_keys(t)
    }
    assert insp.get_foreign_keys("notebook_parameters")[0]["options"]["ondelete"] == "CASCADE"
    assert insp.get_foreign_keys("notebook_executions")[0]["options"]["ondelete"] == "SET NULL"
    assert fks
    uniques = {
        tuple(u["column_names"])
        for t in ("notebooks", "notebook_parameters")
        for u in insp.get_unique_constraints(t)
    }
    assert {("name", "username"), ("file_path",), ("notebook_id", "param_name")} <= uniques
    command.downgrade(cfg, "base")
    assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    eng.dispose()
