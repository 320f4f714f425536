"""Test fixtures: a real PostgreSQL server, a local IdP (JWKS) and JupyterHub API stand-in,
real notebooks in per-user areas, and the app with its embedded worker (real kernels)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from idp import AUDIENCE, IdP  # noqa: E402,F401
from pg import start_pg  # noqa: E402

PKG = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg() -> Iterator[Any]:
    server = start_pg()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idp() -> Iterator[IdP]:
    i = IdP()
    yield i
    i.server.shutdown()


# Test users have no Unix accounts: by default each owns what this process creates (its uid),
# which is what the API checks a notebook area and a notebook against.  A test may give a
# name another uid here.
TEST_UIDS: dict[str, int] = {}


def fake_unix_uid(username: str) -> int:
    return TEST_UIDS.get(username, os.getuid())


@pytest.fixture(scope="session", autouse=True)
def unix_accounts() -> Iterator[dict[str, int]]:
    from exec_api.services import paths

    mp = pytest.MonkeyPatch()
    mp.setattr(paths, "unix_uid", fake_unix_uid)
    yield TEST_UIDS
    mp.undo()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="exec-api-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def db_url(pg: Any) -> str:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True
    ) as c:
        c.execute("CREATE DATABASE exec_api")
    url = pg.url("exec_api")
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(PKG / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")
    return url


@pytest.fixture(scope="session")
def env(db_url: str, idp: IdP, workdir: Path) -> Iterator[dict[str, str]]:
    values = {
        "EXEC_API_DATABASE_URL": db_url,
        "EXEC_API_NOTEBOOK_ROOT_TEMPLATE": str(workdir / "home" / "{username}" / "notebooks"),
        "EXEC_API_OUTPUT_ROOT": str(workdir / "outputs"),
        "EXEC_API_OIDC_ISSUER": idp.issuer,
        "EXEC_API_OIDC_AUDIENCE": AUDIENCE,
        "EXEC_API_JUPYTERHUB_API_URL": idp.base + "/hub/api",
        "EXEC_API_ADMIN_GROUP": "exec-api-admins",
        "EXEC_API_WORKER_CONCURRENCY": "2",
        "EXEC_API_ORPHAN_CHECK_INTERVAL_SECONDS": "1",
        "EXEC_API_POLL_INTERVAL_SECONDS": "0.5",
        "EXEC_API_SCHEDULE_POLL_SECONDS": "0.5",
        "EXEC_API_PROBE_TOKEN": "probe-secret-for-tests",
    }
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    _clear_caches()
    yield values
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _clear_caches()


def _clear_caches() -> None:
    from exec_api.core.config import get_settings
    from exec_api.core.db import get_engine, get_read_sessionmaker, get_sessionmaker

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_read_sessionmaker.cache_clear()


@pytest.fixture(scope="module")
def app_client(env: dict[str, str]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from exec_api.main import create_app

    app = create_app()
    with TestClient(app) as c:
        yield c


class UserCtx:
    def __init__(self, name: str, idp: IdP, env: dict[str, str], admin: bool = False) -> None:
        self.name = name
        self.idp = idp
        self.groups = ["exec-api-admins"] if admin else ["platform-users"]
        self.root = Path(env["EXEC_API_NOTEBOOK_ROOT_TEMPLATE"].format(username=name))
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.idp.token(self.name, self.groups)}"}

    def notebook(self, rel: str, *cells: str, params: str | None = None) -> Path:
        nb = nbformat.v4.new_notebook()
        if params is not None:
            c = nbformat.v4.new_code_cell(params)
            c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
        nb.cells += [nbformat.v4.new_code_cell(s) for s in cells]
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(p))
        return p


@pytest.fixture
def make_user(idp: IdP, env: dict[str, str]) -> Callable[..., UserCtx]:
    def _make(admin: bool = False, prefix: str = "u") -> UserCtx:
        return UserCtx(f"{prefix}{uuid.uuid4().hex[:10]}", idp, env, admin)

    return _make


@pytest.fixture
def user(make_user: Callable[..., UserCtx]) -> UserCtx:
    return make_user()


def wait_status(
    client: Any,
    eid: int,
    headers: dict[str, str],
    timeout: float = 60,
    until: tuple[str, ...] = ("succeeded", "failed", "cancelled", "timed_out"),
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/db/executions/{eid}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in until:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"execution {eid} did not reach {until}: {r.json()}")


def count_executions(db_url: str, username: str) -> int:
    import psycopg

    from exec_api.worker import _psycopg_dsn

    with psycopg.connect(_psycopg_dsn(db_url)) as c:
        row = c.execute(
            "SELECT count(*) FROM notebook_executions WHERE username = %s", (username,)
        ).fetchone()
        assert row is not None
        return int(row[0])
