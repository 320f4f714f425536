"""One notebook run in its own process (the ``subprocess`` and ``systemd`` runners).

The child starts its kernel first and only then reads its job, so a runner can start it
ahead of time ("ready run") and hand it a job later.  The job is one JSON line on stdin; the
result is one JSON line on stdout.  See :mod:`exec_api.services.runners` for the protocol.

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

from exec_api.services.kernels import Kernel

DEFAULT_KERNEL = "python3"


def _emit(doc: dict[str, Any]) -> None:
    # UTF-8 as the output file is written (not \uXXXX escapes, up to 3 times larger), so the
    # runner's bound on the answer matches the output cap; a lone surrogate stays a JSON escape.
    data = json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", "backslashreplace")
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _failed(message: str, notebook: Any = None, status: str = "failed") -> dict[str, Any]:
    return {"status": status, "error": None, "notebook": notebook, "error_message": message}


class _Kernel:
    """The run's kernel, started before the job is known (ipc sockets in a private dir), of
    the kernelspec the runner names in ``EXEC_API_KERNEL`` (the one its user's last notebook
    used; ``python3`` when none is named)."""

    sockdir = ""
    kernel: Kernel | None = None
    error: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    def start(self) -> None:
        self.sockdir = self.sockdir or tempfile.mkdtemp(prefix="exec-api-kernel-")  # 0700
        self.km = KernelManager(
            kernel_name=self.name, transport="ipc", ip=os.path.join(self.sockdir, "k")
        )
        self.kernel, self.error = None, None
        try:
            self.km.start_kernel(cwd=os.getcwd())
            proc = getattr(self.km.provisioner, "process", None)
            if proc is None or int(proc.pid) <= 1:
                raise RuntimeError("no kernel process")
            # papermill loads while the kernel starts (two processes, two cores).
            from exec_api.services.engine import quiet_papermill

            quiet_papermill()

            kc: BlockingKernelClient = self.km.client()
            kc.start_channels()
            self.kernel = Kernel(int(proc.pid), self.km.connection_file, kc)
            kc.wait_for_ready(timeout=60.0)
            kc.stop_channels()  # the run talks to it with papermill's own (async) client
        except Exception as e:  # noqa: BLE001 - the run starts its kernel itself instead
            self.error = f"kernel did not start: {e}"
            if self.kernel is not None:
                self.kernel.kill()
                self.kernel = None

    def kill(self) -> None:
        if self.kernel is not None:
            self.kernel.kill()

    def cleanup(self) -> None:
        self.kill()
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)

    def alive_or_restarted(self) -> None:
        """A kernel that died while its child waited for the job is replaced."""
        if self.kernel is not None and not self.kernel.is_alive():
            self.kill()
            self.start()


def main() -> None:
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    k = _Kernel(os.environ.get("EXEC_API_KERNEL") or DEFAULT_KERNEL)
    run_ctx: list[Any] = []

    def _end(*_: Any) -> None:
        for r in run_ctx:
            r.kill("cancelled")  # also a kernel nbclient started for another kernelspec
        k.cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, _end)
    k.start()
    line = sys.stdin.buffer.readline()
    if not line.strip():  # end of file: a ready run nobody took, or the runner is gone
        k.cleanup()
        os._exit(0)
    k.alive_or_restarted()

    # From here on, end of file on stdin means the runner is gone: stop everything.
    def _watch() -> None:
        sys.stdin.buffer.read()
        _end()

    threading.Thread(target=_watch, daemon=True).start()
    try:
        _emit(run(json.loads(line), k, run_ctx))
    finally:
        for r in run_ctx:
            r.kill("ended")
        k.cleanup()
    # Exit at once (here and above): the kernel is killed and its sockets are gone; a clean
    # interpreter shutdown (channels, zmq context, the stdin watcher) would add about a second.
    os._exit(0)


def run(job: dict[str, Any], k: _Kernel, run_ctx: list[Any] | None = None) -> dict[str, Any]:
    """The job, run with papermill (:func:`exec_api.services.engine.run_notebook`) as this
    process's user, who reads the notebook."""
    from exec_api.services.engine import Run, ipc_kernel_manager, quiet_papermill, run_notebook

    quiet_papermill()
    try:
        nb = nbformat.read(job["notebook"], as_version=4)
    except (OSError, ValueError) as e:
        return _failed(f"cannot read notebook: {e}")
    timeout = float(job.get("timeout") or 600)
    limit = job.get("max_output_bytes")
    r = Run(
        ready=k.kernel,
        ready_kernel_name=k.name,
        cwd=job.get("cwd"),
        deadline=time.monotonic() + timeout,  # the run's own time, from the job's arrival
        timeout_seconds=timeout,
        max_output_bytes=int(limit) if limit is not None else None,
        kernel_manager_class=ipc_kernel_manager(k.sockdir),
    )
    if run_ctx is not None:
        run_ctx.append(r)
    res = run_notebook(
        nb,
        r,
        parameters=job.get("parameters") or {},
        types=job.get("types") or {},
        input_path=job["notebook"],
        output_path=job.get("output_path") or "",
        report_mode=bool(job.get("report_mode")),
    )
    return {
        "status": res.status,
        "error": res.error,
        "notebook": res.notebook,
        "error_message": res.message,
    }


if __name__ == "__main__":
    main()
