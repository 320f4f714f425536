"""Runners: where and as whom a notebook runs.

* ``local``      in the worker process, on a pre-started kernel from the zygote pool
                 (fastest; runs as the service user; for tests and development).
* ``subprocess`` one child process per run (``python -m exec_api.services.child``) speaking the
                 child protocol below; no systemd needed.
* ``systemd``    the same child, started by ``systemd-run`` as the notebook owner's Unix user
                 in a transient unit with memory/CPU/task/runtime limits and
                 ``KillMode=control-group``.

Child protocol: the child starts its kernel, then reads the job, one JSON line on stdin
``{"notebook": abs path, "cwd": dir, "parameters": {...}, "types": {...}, "timeout": s,
"max_output_bytes": n, "output_path": path, "report_mode": bool}``;
the answer is one JSON line on stdout
``{"status": "succeeded"|"failed"|"timed_out", "error": {...}|null, "notebook": {...}|null}``.
The runner keeps stdin open until the answer is in: end of file on stdin (the worker died,
or a ready child is no longer wanted) makes the child kill its kernel and exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import secrets
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


# A kernelspec name as jupyter_client allows it: the only form passed on to a child.
KERNEL_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Room in the child's answer beyond the output cap (status, error, JSON framing), and how
# much of its stderr is kept (the end, for the error message).
ANSWER_ROOM = 1024 * 1024
STDERR_TAIL = 64 * 1024


def read_capped(f: Any, cap: int | None, chunk: int = 1024 * 1024) -> tuple[bytes, int]:
    """Read ``f`` to its end, or until more than ``cap`` bytes: then ``(b"", bytes read)``."""
    parts: list[bytes] = []
    total = 0
    while b := f.read1(chunk) if hasattr(f, "read1") else f.read(chunk):
        total += len(b)
        if cap is not None and total > cap:
            return b"", total
        parts.append(b)
    return b"".join(parts), 0


def read_tail(f: Any, keep: int, chunk: int = 65536) -> bytes:
    """Read ``f`` to its end, keeping only its last ``keep`` bytes."""
    buf = b""
    while b := f.read1(chunk) if hasattr(f, "read1") else f.read(chunk):
        buf = (buf + b)[-keep:]
    return buf


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
class Started:
    """A child the runner started: for a job at once (cold) or ahead of time (ready)."""

    proc: subprocess.Popen[bytes]
    username: str
    unit: str | None = None
    kernel: str = DEFAULT_KERNEL
    at: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.proc.poll() is None


class SubprocessRunner:
    """Runs each job in a child process (``python -m exec_api.services.child``).

    Ready runs: after a user's run is handed over, the runner starts ``ready_per_user``
    children for that user ahead of time.  Each starts its own fresh kernel and waits for a
    job on stdin, so that user's next run does not wait for a kernel start; one child, one
    kernel, one run.  Ready children nobody took in ``ready_idle_seconds`` are ended (stdin
    closed), and only the ``ready_max_users`` most recent users keep them.
    """

    name = "subprocess"
    grace_seconds = 5.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.python = settings.systemd_python or sys.executable
        # Ready children by (user, kernelspec): a user's next run of a notebook on that kernel.
        self._ready: OrderedDict[tuple[str, str], list[Started]] = OrderedDict()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self.settings.ready_per_user > 0:
            threading.Thread(target=self._expire_loop, name="ready-runs", daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            ready = [r for rs in self._ready.values() for r in rs]
            self._ready.clear()
        for r in ready:
            self._end(r)

    def ready_kernels(self) -> int:
        with self._lock:
            return sum(r.alive() for rs in self._ready.values() for r in rs)

    def reap(self, execution_ids: list[int]) -> None:
        return None  # an orphaned child sees its stdin close when its worker dies, and ends

    # ----------------------------------------------------------------- children
    def child_command(self) -> list[str]:
        return [self.python, "-m", "exec_api.services.child"]

    def _spawn(
        self, username: str, job: Job | None = None, kernel: str = DEFAULT_KERNEL
    ) -> Started:
        """A child for ``job`` now, or (``job`` None) one started ahead for ``username``
        on ``kernel``, whose kernel changes to the notebook's directory when its job comes."""
        kernel = job.kernel_name if job else kernel
        env = kernel_env()
        if KERNEL_NAME_RE.fullmatch(kernel):
            env["EXEC_API_KERNEL"] = kernel
        proc = subprocess.Popen(
            self.child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd=job.cwd if job else None,
            env=env,
        )
        return Started(proc, username, kernel=kernel)

    # --------------------------------------------------------------- ready runs
    def _take(self, username: str, kernel: str) -> Started | None:
        with self._lock:
            rs = self._ready.get((username, kernel)) or []
            while rs:
                r = rs.pop(0)
                if r.alive():
                    return r
                self._ended_early(r)
        return None

    def _refill(self, username: str, kernel: str = DEFAULT_KERNEL) -> None:
        """Start ready children for ``username`` on ``kernel`` up to ``ready_per_user``
        (a kernel name that is not a plain kernelspec name gets none)."""
        s = self.settings
        if s.ready_per_user <= 0 or self._closing.is_set() or not KERNEL_NAME_RE.fullmatch(kernel):
            return
        evicted: list[Started] = []
        with self._lock:
            rs = self._ready.setdefault((username, kernel), [])
            self._ready.move_to_end((username, kernel))
            while len(self._ready) > s.ready_max_users:
                evicted += self._ready.popitem(last=False)[1]
            while len(rs) < s.ready_per_user:
                try:
                    rs.append(self._spawn(username, kernel=kernel))
                except (OSError, KeyError) as e:
                    log.warning("cannot start a ready run for %s: %s", username, e)
                    break
        for r in evicted:
            self._end(r)

    def _expire_loop(self) -> None:
        every = min(30.0, max(0.5, self.settings.ready_idle_seconds / 4))
        while not self._closing.wait(every):
            self.expire()

    def expire(self) -> None:
        """End ready children older than ready_idle_seconds; forget users left with none."""
        limit = time.monotonic() - self.settings.ready_idle_seconds
        ended: list[Started] = []
        with self._lock:
            for key in list(self._ready):
                keep = []
                for r in self._ready[key]:
                    if not r.alive():
                        self._ended_early(r)
                    elif r.at < limit:
                        ended.append(r)
                    else:
                        keep.append(r)
                if keep:
                    self._ready[key] = keep
                else:
                    del self._ready[key]
        for r in ended:
            self._end(r)

    def _ended_early(self, r: Started) -> None:
        err = b""
        with contextlib.suppress(OSError, ValueError, TypeError):
            os.set_blocking(r.proc.stderr.fileno(), False)  # type: ignore[union-attr]
            err = r.proc.stderr.read() or b""  # type: ignore[union-attr]
        log.warning(
            "a ready run for %s ended before it was used (exit %s): %s",
            r.username,
            r.proc.returncode,
            err.decode("utf-8", "replace")[-500:].strip(),
        )
        self._close_pipes(r)

    def _end(self, r: Started) -> None:
        """End a ready child: stdin closed means "no job", and it exits."""
        with contextlib.suppress(OSError, ValueError):
            r.proc.stdin.close()  # type: ignore[union-attr]

        def _collect() -> None:
            try:
                r.proc.wait(timeout=self.grace_seconds + 10)
            except subprocess.TimeoutExpired:
                self.stop_child(r)
            self._close_pipes(r)

        threading.Thread(target=_collect, daemon=True).start()

    @staticmethod
    def _close_pipes(r: Started) -> None:
        for f in (r.proc.stdin, r.proc.stdout, r.proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if f is not None:
                    f.close()

    # ---------------------------------------------------------------------- run
    def stop_child(self, r: Started) -> None:
        """Stop the run: SIGTERM (the child kills its kernel group), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.proc.pid, signal.SIGTERM)
        try:
            r.proc.wait(timeout=self.grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.proc.pid, signal.SIGKILL)

    def run(self, job: Job, control: Control) -> Outcome:
        payload = json.dumps(
            {
                "notebook": job.notebook_path,
                "cwd": job.cwd,
                "parameters": job.parameters,
                "types": job.types,
                "timeout": job.timeout_seconds,
                "max_output_bytes": job.max_output_bytes,
                "output_path": job.output_path,
                "report_mode": job.report_mode,
            }
        ).encode()
        started = self._take(job.username, job.kernel_name)
        if started is None:
            try:
                started = self._spawn(job.username, job)
            except OSError as e:
                return Outcome("failed", error_message=f"cannot start runner: {e}")
        proc = started.proc
        result: dict[str, bytes] = {}
        # The child is the user's own process: what it writes is read with bounds (the
        # answer: the output cap and room for the status; stderr: its last bytes).
        cap = None if job.max_output_bytes is None else job.max_output_bytes + ANSWER_ROOM
        too_large: list[int] = []

        def _talk() -> None:
            # The job is one line; stdin stays open while the run lasts (its end = stop).
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(payload + b"\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            err: list[bytes] = []
            reader = threading.Thread(
                target=lambda: err.append(read_tail(proc.stderr, STDERR_TAIL)),  # type: ignore[arg-type]
                daemon=True,
            )
            reader.start()
            out, over = read_capped(proc.stdout, cap)  # type: ignore[arg-type]
            if over:
                too_large.append(over)
                return  # the child may still be writing: the caller stops it
            result["out"] = out
            reader.join()
            proc.wait()
            result["err"] = err[0] if err else b""

        t = threading.Thread(target=_talk, daemon=True)
        t.start()
        self._refill(job.username, job.kernel_name)  # the next run's kernel, started ahead
        deadline = time.monotonic() + job.timeout_seconds + 30
        stopped_reason: str | None = None
        while t.is_alive():
            if control.stop.wait(0.05):
                stopped_reason = control.reason
                break
            if time.monotonic() > deadline:
                stopped_reason = "timed_out"
                break
        if stopped_reason:
            self.stop_child(started)
            t.join(timeout=self.grace_seconds + 5)
            self._close_pipes(started)
            return Outcome(stopped_reason, error_message=f"execution {stopped_reason}")
        t.join()
        if too_large:
            self.stop_child(started)
            self._close_pipes(started)
            assert job.max_output_bytes is not None
            return Outcome(
                "failed",
                error_message=str(
                    OutputTooLarge(too_large[0], job.max_output_bytes, at_least=True)
                ),
            )
        self._close_pipes(started)
        return self.parse(proc.returncode, result.get("out") or b"", result.get("err") or b"")

    @staticmethod
    def parse(returncode: int | None, out: bytes, err: bytes) -> Outcome:
        try:
            doc = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = err.decode("utf-8", "replace")[-2000:]
            return Outcome("failed", error_message=f"runner exited with {returncode}: {tail}")
        status = doc.get("status")
        if status not in ("succeeded", "failed", "timed_out"):
            status = "failed"
        e = doc.get("error")
        return Outcome(
            status,
            notebook=doc.get("notebook"),
            error_message=doc.get("error_message") or error_text(e),
            error_detail=e,
        )


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
    """The child runs as the notebook owner in a transient systemd unit.

    Needs systemd as PID 1 and the right to start units for other users: the service runs
    as root, or goes through the launcher (``roles/exec_api/files/exec_api_launcher.py``).
    A ready run is a unit of the user's own, with the same limits, whose kernel is up and
    which waits for its job (``exec-api-ready-<hex>.service``); a cold run's unit is named
    after its execution (``exec-api-run-<id>-<hex>.service``).
    """

    name = "systemd"

    def command(
        self, username: str, job: Job | None, unit: str, kernel: str = DEFAULT_KERNEL
    ) -> list[str]:
        """systemd-run for ``job``'s unit, or for a ready unit of ``username`` (``job`` None):
        that one starts in the user's home and may wait ``ready_idle_seconds``, then run up
        to ``max_timeout_seconds``."""
        s = self.settings
        pw = pwd.getpwnam(username)  # KeyError: no such Unix user
        if job is None:
            cwd, runtime_max = pw.pw_dir, s.ready_idle_seconds + s.max_timeout_seconds + 60
        else:
            cwd, runtime_max = job.cwd, job.timeout_seconds + 15
        props = [
            f"MemoryMax={s.systemd_memory_max}",
            "MemorySwapMax=0",
            f"CPUQuota={s.systemd_cpu_quota}",
            f"TasksMax={s.systemd_tasks_max}",
            f"RuntimeMaxSec={runtime_max}",
            "KillMode=control-group",
            "TimeoutStopSec=5",
            *RUN_HARDENING,
            # Every home is hidden (an empty /home) but the user's own, bound in read-write.
            f"BindPaths={pw.pw_dir}",
            f"WorkingDirectory={cwd}",
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
        ]
        kernel = job.kernel_name if job else kernel
        if KERNEL_NAME_RE.fullmatch(kernel):
            argv.append(f"--setenv=EXEC_API_KERNEL={kernel}")
        for p in props:
            argv += ["-p", p]
        argv += ["--", *self.child_command()]
        return argv

    def run(self, job: Job, control: Control) -> Outcome:
        try:
            pwd.getpwnam(job.username)
        except KeyError:
            return Outcome("failed", error_message=f"no Unix user {job.username!r} on this host")
        return super().run(job, control)

    def _spawn(
        self, username: str, job: Job | None = None, kernel: str = DEFAULT_KERNEL
    ) -> Started:
        if job is None:
            unit = f"exec-api-ready-{secrets.token_hex(6)}.service"
        else:
            unit = f"exec-api-run-{job.execution_id}-{secrets.token_hex(3)}.service"
        proc = subprocess.Popen(
            self.command(username, job, unit, kernel),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return Started(proc, username, unit, kernel=job.kernel_name if job else kernel)

    def stop_command(self, unit: str) -> list[str]:
        return [self.settings.systemctl_path, "stop", "--no-block", unit]

    def reap(self, execution_ids: list[int]) -> None:
        # A worker killed with -9 closes every child's stdin, and the child ends its run; as a
        # second line, stop every cold unit of each orphaned execution.
        for eid in execution_ids:
            cmd = self.stop_command(f"exec-api-run-{int(eid)}-*.service")
            subprocess.run(cmd, check=False, capture_output=True, timeout=30)

    def stop_child(self, r: Started) -> None:
        if r.unit:
            # KillMode=control-group: stopping the unit kills the kernel and all it started.
            subprocess.run(self.stop_command(r.unit), check=False, capture_output=True, timeout=30)
        super().stop_child(r)


def make_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner(settings)
    if settings.runner == "subprocess":
        return SubprocessRunner(settings)
    return SystemdRunner(settings)
