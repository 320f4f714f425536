"""Fault test: a worker process is killed (SIGKILL) mid-run; its execution must not stay
``running`` (marked failed, or requeued and run again), and its kernel must not survive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import PKG, wait_status


@pytest.fixture(scope="module")
def api(env):
    from fastapi.testclient import TestClient

    from exec_api.main import create_app

    with TestClient(create_app(start_worker=False)) as c:
        yield c


def _start_worker():
    # The test users have no Unix accounts: the worker process gets the tests' stand-in
    # (conftest.fake_unix_uid) before it starts, as the in-process app does.
    boot = (
        "import os, exec_api.services.paths as p; p.unix_uid = lambda name: os.getuid(); "
        "from exec_api.worker import main; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", boot],
        cwd=PKG,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_file(p, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.exists() and p.read_text():
            return p.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{p} never appeared")


def _kill_mid_run(api, user, workdir, rel):
    pidfile = workdir / f"kpid-{user.name}"
    done = workdir / f"done-{user.name}"
    user.notebook(
        rel,
        "import os, time, pathlib\n"
        f"done = pathlib.Path({str(done)!r})\n"
        "if not done.exists():\n"
        "    done.write_text('1')\n"
        f"    pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(300)\n"
        "print('second attempt')",
    )
    r = api.post("/db/executions", headers=user.headers, json={"notebook_path": rel})
    assert r.status_code == 202
    eid = r.json()["execution_id"]
    worker = _start_worker()
    try:
        kernel_pid = int(_wait_file(pidfile))
        ex = api.get(f"/db/executions/{eid}", headers=user.headers).json()
        assert ex["status"] == "running"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # the dead worker's kernel goes with it (its zygote sees the pipe close)
    deadline = time.time() + 10
    while _alive(kernel_pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(kernel_pid)
    # nothing has recovered it yet: no live worker
    assert api.get(f"/db/executions/{eid}", headers=user.headers).json()["status"] == "running"
    return eid


def _in_process_worker(**overrides):
    from exec_api.core.config import Settings
    from exec_api.core.db import get_sessionmaker
    from exec_api.worker import Worker

    return Worker(Settings(**overrides), get_sessionmaker())


def test_killed_worker_execution_marked_failed(api, user, workdir):
    eid = _kill_mid_run(api, user, workdir, "crash.ipynb")
    w = _in_process_worker(orphan_policy="fail")
    w.start()  # start-up recovery
    try:
        ex = wait_status(api, eid, user.headers, timeout=10)
    finally:
        w.stop()
    assert ex["status"] == "failed"
    assert "orphan" in ex["error_message"]
    assert ex["completed_at"] is not None


def test_killed_worker_execution_requeued(api, user, workdir):
    eid = _kill_mid_run(api, user, workdir, "crash2.ipynb")
    w = _in_process_worker(orphan_policy="requeue")
    w.start()
    try:
        ex = wait_status(api, eid, user.headers, timeout=60)
    finally:
        w.stop()
    assert ex["status"] == "succeeded", ex
    assert ex["attempts"] == 2
    out = api.get(f"/db/executions/{eid}/output", headers=user.headers).json()
    assert "second attempt" in json.dumps(out)


def test_live_worker_is_not_treated_as_orphan(api, user, workdir):
    pidfile = workdir / f"live-{user.name}"
    user.notebook(
        "live.ipynb",
        "import os, time, pathlib\n"
        f"pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(3)",
    )
    eid = api.post(
        "/db/executions", headers=user.headers, json={"notebook_path": "live.ipynb"}
    ).json()["execution_id"]
    worker = _start_worker()
    try:
        _wait_file(pidfile)
        w = _in_process_worker(orphan_policy="fail", worker_concurrency=1)
        assert w.recover() == []  # the other worker holds its lock: not an orphan
        ex = wait_status(api, eid, user.headers, timeout=30)
        assert ex["status"] == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
