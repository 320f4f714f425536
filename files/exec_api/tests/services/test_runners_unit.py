"""Runners: the warm runner for real (subprocess runner), the systemd command's shape."""

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
from exec_api.services import runners
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
    r._popen("nobody")
    (argv,) = launched
    pw = pwd.getpwnam("nobody")
    assert argv[0] == "/usr/bin/systemd-run"
    sep = argv.index("--")
    opts, command = argv[:sep], argv[sep + 1 :]
    assert command[-3:] == ["-P", "-m", "exec_api.services.warm"]  # nothing from the home imported
    unit = next(a.split("=", 1)[1] for a in opts if a.startswith("--unit="))
    assert re.fullmatch(r"exec-api-warm-[0-9a-f]{12}\.service", unit)
    for flag in (
        "--wait",
        "--pipe",
        "--collect",
        "--quiet",
        f"--uid={pw.pw_uid}",
        f"--gid={pw.pw_gid}",
        "--slice=exec-api-runs.slice",
        f"--setenv=HOME={pw.pw_dir}",
        "--setenv=EXEC_API_WARM_READY=1",
    ):
        assert flag in opts, flag
    props = {opts[i + 1] for i, a in enumerate(opts) if a == "-p"}
    for prop in (
        "MemoryMax=1G",
        "CPUQuota=50%",
        "TasksMax=64",
        "KillMode=control-group",
        "OOMPolicy=continue",
        f"RuntimeMaxSec={86400 + cfg.max_timeout_seconds + 60}",
        "NoNewPrivileges=yes",
        f"WorkingDirectory={pw.pw_dir}",
        f"BindPaths={pw.pw_dir}",
    ):
        assert prop in props, prop
    assert r.stop_command("u.service") == ["/usr/bin/systemctl", "stop", "--no-block", "u.service"]


def test_systemd_unknown_user_fails_cleanly(cfg, tmp_path):
    job = _job(tmp_path / "n.ipynb")
    job.username = "no-such-user-xyz"
    out = SystemdRunner(cfg).run(job, Control())
    assert out.status == "failed" and "no Unix user" in out.error_message


def test_parse_garbage():
    for doc in (None, "boom", {"status": "evil", "notebook": "x", "error_message": 3}):
        out = SubprocessRunner.parse(doc)
        assert out.status == "failed" and out.notebook is None


# ------------------------------------------------------------------------ warm runners
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


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return {int(c) for c in f.read().split()}
    except FileNotFoundError:  # it ended
        return set()


def _lineage(pid: int) -> list[int]:
    """pid, its parent, its parent's parent... up to (not including) this test's process."""
    out = []
    while pid not in (0, 1, os.getpid()):
        out.append(pid)
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            pid = int(f.read().split(")")[-1].split()[1])
    return out


PIDS = (
    "import os\n"
    "print(os.getpid(), os.getppid(), os.getpgid(0), 'seen' if 'seen' in dir() else '')\n"
    "seen = 1"
)


def _pids(out) -> list[str]:
    return out.notebook["cells"][-1]["outputs"][0]["text"].split()


def test_a_users_next_run_takes_a_kernel_forked_ahead(sub, tmp_path):
    p = _nb(tmp_path, PIDS)
    t0 = time.monotonic()
    assert sub.run(_job(p, user="alice"), Control()).status == "succeeded"
    cold = time.monotonic() - t0
    warm = sub._warm["alice"]
    _wait(lambda: sub.ready_kernels() >= 1)
    time.sleep(1)  # its kernel comes up meanwhile
    ahead = _children(warm.proc.pid)
    t0 = time.monotonic()
    out = sub.run(_job(p, user="alice"), Control())
    took = time.monotonic() - t0
    assert out.status == "succeeded", out
    kernel, run, group, _ = _pids(out) + [""]
    # The kernel's parent is a run process forked before the job came; the run did not wait
    # for a kernel start; kernel and run process share the run's own process group.
    assert int(run) in ahead and group == run, (run, ahead)
    assert took < min(0.5, cold / 2), (took, cold)
    _wait(lambda: _gone(int(kernel)) and _gone(int(run)), 10)


def test_every_run_is_a_fresh_kernel_in_a_fresh_process(sub, tmp_path):
    p = _nb(tmp_path, PIDS)
    seen = []
    for _ in range(3):
        out = sub.run(_job(p, user="alice"), Control())
        assert out.status == "succeeded", out
        seen.append(_pids(out))
    assert all(len(x) == 3 for x in seen), seen  # `seen` was never defined before a run
    assert len({x[0] for x in seen}) == 3 and len({x[1] for x in seen}) == 3, seen


def test_two_users_runs_never_share_a_process(sub, tmp_path):
    p = _nb(tmp_path, PIDS)
    lineages = {}
    for user in ("alice", "bob", "alice", "bob"):
        out = sub.run(_job(p, user=user), Control())
        assert out.status == "succeeded", out
        lineages.setdefault(user, set()).update(_lineage_of(out, sub._warm[user]))
    assert sub._warm["alice"].proc.pid != sub._warm["bob"].proc.pid
    assert not lineages["alice"] & lineages["bob"], lineages


def _lineage_of(out, warm) -> set[int]:
    kernel, run, _group = _pids(out)
    return {int(kernel), int(run), warm.proc.pid}


def test_a_warm_runner_whose_worker_is_gone_kills_its_runs(cfg, tmp_path):
    pidfile = tmp_path / "kernel.pid"
    write_pid = f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))"
    p = _nb(tmp_path, write_pid, "time.sleep(120)")
    warm = subprocess.Popen(
        SubprocessRunner(cfg).warm_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=kernel_env(),
    )
    job = {"notebook": str(p), "cwd": str(tmp_path), "parameters": {}, "types": {}, "timeout": 300}
    warm.stdin.write(json.dumps({"op": "run", "id": 5, "job": job}).encode() + b"\n")
    warm.stdin.flush()
    _wait(lambda: pidfile.exists() and pidfile.read_text().strip())
    kernel = int(pidfile.read_text())
    run = _lineage(kernel)[1]
    assert not _gone(kernel)
    warm.stdin.close()  # what the warm runner sees when its worker is killed with -9
    assert warm.wait(15) == 0
    _wait(lambda: _gone(kernel) and _gone(run), 10)


def test_a_cancel_kills_the_runs_whole_group(sub, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, time\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)"
    )
    p = _nb(tmp_path, code)
    c = Control()
    threading.Thread(
        target=lambda: (_wait(lambda: pidfile.exists() and pidfile.read_text()), c.stop.set())
    ).start()
    out = sub.run(_job(p, user="alice"), c)
    assert out.status == "cancelled"
    _wait(lambda: _gone(int(pidfile.read_text())), 10)


def test_idle_warm_runners_are_let_go(cfg, tmp_path):
    r = SubprocessRunner(cfg.model_copy(update={"ready_idle_seconds": 1}))
    assert r.run(_job(_nb(tmp_path, "1"), user="alice"), Control()).status == "succeeded"
    warm = r._warm["alice"]
    _wait(lambda: r.ready_kernels() == 1)
    ahead = _children(warm.proc.pid)
    time.sleep(1.2)
    r.expire()
    assert r.ready_kernels() == 0 and "alice" not in r._warm
    assert warm.proc.wait(30) == 0
    _wait(lambda: all(_gone(pid) for pid in ahead), 10)
    r.close()


def test_only_the_most_recent_users_keep_an_idle_warm_runner(cfg, tmp_path):
    r = SubprocessRunner(cfg.model_copy(update={"ready_max_users": 1}))
    p = _nb(tmp_path, PIDS)
    assert r.run(_job(p, user="alice"), Control()).status == "succeeded"
    alices = r._warm["alice"]
    out = r.run(_job(p, user="bob"), Control())
    assert out.status == "succeeded"
    assert list(r._warm) == ["bob"]
    assert alices.proc.wait(30) == 0
    r.close()


def test_no_kernels_ahead_when_turned_off(cfg, tmp_path):
    r = SubprocessRunner(cfg.model_copy(update={"ready_per_user": 0}))
    assert r.run(_job(_nb(tmp_path, "1")), Control()).status == "succeeded"
    time.sleep(1)
    assert r.ready_kernels() == 0
    assert not _children(r._warm["nobody"].proc.pid)
    r.close()


def test_a_notebook_on_another_kernelspec_gets_that_kernel(sub, tmp_path, monkeypatch):
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
    p = _nb(tmp_path, "import os\nprint(os.environ.get('WHICH_KERNELSPEC'))")
    nb = nbformat.read(str(p), as_version=4)
    nb.metadata["kernelspec"] = {"name": "other", "display_name": "Other", "language": "python"}
    nbformat.write(nb, str(p))
    job = _job(p, user="carol")  # a warm runner started with JUPYTER_PATH set
    job.kernel_name = "other"
    out = sub.run(job, Control())
    assert out.status == "succeeded", out
    assert out.notebook["cells"][-1]["outputs"][0]["text"].strip() == "other"


def test_a_run_whose_kernel_died_while_waiting_still_runs(sub, tmp_path):
    p = _nb(tmp_path, "print(6 * 7)")
    assert sub.run(_job(p, user="alice"), Control()).status == "succeeded"
    warm = sub._warm["alice"]
    # A run process forked ahead, with its kernel (not the last run's, which may still be ending).
    _wait(lambda: any(_children(c) for c in _children(warm.proc.pid)))
    ahead = next(c for c in _children(warm.proc.pid) if _children(c))
    time.sleep(1)
    for kernel in _children(ahead):
        os.kill(kernel, signal.SIGKILL)
    out = sub.run(_job(p, user="alice"), Control())
    assert out.status == "succeeded", out
    assert out.notebook["cells"][-1]["outputs"][0]["text"].strip() == "42"


# ------------------------------------------------------------------ a hostile warm runner
# The warm runner is its user's own process: they can stop it, or (through their runs) write
# into what it answers. Nothing of that may hold or crash a worker's thread.
def test_a_warm_runner_that_stops_reading_does_not_hold_the_worker(sub, tmp_path, monkeypatch):
    monkeypatch.setattr(runners, "SEND_SECONDS", 1.0)
    p = _nb(tmp_path, "print(1)", params="x = 0")
    assert sub.run(_job(p, user="alice"), Control()).status == "succeeded"
    warm = sub._warm["alice"]
    os.kill(warm.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    out = sub.run(_job(p, user="alice", x="y" * 1_000_000), Control())  # more than a pipe holds
    assert out.status == "failed" and "took no job within 1 s" in out.error_message, out
    assert time.monotonic() - t0 < 5
    assert warm.proc.wait(20) is not None  # stopped whole
    assert sub.run(_job(p, user="alice"), Control()).status == "succeeded"  # a new one serves
    assert sub._warm["alice"] is not warm


def test_a_cancel_nobody_confirms_stops_the_warm_runner(sub, tmp_path, monkeypatch):
    monkeypatch.setattr(runners, "CANCEL_SECONDS", 1.0)
    pidfile = tmp_path / "kernel.pid"
    p = _nb(
        tmp_path,
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)",
    )
    c = Control()

    def stop_then_cancel():
        _wait(lambda: pidfile.exists() and pidfile.read_text())
        os.kill(sub._warm["alice"].proc.pid, signal.SIGSTOP)
        c.stop.set()

    threading.Thread(target=stop_then_cancel).start()
    out = sub.run(_job(p, user="alice"), c)
    assert out.status == "cancelled"
    kernel = int(pidfile.read_text())
    _wait(lambda: _gone(kernel), 20)  # the run dies with its warm runner (PR_SET_PDEATHSIG)


class _Liar(SubprocessRunner):
    """A warm runner that answers the way a user's own process could: `line` (with {id} for
    the run's id), then the honest answer."""

    def __init__(self, cfg, line: str) -> None:
        super().__init__(cfg)
        self.line = line

    def warm_command(self) -> list[str]:
        code = (
            "import json, sys\n"
            "req = json.loads(sys.stdin.readline())\n"
            f"sys.stdout.write({self.line!r}.replace('{{id}}', str(req['id'])) + '\\n')\n"
            "sys.stdout.write(json.dumps({'id': req['id'], 'result': {'status': 'succeeded', "
            "'notebook': {'honest': 1}}}) + '\\n')\n"
            "sys.stdout.flush()\n"
            "sys.stdin.read()\n"
        )
        return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    ("line", "status", "says"),
    [
        # nested past Python's recursion limit: not parsed, the run fails, the thread lives
        ('{"id": {id}, "result": ' + "[" * 5000 + "]" * 5000 + "}", "failed", "not a notebook"),
        # a second id in the same line (the last would win): the runner is not trusted further
        ('{"id": {id}, "result": {}, "id": 999}', "failed", "not framed"),
        # answers for runs nobody waits for are dropped unread; then the honest answer
        ('{"id": 999, "result": {"status": "succeeded"}}', "succeeded", None),
        ('{"ready": 1e400}', "succeeded", None),
        ("garbage", "succeeded", None),
    ],
)
def test_what_a_warm_runner_answers_is_checked(cfg, tmp_path, line, status, says):
    r = _Liar(cfg, line)
    out = r.run(_job(_nb(tmp_path, "1"), user="alice"), Control())
    assert out.status == status, out
    if says:
        assert says in (out.error_message or ""), out
    else:
        assert out.notebook == {"honest": 1}
    r.close()


def test_a_run_reports_the_cpu_and_memory_it_used(sub, tmp_path):
    """A run that holds 200 MiB and burns a second of CPU says so (the kernel's rusage); a
    tiny run says much less."""
    burn = "t = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    hold = "x = bytearray(200 * 2**20)\nx[::4096] = b'1' * len(x[::4096])"
    hog = _nb(tmp_path, "import time\n" + hold + "\n" + burn, name="hog.ipynb")
    tiny = _nb(tmp_path, "print(1)", name="tiny.ipynb")
    big, small = sub.run(_job(hog), Control()), sub.run(_job(tiny), Control())
    assert big.status == small.status == "succeeded", (big.error_message, small.error_message)
    assert big.cpu_seconds is not None and big.cpu_seconds >= 1.0, big.cpu_seconds
    assert big.peak_memory_bytes is not None and big.peak_memory_bytes >= 200 * 2**20, (
        big.peak_memory_bytes
    )
    assert (
        small.peak_memory_bytes is not None
        and small.peak_memory_bytes < big.peak_memory_bytes - 150 * 2**20
    )
    assert small.cpu_seconds is not None and small.cpu_seconds < big.cpu_seconds - 0.5
