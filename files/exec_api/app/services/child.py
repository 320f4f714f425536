"""One notebook run in its own process (the ``subprocess`` and ``systemd`` runners).

Reads the job (JSON) on stdin, runs the notebook on a fresh kernel, writes the result
(JSON, one line) on stdout.  See :mod:`app.services.runners` for the protocol.  On SIGTERM
the kernel's whole process group is killed before exiting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import nbformat
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from app.services.executor import KernelDied, Stopped, execute_notebook
from app.services.kernels import Kernel
from app.services.params import inject


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        nb = nbformat.read(job["notebook"], as_version=4)
    except (OSError, ValueError) as e:
        _emit(
            {
                "status": "failed",
                "error": None,
                "error_message": f"cannot read notebook: {e}",
                "notebook": None,
            }
        )
        return 0
    inject(nb, job.get("parameters") or {}, job.get("types") or {})
    timeout = float(job.get("timeout") or 600)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    sockdir = tempfile.mkdtemp(prefix="exec-api-kernel-")  # private (0700) ipc sockets
    km = KernelManager(transport="ipc", ip=os.path.join(sockdir, "k"))
    km.start_kernel(cwd=job.get("cwd") or None)
    proc = getattr(km.provisioner, "process", None)
    pid = int(proc.pid) if proc is not None else -1
    kc: BlockingKernelClient = km.client()
    kc.start_channels()
    kernel = Kernel(pid=pid, connection_file=km.connection_file, client=kc)

    def _term(*_: Any) -> None:
        kernel.kill()
        shutil.rmtree(sockdir, ignore_errors=True)
        os._exit(143)

    signal.signal(signal.SIGTERM, _term)
    try:
        kc.wait_for_ready(timeout=60.0)
        deadline = time.monotonic() + timeout  # the run's own time, from a ready kernel
        res = execute_notebook(nb, kernel, deadline=deadline, cwd=job.get("cwd"))
        _emit({"status": res.status, "error": res.error, "notebook": res.notebook})
    except Stopped:
        _emit(
            {
                "status": "timed_out",
                "error": None,
                "notebook": nb,
                "error_message": f"timed out after {int(timeout)} s",
            }
        )
    except KernelDied:
        _emit(
            {
                "status": "failed",
                "error": None,
                "notebook": nb,
                "error_message": "the kernel died during execution",
            }
        )
    except RuntimeError as e:
        _emit(
            {
                "status": "failed",
                "error": None,
                "notebook": None,
                "error_message": f"kernel did not start: {e}",
            }
        )
    finally:
        kernel.kill()
        kc.stop_channels()
        km.cleanup_resources()
        shutil.rmtree(sockdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
