"""Runners: where and as whom a notebook runs.

* ``local``      in the worker process, on a pre-started kernel from the zygote pool
                 (fastest; runs as the service user; for tests and development).
* ``subprocess`` one child process per run (``python -m app.services.child``) speaking the
                 child protocol below; no systemd needed.
* ``systemd``    the same child, started by ``systemd-run`` as the notebook owner's Unix user
                 in a transient unit with memory/CPU/task/runtime limits and
                 ``KillMode=control-group``.

Child protocol: the job is one JSON object on stdin
``{"notebook": abs path, "cwd": dir, "parameters": {...}, "types": {...}, "timeout": s}``;
the answer is one JSON object on stdout
``{"status": "succeeded"|"failed"|"timed_out", "error": {...}|null, "notebook": {...}|null}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import nbformat

from app.core.config import Settings
from app.services.executor import KernelDied, Stopped, execute_notebook
from app.services.kernels import KernelPool, KernelStartError, kernel_env
from app.services.params import inject

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
        try:
            nb = nbformat.read(job.notebook_path, as_version=4)
        except (OSError, ValueError) as e:
            return Outcome("failed", error_message=f"cannot read notebook: {e}")
        inject(nb, job.parameters, job.types)
        deadline = time.monotonic() + job.timeout_seconds
        try:
            kernel = self.pool.acquire(timeout=job.timeout_seconds)
        except KernelStartError as e:
            return Outcome("failed", error_message=str(e))
        try:
            res = execute_notebook(nb, kernel, deadline=deadline, stop=control.stop, cwd=job.cwd)
        except Stopped:
            kernel.kill()
            if control.stop.is_set():
                return Outcome(
                    control.reason, notebook=dict(nb), error_message=f"execution {control.reason}"
                )
            return Outcome(
                "timed_out",
                notebook=dict(nb),
                error_message=f"timed out after {job.timeout_seconds} s",
            )
        except KernelDied:
            if control.stop.is_set():
                return Outcome(
                    control.reason, notebook=dict(nb), error_message=f"execution {control.reason}"
                )
            return Outcome(
                "failed", notebook=dict(nb), error_message="the kernel died during execution"
            )
        finally:
            kernel.close()
        return Outcome(
            res.status,
            notebook=dict(res.notebook),
            error_message=error_text(res.error),
            error_detail=res.error,
        )

    def close(self) -> None:
        self.pool.close()

    def reap(self, execution_ids: list[int]) -> None:
        return None  # its kernels are children of the worker's process and end with it


# ------------------------------------------------------------------------ subprocess
class SubprocessRunner:
    """Runs each job in a child process (``python -m app.services.child``)."""

    name = "subprocess"
    grace_seconds = 5.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.python = settings.systemd_python or sys.executable

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def ready_kernels(self) -> int:
        return 0

    def reap(self, execution_ids: list[int]) -> None:
        return None  # development runner: an orphaned child finishes on its own (or its timeout)

    def child_command(self) -> list[str]:
        return [self.python, "-m", "app.services.child"]

    def command(self, job: Job) -> list[str]:
        return self.child_command()

    def _spawn(self, job: Job, argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd=job.cwd,
            env=kernel_env(),
        )

    def stop_child(self, job: Job, proc: subprocess.Popen[bytes]) -> None:
        """Stop the run: SIGTERM (the child kills its kernel group), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def run(self, job: Job, control: Control) -> Outcome:
        payload = json.dumps(
            {
                "notebook": job.notebook_path,
                "cwd": job.cwd,
                "parameters": job.parameters,
                "types": job.types,
                "timeout": job.timeout_seconds,
            }
        ).encode()
        argv = self.command(job)
        try:
            proc = self._spawn(job, argv)
        except OSError as e:
            return Outcome("failed", error_message=f"cannot start runner: {e}")
        result: dict[str, Any] = {}

        def _talk() -> None:
            out, err = proc.communicate(payload)
            result["out"], result["err"] = out, err

        t = threading.Thread(target=_talk, daemon=True)
        t.start()
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
            self.stop_child(job, proc)
            t.join(timeout=self.grace_seconds + 5)
            return Outcome(stopped_reason, error_message=f"execution {stopped_reason}")
        t.join()
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
class SystemdRunner(SubprocessRunner):
    """The child runs as the notebook owner in a transient systemd unit.

    Needs systemd as PID 1 and the right to start units for other users: the service runs
    as root, or a polkit rule grants it ``org.freedesktop.systemd1.manage-units``.
    """

    name = "systemd"

    def unit_name(self, job: Job) -> str:
        return f"exec-api-run-{job.execution_id}-{secrets.token_hex(3)}.service"

    def command(self, job: Job, unit: str | None = None) -> list[str]:
        s = self.settings
        pw = pwd.getpwnam(job.username)  # KeyError: no such Unix user
        unit = unit or self.unit_name(job)
        props = [
            f"MemoryMax={s.systemd_memory_max}",
            "MemorySwapMax=0",
            f"CPUQuota={s.systemd_cpu_quota}",
            f"TasksMax={s.systemd_tasks_max}",
            f"RuntimeMaxSec={job.timeout_seconds + 15}",
            "KillMode=control-group",
            "TimeoutStopSec=5",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=full",
            f"WorkingDirectory={job.cwd}",
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
            f"--setenv=USER={job.username}",
            f"--setenv=LOGNAME={job.username}",
            "--setenv=PYDEVD_DISABLE_FILE_VALIDATION=1",
        ]
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

    def _spawn(self, job: Job, argv: list[str]) -> subprocess.Popen[bytes]:
        unit = self.unit_name(job)
        argv = self.command(job, unit)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        proc.unit = unit  # type: ignore[attr-defined]
        return proc

    def stop_command(self, unit: str) -> list[str]:
        return [self.settings.systemctl_path, "stop", "--no-block", unit]

    def reap(self, execution_ids: list[int]) -> None:
        # A worker killed with -9 leaves its transient units running (they are not in the
        # service's cgroup): stop every unit of each orphaned execution.
        for eid in execution_ids:
            cmd = self.stop_command(f"exec-api-run-{int(eid)}-*.service")
            subprocess.run(cmd, check=False, capture_output=True, timeout=30)

    def stop_child(self, job: Job, proc: subprocess.Popen[bytes]) -> None:
        unit = getattr(proc, "unit", None)
        if unit:
            # KillMode=control-group: stopping the unit kills the kernel and all it started.
            subprocess.run(self.stop_command(unit), check=False, capture_output=True, timeout=30)
        super().stop_child(job, proc)


def make_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner(settings)
    if settings.runner == "subprocess":
        return SubprocessRunner(settings)
    return SystemdRunner(settings)
