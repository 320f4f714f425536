"""A user's warm runner: one long-lived process per user that forks a fresh run for each job.

The subprocess and systemd runners (:mod:`exec_api.services.runners`) start one of these per
user, as that user (systemd: in a unit of the user's own, ``exec-api-warm-<hex>.service``,
with the run limits and sandbox), and keep it while the user runs notebooks.  It imports
what a run needs once (ipykernel, IPython, papermill, nbclient: about 1.5 CPU-s), then:

* each run is a **run process** forked from it, in a session and process group of its own,
  which forks a **fresh kernel** (ipykernel from the already imported modules, ipc sockets in
  a private 0700 directory) and runs the job with papermill (:func:`exec_api.services.child.run`);
  nothing of a run survives it: when the run ends, is cancelled or passes its deadline, its
  whole process group is killed (SIGKILL), and then every other process of the unit that
  descends from no live run process (one that left its group with ``setsid``: this process is
  the subreaper of all of them);
* run processes are forked **ahead** (kernel started, waiting for their job):
  ``EXEC_API_WARM_READY`` (default 1) plus one for each run in flight beyond the first, at
  most ``READY_CAP``, so a user's concurrent runs find kernels ready;
* this process never runs user code and never imports a notebook: forks are taken from a
  clean state, and a run cannot see another (each run is its own process; they share only
  the user, who owns all of them).

Protocol (JSON lines on stdin/stdout, spoken only by the runner):

* in  ``{"op": "run", "id": N, "job": {...}}`` (the job as :func:`child.run` takes it)
  out ``{"id": N, "result": {"status": ..., "notebook": ..., "error": ..., "error_message": ...}}``
* in  ``{"op": "cancel", "id": N}``: the run is killed; out ``{"id": N, "cancelled": true}``.
* out ``{"ready": n}`` whenever the number of runs waiting with a kernel up changes.
* end of stdin (the worker ended, even with ``kill -9``, or it let this user's runner go when
  idle) and SIGTERM: every run is killed and this process exits.

The answers are framed by this process: a run (the user's own code can write to its result
pipe) cannot forge an answer for another run, and an answer larger than the output cap plus
:data:`ANSWER_ROOM` fails its run without being read further.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from exec_api.services.zygote import _kill_group

READY_CAP = 4  # run processes waiting with a kernel up, at most
ANSWER_ROOM = 1024 * 1024  # beyond the output cap: status, error, JSON framing
STDERR_TAIL = 16 * 1024  # of a run process's stderr, kept for a run that ends without answer
JOB_MAX = 8 * 1024 * 1024  # one job line (parameters are validated and small)
GRACE = 10.0  # past a run's own deadline (which papermill's engine enforces), it is killed
# The unit this process sweeps when a run ends; outside one (the subprocess runner), no sweep.
UNIT_RE = re.compile(r"/exec-api-warm-[0-9a-f]{12}\.service$")


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _own_cgroup_procs() -> str | None:
    """The cgroup.procs file of this process's unit, when it is a warm runner's unit."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not UNIT_RE.search(path):
            continue
        base = "/sys/fs/cgroup" if controllers == "" else "/sys/fs/cgroup/systemd"
        if controllers in ("", "name=systemd"):
            procs = f"{base}{path}/cgroup.procs"
            if os.path.exists(procs):
                return procs
    return None


def _failure(status: str, message: str) -> dict[str, Any]:
    return {"status": status, "notebook": None, "error": None, "error_message": message}


@dataclass
class Slot:
    """A run process: forked ahead (``id`` None) or running the job ``id``."""

    pid: int
    job_w: int
    res_r: int
    err_r: int
    id: int | None = None
    job: bytes = b""  # still to write to job_w
    answer: bytearray = field(default_factory=bytearray)
    err: bytes = b""
    cap: int | None = None
    over: bool = False
    deadline: float = 0.0
    timeout: float = 0.0
    eof: set[int] = field(default_factory=set)

    def fds(self) -> list[int]:
        return [self.job_w, self.res_r, self.err_r]


def _run_process(job_r: int, res_w: int, err_w: int, inherited: list[int]) -> None:
    # pragma: no cover - the forked child
    """In the forked run process: start a kernel, wait for the job, run it, answer, exit."""
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        _close(*inherited)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(err_w, 2)
        _close(devnull, err_w)
        _die_with_parent()
        # Only now (the worker's pipes and other runs' are closed): the run and its kernel are
        # the user's, as any process of theirs; and the OOM killer takes them before this one.
        _dumpable(True)
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from exec_api.services.child import ForkedKernel, emit, run

        k = ForkedKernel((job_r, res_w))
        k.start()
        line = b""
        while not line.endswith(b"\n") and len(line) <= JOB_MAX:
            chunk = os.read(job_r, 65536)
            if not chunk:
                break
            line += chunk
        if not line.endswith(b"\n"):  # no job: not wanted any more
            k.cleanup()
            os._exit(0)
        k.alive_or_restarted()
        ctx: list[Any] = []
        try:
            doc = run(json.loads(line), k, ctx)
        finally:
            for r in ctx:
                r.kill("ended")
            k.cleanup()
        doc["usage"] = _usage()
        with os.fdopen(res_w, "wb") as out:
            emit(doc, out)
    except BaseException:  # noqa: BLE001 - never return into the server's loop
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _usage() -> dict[str, float | int]:
    """What the run used, from the kernel's rusage: this run process and the kernels it forked
    or started (each reaped first, else the kernel does not count), CPU time (user + system)
    and the peak resident memory of the largest of them (shared pages counted, as RSS does).
    Processes a kernel left running past its end are killed with its group and not counted."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.01)
    kids, me = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        resource.getrusage(resource.RUSAGE_SELF),
    )
    cpu = kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime
    return {
        "cpu_seconds": round(cpu, 3),
        "peak_memory_bytes": max(kids.ru_maxrss, me.ru_maxrss) * 1024,
    }


class Server:
    def __init__(self, ready: int) -> None:
        self.base_ready = max(0, ready)
        self.sel = selectors.DefaultSelector()
        self.ready: deque[Slot] = deque()
        self.running: dict[int, Slot] = {}
        self.by_fd: dict[int, Slot] = {}
        self.inbuf = b""
        self.out = sys.stdout.buffer
        self.procs = _own_cgroup_procs()
        self.ready_said = -1
        self.failed_ahead = 0
        self.wake = (-1, -1)
        self.signals: dict[int, int] = {}  # run processes a signal ended, for the message

    # ------------------------------------------------------------------- run processes
    def _fork(self) -> Slot:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        err_r, err_w = os.pipe()
        inherited = [self.sel.fileno(), *self.wake, job_w, res_r, err_r, *self.by_fd]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_process(job_r, res_w, err_w, inherited)
        _close(job_r, res_w, err_w)
        s = Slot(pid, job_w, res_r, err_r)
        for fd in (res_r, err_r):
            os.set_blocking(fd, False)
            self.by_fd[fd] = s
            self.sel.register(fd, selectors.EVENT_READ)
        os.set_blocking(job_w, False)
        self.by_fd[job_w] = s
        return s

    def _end(self, s: Slot) -> None:
        """Kill a run process's group, forget it, and sweep what left its group."""
        _kill_group(s.pid)
        for fd in s.fds():
            if fd in self.by_fd:
                del self.by_fd[fd]
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(fd)
                _close(fd)
        if s.id is not None:
            self.running.pop(s.id, None)
        with contextlib.suppress(ValueError):
            self.ready.remove(s)
        self._sweep()

    def _sweep(self) -> None:
        """Kill every process of this unit that no live run started: its ancestors, up to this
        process (the subreaper of all of them), include no live run process.  Repeated until a
        pass finds nothing, so that a process forking away during a pass is caught too."""
        if self.procs is None:
            return
        for _ in range(10):
            try:
                with open(self.procs, encoding="ascii") as f:
                    pids = [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                return
            live = {s.pid for s in self.ready} | {s.pid for s in self.running.values()}
            me = os.getpid()
            killed = 0
            for pid in pids:
                if pid != me and not self._descends(pid, live, me):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
            if not killed:
                return

    @staticmethod
    def _descends(pid: int, live: set[int], me: int) -> bool:
        """Whether ``pid`` is a live run process or one of its descendants."""
        for _ in range(64):
            if pid in live:
                return True
            if pid in (me, 0, 1):
                return False
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return False  # gone: nothing to kill
        return False

    def _refill(self) -> None:
        if self.base_ready == 0 or self.failed_ahead >= 3:
            return  # kernels that cannot start: cold runs say why
        # One more for each run in flight beyond the first: a user's concurrent runs each find one.
        want = min(READY_CAP, self.base_ready + max(0, len(self.running) - 1))
        while len(self.ready) < want:
            try:
                self.ready.append(self._fork())
            except OSError:  # no more tasks or files in the user's limits: runs fork when they come
                self.failed_ahead += 1
                break
        self._say_ready()

    def _say_ready(self) -> None:
        if len(self.ready) != self.ready_said:
            self.ready_said = len(self.ready)
            self._send({"ready": self.ready_said})

    def _send(self, doc: dict[str, Any]) -> None:
        self.out.write(json.dumps(doc).encode() + b"\n")
        self.out.flush()

    def _answer(self, s: Slot, result: dict[str, Any] | None = None, raw: bytes = b"") -> None:
        if s.id is None:
            return
        if result is not None:
            self._send({"id": s.id, "result": result})
        else:
            self.out.write(b'{"id": %d, "result": ' % s.id + raw + b"}\n")
            self.out.flush()

    def _fail(self, s: Slot, status: str, message: str) -> None:
        self._answer(
            s, {"status": status, "notebook": None, "error": None, "error_message": message}
        )

    # ------------------------------------------------------------------------ jobs
    def _job(self, req: dict[str, Any]) -> None:
        op, rid = req.get("op"), req.get("id")
        if not isinstance(rid, int):
            return
        if op == "cancel":
            if rid in self.running:
                s = self.running[rid]
                s.id = None  # no answer but this one: the worker has its own
                self.running.pop(rid, None)
                self._end(s)
            self._send({"id": rid, "cancelled": True})  # without it, the worker stops the unit
            return
        if op != "run" or rid in self.running:
            return
        job = req.get("job") or {}
        while self.ready:
            s = self.ready.popleft()
            if not s.eof:  # started ahead and still waiting
                break
            self._end(s)
        else:
            try:
                s = self._fork()
            except OSError as e:
                why = f"cannot start the run: {e} (the user's runs share TasksMax and MemoryMax)"
                self._send({"id": rid, "result": _failure("failed", why)})
                return
        s.id = rid
        s.timeout = float(job.get("timeout") or 600)
        s.deadline = time.monotonic() + s.timeout + GRACE
        cap = job.get("max_output_bytes")
        s.cap = None if cap is None else int(cap) + ANSWER_ROOM
        s.job = json.dumps(job).encode() + b"\n"
        self.running[rid] = s
        self.sel.register(s.job_w, selectors.EVENT_WRITE)
        self._write_job(s)
        self._refill()

    def _write_job(self, s: Slot) -> None:
        if s.job_w < 0:
            return
        try:
            n = os.write(s.job_w, s.job)
        except BlockingIOError:
            return
        except OSError:  # the run process is gone: its answer (or its absence) tells
            n = len(s.job)
        s.job = s.job[n:]
        if not s.job:
            self.sel.unregister(s.job_w)
            del self.by_fd[s.job_w]
            _close(s.job_w)
            s.job_w = -1

    def _read(self, fd: int) -> None:
        s = self.by_fd[fd]
        try:
            chunk = os.read(fd, 1024 * 1024)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            s.eof.add(fd)
            self.sel.unregister(fd)
            del self.by_fd[fd]
            _close(fd)
            if fd == s.res_r:
                s.res_r = -1
                self._finished(s)
            else:
                s.err_r = -1
            return
        if fd == s.err_r:
            s.err = (s.err + chunk)[-STDERR_TAIL:]
        elif s.id is None:  # an answer before any job: not from this runner's code
            self._end(s)
        elif not s.over:
            s.answer += chunk
            if s.cap is not None and len(s.answer) > s.cap:
                s.over = True
                if s.id is not None:  # the runner words it (the output cap's own message)
                    self._send({"id": s.id, "over": len(s.answer) - ANSWER_ROOM})
                    self.running.pop(s.id, None)
                    s.id = None
                s.answer = bytearray()
                self._end(s)

    def _finished(self, s: Slot) -> None:
        """A run process closed its answer pipe (it answered, or it died)."""
        if s.id is None:  # started ahead, died before any job
            self.failed_ahead += 1
            self._end(s)
            self._refill()
            return
        self.failed_ahead = 0
        raw = bytes(s.answer).strip()
        if raw and b"\n" not in raw and raw.startswith(b"{") and raw.endswith(b"}"):
            self._answer(s, raw=raw)
        else:
            with contextlib.suppress(OSError, ChildProcessError):
                pid, status = os.waitpid(s.pid, 0)
                if os.WIFSIGNALED(status):
                    self.signals[pid] = os.WTERMSIG(status)
            err = s.err.decode("utf-8", "replace")[-2000:].strip() or "no message"
            sig = self.signals.pop(s.pid, None)
            if sig is not None:
                oom = (
                    " (out of memory? the user's runs share MemoryMax)"
                    if sig == signal.SIGKILL
                    else ""
                )
                err = f"killed by signal {sig}{oom}; {err}"
            self._fail(s, "failed", f"the run's process ended without an answer: {err}")
        self._end(s)

    def _timeouts(self) -> float:
        now = time.monotonic()
        for s in list(self.running.values()):
            if now >= s.deadline:
                self._fail(s, "timed_out", f"the run passed its timeout of {s.timeout:g} s; killed")
                self._end(s)
        waits = [s.deadline - now for s in self.running.values()]
        return max(0.05, min(waits)) if waits else 5.0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSIGNALED(status) and len(self.signals) < 1000:
                self.signals[pid] = os.WTERMSIG(status)

    # ------------------------------------------------------------------------ loop
    def serve(self) -> None:
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ)
        # SIGCHLD wakes the loop (through this pipe) so that ended run processes are reaped.
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(wake_r, selectors.EVENT_READ)
        self.wake = (wake_r, wake_w)
        self._refill()
        while True:
            for key, events in self.sel.select(self._timeouts()):
                fd = key.fd
                if fd == 0:
                    if not self._stdin():
                        return
                elif fd == self.wake[0]:
                    with contextlib.suppress(OSError):
                        os.read(fd, 4096)
                elif fd not in self.by_fd:
                    continue  # its run ended earlier in this batch
                elif events & selectors.EVENT_WRITE:
                    self._write_job(self.by_fd[fd])
                else:
                    self._read(fd)
            self._reap()

    def _stdin(self) -> bool:
        try:
            chunk = os.read(0, 1024 * 1024)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.inbuf += chunk
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self._job(json.loads(line))
        if len(self.inbuf) > JOB_MAX:
            self.inbuf = b""
        self._say_ready()
        return True

    def close(self) -> None:
        for s in [*self.ready, *self.running.values()]:
            _kill_group(s.pid)
        for s in [*self.ready, *self.running.values()]:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(s.pid, 0)
        self.ready.clear()
        self.running.clear()
        self._sweep()


def _prctl(option: int, value: int) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: off, the user's own code cannot open this process's /proc files (its
    pipes, its memory) nor ptrace it, as it could any process of its user."""
    _prctl(4, int(on))


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: SIGKILL when the parent ends (a run process when its warm runner is
    killed, a kernel when its run process is), whatever killed it."""
    _prctl(1, signal.SIGKILL)


def _subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: what a run leaves behind (its parents gone) becomes this
    process's child, so the sweep knows it belongs to no live run."""
    _prctl(36, 1)


def main() -> None:
    _dumpable(False)
    _subreaper()
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    from exec_api.services.child import warm_up

    warm_up()
    server = Server(int(os.environ.get("EXEC_API_WARM_READY") or 1))

    def _term(*_: Any) -> None:
        server.close()
        os._exit(143)

    signal.signal(signal.SIGTERM, _term)
    try:
        server.serve()
    finally:
        server.close()
    os._exit(0)


if __name__ == "__main__":
    main()
