"""One notebook run in its own process (the ``subprocess`` and ``systemd`` runners).

The child starts its kernel first and only then reads its job, so a runner can start it
ahead of time ("ready run") and hand it a job later.  The job is one JSON line on stdin; the
result is one JSON line on stdout.  See :mod:`app.services.runners` for the protocol.

Stdin stays open while the run lasts: end of file on stdin means the runner is gone (or
has ended a ready run nobody took), and the child kills its kernel's whole process group and
exits.  So does SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import nbformat
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from app.services.executor import KernelDied, OutputTooLarge, Stopped, execute_notebook
from app.services.kernels import Kernel
from app.services.params import inject


def _emit(doc: dict[str, Any]) -> None:
    # UTF-8 as the output file is written (not \uXXXX escapes, up to 3 times larger), so the
    # runner's bound on the answer matches the output cap; a lone surrogate stays a JSON escape.
    data = json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", "backslashreplace")
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _failed(message: str, notebook: Any = None, status: str = "failed") -> dict[str, Any]:
    return {"status": status, "error": None, "notebook": notebook, "error_message": message}


class _Kernel:
    """The run's kernel, started before the job is known (ipc sockets in a private dir)."""

    sockdir = ""
    kernel: Kernel | None = None
    error: str | None = None

    def start(self) -> None:
        self.sockdir = tempfile.mkdtemp(prefix="exec-api-kernel-")  # 0700
        self.km = KernelManager(transport="ipc", ip=os.path.join(self.sockdir, "k"))
        self.kernel, self.error = None, None
        try:
            self.km.start_kernel(cwd=os.getcwd())
            proc = getattr(self.km.provisioner, "process", None)
            if proc is None or int(proc.pid) <= 1:
                raise RuntimeError("no kernel process")
            kc: BlockingKernelClient = self.km.client()
            kc.start_channels()
            self.kernel = Kernel(int(proc.pid), self.km.connection_file, kc)
            kc.wait_for_ready(timeout=60.0)
        except Exception as e:  # noqa: BLE001 - reported as the run's failure
            self.error = f"kernel did not start: {e}"

    def kill(self) -> None:
        if self.kernel is not None:
            self.kernel.kill()
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)

    def alive_or_restarted(self) -> None:
        """A kernel that died while its child waited for the job is replaced."""
        if self.kernel is not None and not self.kernel.is_alive():
            self.kill()
            self.start()


def main() -> None:
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    k = _Kernel()

    def _end(*_: Any) -> None:
        k.kill()
        os._exit(143)

    signal.signal(signal.SIGTERM, _end)
    k.start()
    line = sys.stdin.buffer.readline()
    if not line.strip():  # end of file: a ready run nobody took, or the runner is gone
        k.kill()
        os._exit(0)
    k.alive_or_restarted()

    # From here on, end of file on stdin means the runner is gone: stop everything.
    def _watch() -> None:
        sys.stdin.buffer.read()
        _end()

    threading.Thread(target=_watch, daemon=True).start()
    try:
        _emit(run(json.loads(line), k))
    finally:
        k.kill()
    # Exit at once (here and above): the kernel is killed and its sockets are gone; a clean
    # interpreter shutdown (channels, zmq context, the stdin watcher) would add about a second.
    os._exit(0)


def run(job: dict[str, Any], k: _Kernel) -> dict[str, Any]:
    try:
        nb = nbformat.read(job["notebook"], as_version=4)
    except (OSError, ValueError) as e:
        return _failed(f"cannot read notebook: {e}")
    if k.error or k.kernel is None:
        return _failed(k.error or "kernel did not start")
    inject(nb, job.get("parameters") or {}, job.get("types") or {})
    timeout = float(job.get("timeout") or 600)
    limit = job.get("max_output_bytes")
    limit = int(limit) if limit is not None else None
    deadline = time.monotonic() + timeout  # the run's own time, from the job's arrival
    try:
        res = execute_notebook(
            nb, k.kernel, deadline=deadline, cwd=job.get("cwd"), max_output_bytes=limit
        )
    except OutputTooLarge as e:
        return _failed(str(e))  # no notebook: a partial output is never kept
    except Stopped:
        return _checked(_failed(f"timed out after {int(timeout)} s", nb, status="timed_out"), limit)
    except KernelDied:
        return _checked(_failed("the kernel died during execution", nb), limit)
    return _checked({"status": res.status, "error": res.error, "notebook": res.notebook}, limit)


def _checked(doc: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The answer, or a failure without the notebook if the notebook, as it will be saved,
    is larger than ``limit`` bytes (the count while running is an estimate)."""
    nb = doc.get("notebook")
    if limit is None or nb is None:
        return doc
    size = len(nbformat.writes(nb).encode("utf-8", "backslashreplace"))
    if size > limit:
        return _failed(str(OutputTooLarge(size, limit)))
    return doc


if __name__ == "__main__":
    main()
