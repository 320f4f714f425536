"""A pool of pre-started, single-use Python kernels.

Each execution takes one fresh kernel that was started ahead of time and the kernel is
killed (SIGKILL to its process group: no gentle shutdown) as soon as the run ends.  Kernels
are forked from a zygote process (:mod:`exec_api.services.zygote`) that has already imported
ipykernel, and talk over the ``ipc`` transport (Unix sockets in a private directory), so
there are no TCP ports to race for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

log = logging.getLogger(__name__)


class KernelStartError(RuntimeError):
    pass


@dataclass
class Kernel:
    pid: int
    connection_file: str
    client: BlockingKernelClient
    started_at: float = field(default_factory=time.monotonic)
    killed: bool = False

    def kill(self) -> None:
        """Kill the kernel and everything it started (its whole process group)."""
        if self.killed:
            return
        self.killed = True
        for sig_target in (
            lambda: os.killpg(self.pid, signal.SIGKILL),
            lambda: os.kill(self.pid, signal.SIGKILL),
        ):
            try:
                sig_target()
                break
            except (ProcessLookupError, PermissionError):
                continue

    def is_alive(self) -> bool:
        if self.killed:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # A zombie still answers kill(0); check /proc when available.
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        with contextlib.suppress(OSError):
            os.unlink(self.connection_file)


SECRET_ENV_PREFIXES = ("EXEC_API_", "JUPYTERHUB_", "PG", "DATABASE_URL")


def kernel_env() -> dict[str, str]:
    """The environment user code gets: the service's, minus its settings and secrets (the
    database URL, probe token...), which notebooks must never be able to read."""
    keep = {"EXEC_API_ZYGOTE_PRELOAD_FILE"}
    env = {
        k: v for k, v in os.environ.items() if k in keep or not k.startswith(SECRET_ENV_PREFIXES)
    }
    env.pop("JPY_PARENT_PID", None)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


class Zygote:
    """The fork server process and the pipe to it (one per pool)."""

    def __init__(self) -> None:
        env = kernel_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exec_api.services.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self._lock = threading.Lock()

    def _call(self, req: dict[str, object]) -> dict[str, object]:
        with self._lock:
            if self.proc.poll() is not None or self.proc.stdin is None or self.proc.stdout is None:
                raise KernelStartError("kernel zygote is not running")
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise KernelStartError("kernel zygote exited")
        reply: dict[str, object] = json.loads(line)
        return reply

    def spawn(self, connection_file: str, cwd: str | None = None) -> int:
        reply = self._call({"op": "spawn", "connection_file": connection_file, "cwd": cwd})
        if "pid" not in reply:
            raise KernelStartError(str(reply.get("error")))
        pid = reply["pid"]
        assert isinstance(pid, int)
        return pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _sweep_stale_dirs() -> None:
    """Remove socket directories left by pools whose process died (e.g. kill -9)."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if not name.startswith("exec-api-kernels-"):
                continue
            pid_s = name[len("exec-api-kernels-") :].split("-", 1)[0]
            if not pid_s.isdigit():
                continue
            try:
                os.kill(int(pid_s), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            except PermissionError:
                continue


class KernelPool:
    """Keeps ``size`` ready kernels; :meth:`acquire` hands one out and a refill starts."""

    def __init__(self, size: int = 2, start_timeout: float = 30.0) -> None:
        self.size = max(0, size)
        self.start_timeout = start_timeout
        _sweep_stale_dirs()
        self._dir = tempfile.mkdtemp(prefix=f"exec-api-kernels-{os.getpid()}-")
        os.chmod(self._dir, 0o700)
        self._ready: deque[Kernel] = deque()
        self._cond = threading.Condition()
        self._starting = 0
        self._seq = 0
        self._closed = False
        self._zygote: Zygote | None = None
        self._zlock = threading.Lock()
        self._refill_threads: list[threading.Thread] = []
        self.started_total = 0
        self.failed_starts = 0

    # -- kernel start -------------------------------------------------------------------
    def _zyg(self) -> Zygote:
        with self._zlock:
            if self._zygote is None or not self._zygote.alive():
                self._zygote = Zygote()
            return self._zygote

    def start_kernel(self) -> Kernel:
        """Start one fresh kernel and wait until it answers (blocking)."""
        last: Exception | None = None
        for _attempt in range(3):
            if self._closed:
                raise KernelStartError("kernel pool is closed")
            with self._cond:
                self._seq += 1
                seq = self._seq
            cf = os.path.join(self._dir, f"kernel-{os.getpid()}-{seq}.json")
            write_connection_file(
                cf,
                transport="ipc",
                ip=os.path.join(self._dir, f"k{seq}"),
                key=secrets.token_hex(16).encode(),
            )
            pid: int | None = None
            try:
                pid = self._zyg().spawn(cf)
                kc = BlockingKernelClient(connection_file=cf)
                kc.load_connection_file()
                kc.start_channels()
                kc.wait_for_ready(timeout=self.start_timeout)
                self.started_total += 1
                return Kernel(pid=pid, connection_file=cf, client=kc)
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                last = exc
                if self._closed:
                    raise KernelStartError("kernel pool is closed") from exc
                self.failed_starts += 1
                log.warning("kernel start failed (attempt %d): %s", _attempt + 1, exc)
                if pid is not None:
                    Kernel(pid=pid, connection_file=cf, client=BlockingKernelClient()).kill()
                with contextlib.suppress(OSError):
                    os.unlink(cf)
        raise KernelStartError(f"could not start a kernel: {last}")

    # -- pool ---------------------------------------------------------------------------
    def _refill_one(self) -> None:
        try:
            k = self.start_kernel()
        except KernelStartError:
            if not self._closed:
                log.exception("kernel pool refill failed")
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            if self._closed:
                k.close()
            else:
                self._ready.append(k)
            self._cond.notify_all()

    def _schedule_refills(self) -> None:
        # Called with self._cond held.
        while not self._closed and len(self._ready) + self._starting < self.size:
            self._starting += 1
            t = threading.Thread(target=self._refill_one, name="kernel-refill", daemon=True)
            t.start()

    def start(self) -> None:
        with self._cond:
            self._schedule_refills()

    @property
    def sockdir(self) -> str:
        """The pool's private (0700) directory of ipc sockets and connection files."""
        return self._dir

    def ready_count(self) -> int:
        with self._cond:
            return len(self._ready)

    def acquire(self, timeout: float | None = None) -> Kernel:
        """A ready kernel (waits for one if none is ready; starts one if the pool is empty)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self.size == 0:
                k = None
            else:
                self._schedule_refills()
                while not self._ready and not self._closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise KernelStartError("timed out waiting for a ready kernel")
                    self._cond.wait(timeout=remaining)
                if self._closed:
                    raise KernelStartError("kernel pool is closed")
                k = self._ready.popleft()
                self._schedule_refills()
        if k is None:
            return self.start_kernel()
        if not k.is_alive():
            k.close()
            return self.acquire(timeout)
        return k

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for k in ready:
            k.close()
        with self._zlock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
        shutil.rmtree(self._dir, ignore_errors=True)
