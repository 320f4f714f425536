"""Runners: where and as whom a notebook runs.

* ``local``      in the worker process, on a pre-started kernel from the zygote pool
                 (runs as the service user; for tests and development).
* ``subprocess`` a warm runner per user (``python -m exec_api.services.warm``), a child of the
                 worker running as the service user; no systemd needed.
* ``systemd``    the same warm runner, started by ``systemd-run`` as the notebook owner's Unix
                 user in a transient unit with memory/CPU/task limits, the sandbox below and
                 ``KillMode=control-group``.

The warm runner forks one run process per run, each with a fresh kernel; see
:mod:`exec_api.services.warm` for what it does and its protocol.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import nbformat

from exec_api.core.config import Settings
from exec_api.services.engine import DEFAULT_KERNEL, OutputTooLarge
from exec_api.services.kernels import KernelPool, KernelStartError, kernel_env
from exec_api.services.warm import ANSWER_ROOM, READY_CAP

log = logging.getLogger(__name__)


@dataclass
class Job:
    execution_id: int
    username: str
    notebook_path: str  # absolute, confinement already checked
    cwd: str
    parameters: dict[str, Any]
    types: dict[str, str]
    timeout_seconds: int
    max_output_bytes: int | None = None
    kernel_name: str = DEFAULT_KERNEL  # the notebook's kernelspec (papermill's rule)
    output_path: str = ""  # where the worker will write the output (papermill's metadata)
    report_mode: bool = False


@dataclass
class Outcome:
    status: str  # succeeded | failed | timed_out | cancelled
    notebook: dict[str, Any] | None = None
    error_message: str | None = None
    error_detail: dict[str, Any] | None = None
    # From the run's own process (warm runners: exec_api.services.warm._usage); None where the
    # runner cannot tell (the in-process local runner's pooled kernels), never a guess.
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None


@dataclass
class Control:
    """Per-run control handed to the runner: ``stop`` is set on cancel."""

    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = "cancelled"


class Runner(Protocol):
    name: str

    def start(self) -> None: ...

    def run(self, job: Job, control: Control) -> Outcome: ...

    def close(self) -> None: ...

    def ready_kernels(self) -> int: ...

    def reap(self, execution_ids: list[int]) -> None:
        """Stop whatever still runs for executions recovered as orphans (a crashed worker's)."""


def error_text(err: dict[str, Any] | None) -> str | None:
    if not err:
        return None
    cell = err.get("cell_index")
    where = f" in cell {cell}" if cell is not None else ""
    return f"{err.get('ename', 'Error')}{where}: {err.get('evalue', '')}"


# What of a warm runner's stderr is kept (the end, for the message when it ends).
STDERR_TAIL = 64 * 1024


# ----------------------------------------------------------------------------- local
class LocalRunner:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.pool = KernelPool(size=settings.pool_size)

    def start(self) -> None:
        self.pool.start()

    def ready_kernels(self) -> int:
        return self.pool.ready_count()

    def run(self, job: Job, control: Control) -> Outcome:
        from exec_api.services.engine import Run, ipc_kernel_manager, run_notebook

        try:
            nb = nbformat.read(job.notebook_path, as_version=4)
        except (OSError, ValueError) as e:
            return Outcome("failed", error_message=f"cannot read notebook: {e}")
        ready = None
        if job.kernel_name == DEFAULT_KERNEL:  # the pool's kernels are this Python's ipykernel
            try:
                ready = self.pool.acquire(timeout=job.timeout_seconds)
            except KernelStartError as e:
                return Outcome("failed", error_message=str(e))
        r = Run(
            ready=ready,
            cwd=job.cwd,
            deadline=time.monotonic() + job.timeout_seconds,
            timeout_seconds=job.timeout_seconds,
            max_output_bytes=job.max_output_bytes,
            # a kernel of another kernelspec talks over ipc in the pool's private directory too
            kernel_manager_class=ipc_kernel_manager(self.pool.sockdir),
        )
        done = threading.Event()

        def _watch() -> None:  # a cancel kills the kernel; nbclient sees it within a second
            while not done.wait(0.05):
                if control.stop.is_set():
                    r.kill(control.reason)
                    return

        watcher = threading.Thread(target=_watch, name=f"run-{job.execution_id}", daemon=True)
        watcher.start()
        try:
            res = run_notebook(
                nb,
                r,
                parameters=job.parameters,
                types=job.types,
                input_path=job.notebook_path,
                output_path=job.output_path,
                report_mode=job.report_mode,
            )
        finally:
            done.set()
            r.kill("ended")
            if r.kc is not None:
                with contextlib.suppress(Exception):
                    r.kc.stop_channels()
            if ready is not None:
                ready.close()
        return Outcome(
            res.status,
            notebook=res.notebook,
            error_message=res.message or error_text(res.error),
            error_detail=res.error,
        )

    def close(self) -> None:
        self.pool.close()

    def reap(self, execution_ids: list[int]) -> None:
        return None  # its kernels are children of the worker's process and end with it


# ------------------------------------------------------------------------ subprocess
@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    doc: dict[str, Any] | None = None


# A warm runner's lines, framed by it: an answer for one run (only its id is read before the
# run is known to be waiting), or how many run processes wait with a kernel up.
ANSWER_RE = re.compile(rb'^\{"id": ([0-9]{1,18}), "(result|over|cancelled)": ')
READY_RE = re.compile(rb'^\{"ready": ([0-9]{1,2})\}\n$')
# A line of JSON with more containers than one in 8 bytes is not a notebook; parsed, such lines
# take 20 times their size or more (a user's own process writes them).
DENSITY = 8
SEND_SECONDS = 10.0  # to hand a warm runner a line; one that takes no more is stopped
CANCEL_SECONDS = 5.0  # for a warm runner to say it killed a run; else it is stopped
# A warm runner lives at most this long (RuntimeMaxSec adds the longest run): older ones get no
# new runs and are let go once their runs end, so a unit that stopped listening ends anyway.
WARM_MAX_SECONDS = 86400


@dataclass
class Warm:
    """A user's warm runner (:mod:`exec_api.services.warm`) and the runs handed to it."""

    proc: subprocess.Popen[bytes]
    username: str
    unit: str | None = None
    pending: dict[int, _Pending] = field(default_factory=dict)
    ready: int = 0
    started: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    err: bytes = b""
    ended: str | None = None  # why it is gone, once it is
    lock: threading.Lock = field(default_factory=threading.Lock)
    wlock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Written without blocking: a warm runner that stops reading (its user can SIGSTOP it)
        # must not hold a worker's thread.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.set_blocking(self.proc.stdin.fileno(), False)  # type: ignore[union-attr]

    def send(self, doc: dict[str, Any], seconds: float | None = None) -> bool:
        data = json.dumps(doc).encode() + b"\n"
        deadline = time.monotonic() + (SEND_SECONDS if seconds is None else seconds)
        with self.wlock:
            try:
                fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
            except (OSError, ValueError, AttributeError):
                return False
            while data:
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    select.select([], [fd], [], min(left, 0.5))
                except OSError:
                    return False
        return True

    def close_stdin(self) -> None:
        with self.wlock, contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # type: ignore[union-attr]


class SubprocessRunner:
    """Runs each job in a run process forked by its user's warm runner
    (``python -m exec_api.services.warm``), started on a user's first run and kept while they
    run notebooks: one fresh kernel per run, forked ahead from modules imported once.

    Without systemd (this class) the warm runner is a child process of the worker and runs as
    the service user; :class:`SystemdRunner` starts it as the notebook owner, in a unit with
    the run limits.  A warm runner nobody used for ``ready_idle_seconds`` is let go (stdin
    closed), and only the ``ready_max_users`` most recent users keep an idle one.

    The warm runner is the user's own process: what it writes is read with bounds and checked
    (a line for a run that is not waiting is dropped unread), a warm runner that stops reading
    or does not confirm a cancel is stopped whole, and none lives longer than a day.
    """

    name = "subprocess"
    grace_seconds = 5.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.python = settings.systemd_python or sys.executable
        self._warm: OrderedDict[str, Warm] = OrderedDict()
        self._retiring: list[Warm] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        # What one answer may be: the output cap, and room for the status and the framing.
        cap = settings.max_output_bytes
        self.answer_cap = None if cap is None else cap + ANSWER_ROOM + 4096

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        threading.Thread(target=self._expire_loop, name="warm-runners", daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            warm = list(self._warm.values()) + self._retiring
            self._warm.clear()
            self._retiring = []
        for w in warm:
            self._let_go(w)

    def ready_kernels(self) -> int:
        with self._lock:
            return sum(w.ready for w in self._warm.values() if w.ended is None)

    def reap(self, execution_ids: list[int]) -> None:
        return None  # a dead worker's warm runners see their stdin close, kill their runs, and end

    # ------------------------------------------------------------- warm runners
    def warm_command(self) -> list[str]:
        # -P: nothing from the working directory (the user's home) is imported as our code.
        return [self.python, "-P", "-m", "exec_api.services.warm"]

    def _popen(self, username: str) -> Warm:
        env = kernel_env()
        env["EXEC_API_WARM_READY"] = str(min(self.settings.ready_per_user, READY_CAP))
        proc = subprocess.Popen(
            self.warm_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        return Warm(proc, username)

    def _for(self, username: str, execution_id: int, pend: _Pending) -> Warm:
        """The user's warm runner (started now if they have none), with ``pend`` waiting on
        it: a runner with a run waiting is never let go as idle."""
        evicted: list[Warm] = []
        with self._lock:
            w = self._warm.get(username)
            if w is not None and time.monotonic() - w.started > WARM_MAX_SECONDS:
                del self._warm[username]  # old: its runs end there, new ones go to a new one
                self._retiring.append(w)
                w = None
            if w is None or w.ended is not None:
                w = self._popen(username)
                self._warm[username] = w
                threading.Thread(target=self._listen, args=(w,), daemon=True).start()
                threading.Thread(target=self._stderr, args=(w,), daemon=True).start()
            self._warm.move_to_end(username)
            w.used = time.monotonic()
            with w.lock:
                w.pending[execution_id] = pend
            idle = [v for k, v in self._warm.items() if k != username and not v.pending]
            while len(self._warm) > self.settings.ready_max_users and idle:
                gone = idle.pop(0)
                del self._warm[gone.username]
                evicted.append(gone)
        for gone in evicted:
            self._let_go(gone)
        return w

    def _forget(self, w: Warm) -> None:
        with self._lock:
            if self._warm.get(w.username) is w:
                del self._warm[w.username]
            if w in self._retiring:
                self._retiring.remove(w)

    def _listen(self, w: Warm) -> None:
        """Answers from the warm runner, each to the run waiting for it (and only that)."""
        out = w.proc.stdout
        assert out is not None
        why = "it exited"
        try:
            while (
                line := out.readline() if self.answer_cap is None else out.readline(self.answer_cap)
            ):
                if not line.endswith(b"\n"):  # longer than any answer may be
                    why = "it sent an answer over the output cap's bound"
                    break
                if m := READY_RE.match(line):
                    w.ready = min(int(m.group(1)), 99)
                    continue
                m = ANSWER_RE.match(line)
                if m is None:
                    continue
                rid = int(m.group(1))
                with w.lock:
                    waiting = rid in w.pending
                if not waiting:
                    continue  # dropped unread: an answer nobody waits for is parsed by nobody
                if line.count(b"{") + line.count(b"[") > len(line) // DENSITY + 16:
                    doc: Any = {
                        "id": rid,
                        "result": {"error_message": "the run's answer is not a notebook"},
                    }
                else:
                    doc = json.loads(line)
                if not isinstance(doc, dict) or doc.get("id") != rid:  # another id in the same line
                    why = "it sent an answer that was not framed as one"
                    break
                with w.lock:
                    pend = w.pending.pop(rid, None)
                if pend is not None:
                    pend.doc = doc
                    pend.done.set()
        except Exception as e:  # noqa: BLE001 - JSON nested too deep, a closed pipe...
            why = f"its answer could not be read ({type(e).__name__})"
        finally:
            self._ended(w, why)

    def _ended(self, w: Warm, why: str) -> None:
        """The warm runner is gone or is not to be trusted: stopped, and its runs released."""
        self._forget(w)
        if w.proc.poll() is None:
            self.stop_warm(w)
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(timeout=10)
        time.sleep(0.05)  # the end of its stderr
        err = w.err.decode("utf-8", "replace")[-2000:].strip()
        code = w.proc.returncode
        w.ended = f"{username_runner(w)} ended ({why}, exit {code}){': ' + err if err else ''}"
        with w.lock:
            left, w.pending = list(w.pending.values()), {}
        for pend in left:
            pend.done.set()
        self._close_pipes(w)
        if not self._closing.is_set() and code not in (0, 143, -15):
            log.warning("%r", w.ended)

    @staticmethod
    def _stderr(w: Warm) -> None:
        with contextlib.suppress(OSError, ValueError):
            while b := w.proc.stderr.read1(65536):  # type: ignore[union-attr]
                w.err = (w.err + b)[-STDERR_TAIL:]

    def _expire_loop(self) -> None:
        every = min(30.0, max(0.5, self.settings.ready_idle_seconds / 4))
        while not self._closing.wait(every):
            self.expire()

    def expire(self) -> None:
        """Let go of the warm runners nobody used for ready_idle_seconds, and of old ones
        whose last run ended."""
        limit = time.monotonic() - self.settings.ready_idle_seconds
        with self._lock:
            idle = [w for w in self._warm.values() if not w.pending and w.used < limit]
            for w in idle:
                del self._warm[w.username]
            idle += [w for w in self._retiring if not w.pending]
            self._retiring = [w for w in self._retiring if w.pending]
        for w in idle:
            self._let_go(w)

    def _let_go(self, w: Warm) -> None:
        """Close its stdin (it kills its ready runs and exits), and stop it if it does not;
        in a thread of its own, so that nobody waits on a runner that stopped reading."""

        def _collect() -> None:
            w.close_stdin()
            try:
                w.proc.wait(timeout=self.grace_seconds + 10)
            except subprocess.TimeoutExpired:
                self.stop_warm(w)

        threading.Thread(target=_collect, daemon=True).start()

    def stop_warm(self, w: Warm) -> None:
        """Stop a warm runner and every run in it: SIGTERM (it kills its runs), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.proc.pid, signal.SIGTERM)
        try:
            w.proc.wait(timeout=self.grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(w.proc.pid, signal.SIGKILL)

    @staticmethod
    def _close_pipes(w: Warm) -> None:
        for f in (w.proc.stdin, w.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if f is not None:
                    f.close()

    def _stop_in_background(self, w: Warm) -> None:
        self._forget(w)
        threading.Thread(target=self.stop_warm, args=(w,), daemon=True).start()

    # ---------------------------------------------------------------------- run
    def run(self, job: Job, control: Control) -> Outcome:
        payload = {
            "notebook": job.notebook_path,
            "cwd": job.cwd,
            "parameters": job.parameters,
            "types": job.types,
            "timeout": job.timeout_seconds,
            "max_output_bytes": job.max_output_bytes,
            "output_path": job.output_path,
            "report_mode": job.report_mode,
        }
        pend = _Pending()
        try:
            w = self._for(job.username, job.execution_id, pend)
        except (OSError, KeyError) as e:
            return Outcome("failed", error_message=f"cannot start runner: {e}")
        if not w.send({"op": "run", "id": job.execution_id, "job": payload}):
            with w.lock:
                w.pending.pop(job.execution_id, None)
            self._stop_in_background(w)  # it stopped reading: the user's next run starts another
            why = w.ended or f"it took no job within {SEND_SECONDS:g} s"
            return Outcome("failed", error_message=f"cannot reach {username_runner(w)}: {why}")
        # The warm runner kills the run GRACE s past its deadline; this is the last line.
        deadline = time.monotonic() + job.timeout_seconds + 30
        stopped: str | None = None
        while not pend.done.wait(0.05):
            if control.stop.is_set():
                stopped = control.reason
            elif time.monotonic() > deadline:
                stopped = "timed_out"
            if stopped:
                return self._stop_run(w, job.execution_id, pend, stopped)
        w.used = time.monotonic()
        if pend.doc is None:
            return Outcome("failed", error_message=f"the run was lost: {w.ended or 'no answer'}")
        if "over" in pend.doc:
            assert job.max_output_bytes is not None
            over = pend.doc["over"] if type(pend.doc["over"]) is int else 0
            size = max(over, job.max_output_bytes + 1)
            return Outcome(
                "failed",
                error_message=str(OutputTooLarge(size, job.max_output_bytes, at_least=True)),
            )
        return self.parse(pend.doc.get("result"))

    def _stop_run(self, w: Warm, rid: int, pend: _Pending, reason: str) -> Outcome:
        """Cancel (or time out) a run: the warm runner kills it and says so; one that does not
        within CANCEL_SECONDS, or that let the run pass its deadline, is stopped whole."""
        out = Outcome(reason, error_message=f"execution {reason}")
        if reason != "timed_out" and w.send({"op": "cancel", "id": rid}, CANCEL_SECONDS):
            # Confirmed, or the run's own answer came first: either way it is over.
            if pend.done.wait(CANCEL_SECONDS) and pend.doc is not None:
                return out
        with w.lock:
            w.pending.pop(rid, None)
        self._stop_in_background(w)
        return out

    @staticmethod
    def parse(doc: Any) -> Outcome:
        if not isinstance(doc, dict):
            return Outcome("failed", error_message="the run's answer was not understood")
        status = doc.get("status")
        if status not in ("succeeded", "failed", "timed_out"):
            status = "failed"
        e = doc.get("error") if isinstance(doc.get("error"), dict) else None
        nb = doc.get("notebook") if isinstance(doc.get("notebook"), dict) else None
        msg = doc.get("error_message")
        usage: dict[str, Any] = doc["usage"] if isinstance(doc.get("usage"), dict) else {}
        cpu: Any = usage.get("cpu_seconds")
        peak: Any = usage.get("peak_memory_bytes")
        return Outcome(
            status,
            notebook=nb,
            error_message=(msg if isinstance(msg, str) else None) or error_text(e),
            error_detail=e,
            # Written by a process of the user's: only finite, plausible figures are kept.
            cpu_seconds=float(cpu) if type(cpu) in (int, float) and 0 <= cpu < 1e7 else None,
            peak_memory_bytes=peak if type(peak) is int and 0 <= peak < 2**50 else None,
        )


def username_runner(w: Warm) -> str:
    return f"the warm runner of {w.username}" + (f" ({w.unit})" if w.unit else "")


# --------------------------------------------------------------------------- systemd
# The sandbox of a run's unit: as tight as running a user's code allows.  The run keeps the
# network (its notebook may use the exec API or the database), the user's own home (bound in
# by the caller) and its private /tmp; the rest of the file system is read-only, other homes
# and /run/user are empty, devices and kernel knobs are out of reach.  The launcher holds the
# same list (roles/exec_api/vars/main.yml) and refuses a run without every one of them.
# Not set, on purpose: PrivateNetwork/IPAddressDeny (see above), MemoryDenyWriteExecute (JITs
# such as numba), ProcSubset=pid (/proc/meminfo, /proc/cpuinfo are read by user libraries),
# RemoveIPC (it would remove the user's IPC objects of their other sessions).
RUN_HARDENING = (
    "NoNewPrivileges=yes",
    "UMask=0077",
    "ProtectSystem=strict",
    "ProtectHome=tmpfs",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    # AF_NETLINK: libzmq lists the interfaces (getifaddrs) when the kernel binds its sockets,
    # even over ipc; without it the kernel aborts at start ("Address family not supported").
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallErrorNumber=EPERM",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
)


class SystemdRunner(SubprocessRunner):
    """The warm runner runs as the notebook owner in a transient unit of the user's own,
    ``exec-api-warm-<hex>.service``, with the run limits and the sandbox above; every run of
    that user is forked in it.

    Needs systemd as PID 1 and the right to start units for other users: the service runs
    as root, or goes through the launcher (``roles/exec_api/files/exec_api_launcher.py``).
    """

    name = "systemd"

    def command(self, username: str, unit: str) -> list[str]:
        """systemd-run for ``username``'s warm runner, started in their home."""
        s = self.settings
        pw = pwd.getpwnam(username)  # KeyError: no such Unix user
        props = [
            f"MemoryMax={s.systemd_memory_max}",
            "MemorySwapMax=0",
            f"CPUQuota={s.systemd_cpu_quota}",
            f"TasksMax={s.systemd_tasks_max}",
            # No new run past WARM_MAX_SECONDS; this ends a runner that stopped listening.
            f"RuntimeMaxSec={WARM_MAX_SECONDS + s.max_timeout_seconds + 60}",
            "KillMode=control-group",
            # A run that the kernel's OOM killer ends fails alone: the user's other runs go on.
            "OOMPolicy=continue",
            "TimeoutStopSec=5",
            *RUN_HARDENING,
            # Every home is hidden (an empty /home) but the user's own, bound in read-write.
            f"BindPaths={pw.pw_dir}",
            f"WorkingDirectory={pw.pw_dir}",
            *s.systemd_extra_properties,
        ]
        argv = [
            s.systemd_run_path,
            f"--unit={unit}",
            f"--slice={s.systemd_slice}",
            f"--uid={pw.pw_uid}",
            f"--gid={pw.pw_gid}",
            "--quiet",
            "--collect",
            "--wait",
            "--pipe",
            "--service-type=exec",
            f"--setenv=HOME={pw.pw_dir}",
            f"--setenv=USER={username}",
            f"--setenv=LOGNAME={username}",
            "--setenv=PYDEVD_DISABLE_FILE_VALIDATION=1",
            f"--setenv=EXEC_API_WARM_READY={min(int(s.ready_per_user), READY_CAP)}",
            *(f"--setenv={k}={v}" for k, v in sorted(s.systemd_environment.items())),
        ]
        for prop in props:
            argv += ["-p", prop]
        argv += ["--", *self.warm_command()]
        return argv

    def run(self, job: Job, control: Control) -> Outcome:
        try:
            pwd.getpwnam(job.username)
        except KeyError:
            return Outcome("failed", error_message=f"no Unix user {job.username!r} on this host")
        return super().run(job, control)

    def _popen(self, username: str) -> Warm:
        unit = f"exec-api-warm-{secrets.token_hex(6)}.service"
        proc = subprocess.Popen(
            self.command(username, unit),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return Warm(proc, username, unit)

    def stop_command(self, unit: str) -> list[str]:
        return [self.settings.systemctl_path, "stop", "--no-block", unit]

    def stop_warm(self, w: Warm) -> None:
        if w.unit:
            # KillMode=control-group: stopping the unit kills every process of every run in it.
            subprocess.run(self.stop_command(w.unit), check=False, capture_output=True, timeout=30)
        super().stop_warm(w)


def make_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner(settings)
    if settings.runner == "subprocess":
        return SubprocessRunner(settings)
    return SystemdRunner(settings)
