"""Runners: the child protocol for real (subprocess runner), the systemd command's shape."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time

import nbformat
import pytest

from exec_api.core.config import Settings
from exec_api.services.kernels import kernel_env
from exec_api.services.runners import Control, Job, SubprocessRunner, SystemdRunner


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


@pytest.fixture
def sub(cfg):
    r = SubprocessRunner(cfg)
    r.start()
    yield r
    r.close()


def _nb(tmp_path, *cells, params=None, name="n.ipynb"):
    nb = nbformat.v4.new_notebook()
    if params:
        c = nbformat.v4.new_code_cell(params)
        c.metadata["tags"] = ["parameters"]
        nb.cells.append(c)
    nb.cells += [nbformat.v4.new_code_cell(s) for s in cells]
    p = tmp_path / name
    nbformat.write(nb, str(p))
    return p


def _job(p, timeout=60, user="nobody", **params):
    return Job(
        execution_id=1,
        username=user,
        notebook_path=str(p),
        cwd=str(p.parent),
        parameters=params,
        types={},
        timeout_seconds=timeout,
    )


def test_subprocess_runner_success_and_params(sub, tmp_path):
    p = _nb(tmp_path, "import os\nprint(x, os.getcwd())", params="x = 0")
    out = sub.run(_job(p, x="it's"), Control())
    assert out.status == "succeeded", out
    text = out.notebook["cells"][-1]["outputs"][0]["text"]
    assert text.strip() == f"it's {tmp_path}"


def test_subprocess_runner_failure(sub, tmp_path):
    p = _nb(tmp_path, "raise ValueError('boom')")
    out = sub.run(_job(p), Control())
    assert out.status == "failed"
    assert out.error_detail["ename"] == "ValueError" and "boom" in out.error_message


def test_subprocess_runner_timeout(sub, tmp_path):
    p = _nb(tmp_path, "import time\ntime.sleep(60)")
    t0 = time.monotonic()
    out = sub.run(_job(p, timeout=2), Control())
    assert out.status == "timed_out"
    assert time.monotonic() - t0 < 20


def test_subprocess_runner_cancel(sub, tmp_path):
    p = _nb(tmp_path, "import time\ntime.sleep(60)")
    c = Control()
    threading.Timer(3.0, c.stop.set).start()
    t0 = time.monotonic()
    out = sub.run(_job(p), c)
    assert out.status == "cancelled"
    assert time.monotonic() - t0 < 15


@pytest.fixture
def launched(monkeypatch):
    """The argv of every child the runner starts (nothing is started)."""
    argvs: list[list[str]] = []

    class FakePopen:
        def __init__(self, argv, **kw):
            argvs.append(argv)

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    return argvs


def test_systemd_command(cfg, tmp_path, launched):
    r = SystemdRunner(cfg)
    job = _job(tmp_path / "n.ipynb", timeout=100)
    r._spawn(job.username, job)
    (argv,) = launched
    pw = pwd.getpwnam("nobody")
    assert argv[0] == "/usr/bin/systemd-run"
    sep = argv.index("--")
    opts, child = argv[:sep], argv[sep + 1 :]
    assert child[-2:] == ["-m", "exec_api.services.child"]
    unit = next(a.split("=", 1)[1] for a in opts if a.startswith("--unit="))
    assert re.fullmatch(r"exec-api-run-1-[0-9a-f]{6}\.service", unit)
    for flag in (
        "--wait",
        "--pipe",
        "--collect",
        "--quiet",
        f"--uid={pw.pw_uid}",
        f"--gid={pw.pw_gid}",
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


# ------------------------------------------------------------------------ ready runs
def _wait(pred, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _child(cfg) -> subprocess.Popen[bytes]:
    """The child as a runner starts it, without the runner around it."""
    return subprocess.Popen(
        SubprocessRunner(cfg).child_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=kernel_env(),
    )


def test_a_users_next_run_takes_the_child_started_ahead(sub, tmp_path):
    p = _nb(tmp_path, "import os\nprint(os.getppid())")
    t0 = time.monotonic()
    assert sub.run(_job(p, user="alice"), Control()).status == "succeeded"
    cold = time.monotonic() - t0
    assert sub.ready_kernels() == 1
    ahead = sub._ready["alice", "python3"][0]
    time.sleep(6)  # its kernel comes up meanwhile
    t0 = time.monotonic()
    out = sub.run(_job(p, user="alice"), Control())
    took = time.monotonic() - t0
    assert out.status == "succeeded", out
    # The kernel's parent is the child started ahead; the run did not wait for a kernel start.
    assert int(out.notebook["cells"][-1]["outputs"][0]["text"]) == ahead.proc.pid
    assert took < min(1.0, cold / 2), (took, cold)
    assert ahead.proc.wait(10) == 0
    assert sub.ready_kernels() == 1  # and another one is on its way for alice's next run
    assert sub._ready["alice", "python3"][0] is not ahead


def test_ready_children_are_kept_per_kernelspec(sub, tmp_path, monkeypatch):
    """A notebook on another kernelspec gets its kernel from that spec, and its user's next
    run of it a child started ahead with that kernel (not the python3 one)."""
    spec = tmp_path / "share" / "jupyter" / "kernels" / "other"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Other",
                "language": "python",
                "env": {"WHICH_KERNELSPEC": "other"},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    p = _nb(tmp_path, "import os\nprint(os.getppid(), os.environ.get('WHICH_KERNELSPEC'))")
    nb = nbformat.read(str(p), as_version=4)
    nb.metadata["kernelspec"] = {"name": "other", "display_name": "Other", "language": "python"}
    nbformat.write(nb, str(p))
    job = _job(p, user="alice")
    job.kernel_name = "other"
    out = sub.run(job, Control())
    assert out.status == "succeeded", out
    assert out.notebook["cells"][-1]["outputs"][0]["text"].split()[1] == "other"
    assert list(sub._ready) == [("alice", "other")]
    ahead = sub._ready["alice", "other"][0]
    time.sleep(5)  # its kernel comes up meanwhile
    out = sub.run(job, Control())
    pid, which = out.notebook["cells"][-1]["outputs"][0]["text"].split()
    assert (int(pid), which) == (ahead.proc.pid, "other"), out.notebook["cells"][-1]


def test_a_child_whose_runner_is_gone_kills_its_kernel(cfg, tmp_path):
    pidfile = tmp_path / "kernel.pid"
    write_pid = f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))"
    p = _nb(tmp_path, write_pid, "time.sleep(120)")
    child = _child(cfg)
    job = {"notebook": str(p), "cwd": str(tmp_path), "parameters": {}, "types": {}, "timeout": 300}
    child.stdin.write(json.dumps(job).encode() + b"\n")
    child.stdin.flush()
    _wait(lambda: pidfile.exists() and pidfile.read_text().strip())
    kernel = int(pidfile.read_text())
    assert not _gone(kernel)
    child.stdin.close()  # what the child sees when its worker is killed with -9
    assert child.wait(15) == 143
    _wait(lambda: _gone(kernel), 10)


def test_ready_children_nobody_takes_are_ended(cfg, tmp_path):
    r = SubprocessRunner(cfg.model_copy(update={"ready_idle_seconds": 1}))
    assert r.run(_job(_nb(tmp_path, "1"), user="alice"), Control()).status == "succeeded"
    ahead = r._ready["alice", "python3"][0]
    time.sleep(1.2)
    r.expire()
    assert r.ready_kernels() == 0 and ("alice", "python3") not in r._ready
    assert ahead.proc.wait(30) == 0
    r.close()


def test_a_ready_child_serves_only_its_own_user(cfg, tmp_path):
    # ready_max_users 1: bob's run also ends alice's ready child (least recent user first).
    r = SubprocessRunner(cfg.model_copy(update={"ready_max_users": 1}))
    p = _nb(tmp_path, "import os\nprint(os.getppid())")
    assert r.run(_job(p, user="alice"), Control()).status == "succeeded"
    alices = r._ready["alice", "python3"][0]
    time.sleep(3)
    out = r.run(_job(p, user="bob"), Control())
    assert out.status == "succeeded"
    assert int(out.notebook["cells"][-1]["outputs"][0]["text"]) != alices.proc.pid
    assert list(r._ready) == [("bob", "python3")]
    assert alices.proc.wait(30) == 0
    r.close()


def test_no_ready_children_when_turned_off(cfg, tmp_path):
    r = SubprocessRunner(cfg.model_copy(update={"ready_per_user": 0}))
    assert r.run(_job(_nb(tmp_path, "1")), Control()).status == "succeeded"
    assert r.ready_kernels() == 0 and not r._ready


def test_systemd_ready_unit(cfg, tmp_path, launched):
    cfg = cfg.model_copy(update={"ready_idle_seconds": 300, "max_timeout_seconds": 900})
    r = SystemdRunner(cfg)
    r._refill("nobody")
    assert r.ready_kernels() == 1
    (argv,) = launched
    pw = pwd.getpwnam("nobody")
    unit = next(a.split("=", 1)[1] for a in argv if a.startswith("--unit="))
    assert re.fullmatch(r"exec-api-ready-[0-9a-f]{12}\.service", unit)
    props = {argv[i + 1] for i, a in enumerate(argv) if a == "-p"}
    assert f"RuntimeMaxSec={300 + 900 + 60}" in props
    assert f"WorkingDirectory={pw.pw_dir}" in props
    assert {"MemoryMax=1G", "CPUQuota=50%", "TasksMax=64", "KillMode=control-group"} <= props
    assert f"--uid={pw.pw_uid}" in argv


def test_a_ready_child_whose_kernel_died_while_waiting_starts_another(cfg, tmp_path):
    p = _nb(tmp_path, "print(6 * 7)")
    child = _child(cfg)
    kids = f"/proc/{child.pid}/task/{child.pid}/children"
    _wait(lambda: open(kids).read().split())
    (first,) = map(int, open(kids).read().split())
    time.sleep(3)  # waiting for its job, kernel up
    os.kill(first, signal.SIGKILL)
    _wait(lambda: _gone(first))
    job = {"notebook": str(p), "cwd": str(tmp_path), "parameters": {}, "types": {}, "timeout": 60}
    child.stdin.write(json.dumps(job).encode() + b"\n")  # and stdin stays open: the protocol
    child.stdin.flush()
    out = child.stdout.read()
    assert child.wait(10) == 0
    doc = json.loads(out.decode().strip().splitlines()[-1])
    assert doc["status"] == "succeeded", doc
    assert doc["notebook"]["cells"][-1]["outputs"][0]["text"].strip() == "42"
