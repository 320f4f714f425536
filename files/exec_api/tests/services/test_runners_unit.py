"""Runners: the child protocol for real (subprocess runner), the systemd command's shape."""

from __future__ import annotations

import pwd
import subprocess
import threading
import time

import nbformat
import pytest

from app.core.config import Settings
from app.services.runners import Control, Job, SubprocessRunner, SystemdRunner


@pytest.fixture
def cfg(tmp_path):
    return Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer="http://i",
        oidc_audience="a",
        notebook_root_template=str(tmp_path / "{username}"),
        systemd_memory_max="1G",
        systemd_cpu_quota="50%",
        systemd_tasks_max=64,
    )


def _nb(tmp_path, *cells, params=None):
    nb = nbformat.v4.new_notebook()
    if params:
        c = nbformat.v4.new_code_cell(params)
        c.metadata["tags"] = ["parameters"]
        nb.cells.append(c)
    nb.cells += [nbformat.v4.new_code_cell(s) for s in cells]
    p = tmp_path / "n.ipynb"
    nbformat.write(nb, str(p))
    return p


def _job(p, timeout=60, **params):
    return Job(
        execution_id=1,
        username="nobody",
        notebook_path=str(p),
        cwd=str(p.parent),
        parameters=params,
        types={},
        timeout_seconds=timeout,
    )


def test_subprocess_runner_success_and_params(cfg, tmp_path):
    p = _nb(tmp_path, "import os\nprint(x, os.getcwd())", params="x = 0")
    out = SubprocessRunner(cfg).run(_job(p, x="it's"), Control())
    assert out.status == "succeeded", out
    text = out.notebook["cells"][-1]["outputs"][0]["text"]
    assert text.strip() == f"it's {tmp_path}"


def test_subprocess_runner_failure(cfg, tmp_path):
    p = _nb(tmp_path, "raise ValueError('boom')")
    out = SubprocessRunner(cfg).run(_job(p), Control())
    assert out.status == "failed"
    assert out.error_detail["ename"] == "ValueError" and "boom" in out.error_message


def test_subprocess_runner_timeout(cfg, tmp_path):
    p = _nb(tmp_path, "import time\ntime.sleep(60)")
    t0 = time.monotonic()
    out = SubprocessRunner(cfg).run(_job(p, timeout=2), Control())
    assert out.status == "timed_out"
    assert time.monotonic() - t0 < 20


def test_subprocess_runner_cancel(cfg, tmp_path):
    p = _nb(tmp_path, "import time\ntime.sleep(60)")
    c = Control()
    threading.Timer(3.0, c.stop.set).start()
    t0 = time.monotonic()
    out = SubprocessRunner(cfg).run(_job(p), c)
    assert out.status == "cancelled"
    assert time.monotonic() - t0 < 15


def test_systemd_command(cfg, tmp_path):
    r = SystemdRunner(cfg)
    job = _job(tmp_path / "n.ipynb", timeout=100)
    argv = r.command(job, unit="exec-api-run-1-abc.service")
    pw = pwd.getpwnam("nobody")
    assert argv[0] == "/usr/bin/systemd-run"
    sep = argv.index("--")
    opts, child = argv[:sep], argv[sep + 1 :]
    assert child[-2:] == ["-m", "app.services.child"]
    for flag in (
        "--wait",
        "--pipe",
        "--collect",
        "--quiet",
        f"--uid={pw.pw_uid}",
        f"--gid={pw.pw_gid}",
        "--unit=exec-api-run-1-abc.service",
        "--slice=exec-api-runs.slice",
        f"--setenv=HOME={pw.pw_dir}",
    ):
        assert flag in opts, flag
    props = {opts[i + 1] for i, a in enumerate(opts) if a == "-p"}
    for prop in (
        "MemoryMax=1G",
        "CPUQuota=50%",
        "TasksMax=64",
        "RuntimeMaxSec=115",
        "KillMode=control-group",
        "NoNewPrivileges=yes",
        f"WorkingDirectory={tmp_path}",
    ):
        assert prop in props, prop
    assert r.stop_command("u.service") == ["/usr/bin/systemctl", "stop", "--no-block", "u.service"]


def test_systemd_reap_stops_every_unit_of_the_orphans(cfg, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: calls.append(argv))
    SystemdRunner(cfg).reap([7, 12])
    assert calls == [
        ["/usr/bin/systemctl", "stop", "--no-block", "exec-api-run-7-*.service"],
        ["/usr/bin/systemctl", "stop", "--no-block", "exec-api-run-12-*.service"],
    ]


def test_systemd_unknown_user_fails_cleanly(cfg, tmp_path):
    job = _job(tmp_path / "n.ipynb")
    job.username = "no-such-user-xyz"
    out = SystemdRunner(cfg).run(job, Control())
    assert out.status == "failed" and "no Unix user" in out.error_message


def test_parse_garbage():
    out = SubprocessRunner.parse(1, b"", b"Traceback: boom")
    assert out.status == "failed" and "boom" in out.error_message
