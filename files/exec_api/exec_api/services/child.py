"""One notebook run in its own process: the run processes a user's warm runner forks.

A run process (:mod:`exec_api.services.warm`) forks its kernel first, from the modules its
warm runner imported once, and only then waits for its job, so the runner can fork it ahead
of time ("ready run").  :func:`run` runs the job with papermill as this process's user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from typing import IO, Any

import nbformat
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from exec_api.services.kernels import Kernel
from exec_api.services.warm import _failure

DEFAULT_KERNEL = "python3"


def warm_up() -> None:
    """What a run needs, imported once by the warm runner before it forks run processes."""
    from exec_api.services import zygote
    from exec_api.services.engine import quiet_papermill

    zygote._warm_up()
    quiet_papermill()
    import nbclient  # noqa: F401
    import papermill.engines  # noqa: F401
    import papermill.translators  # noqa: F401


def emit(doc: dict[str, Any], out: IO[bytes]) -> None:
    # UTF-8 as the output file is written (not \uXXXX escapes, up to 3 times larger), so the
    # runner's bound on the answer matches the output cap; a lone surrogate stays a JSON escape.
    data = json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", "backslashreplace")
    out.write(data + b"\n")
    out.flush()


class ForkedKernel:
    """The run's fresh kernel: this Python's ipykernel (kernelspec ``python3``), forked from
    this process (ipykernel already imported), in this process's group, on ipc sockets in a
    private 0700 directory.  A notebook on another kernelspec gets its own kernel started by
    nbclient instead (papermill's rule), and this one is killed."""

    name = DEFAULT_KERNEL
    kernel: Kernel | None = None
    error: str | None = None

    def __init__(self, private_fds: tuple[int, ...] = ()) -> None:
        self.sockdir = tempfile.mkdtemp(prefix="exec-api-kernel-")  # 0700
        self.private_fds = private_fds  # the run's job and answer pipes: not the kernel's

    def start(self) -> None:
        from exec_api.services.zygote import _child

        cf = os.path.join(self.sockdir, "kernel.json")
        write_connection_file(
            cf,
            transport="ipc",
            ip=os.path.join(self.sockdir, "k"),
            key=secrets.token_hex(16).encode(),
        )
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the kernel
            from exec_api.services.warm import _die_with_parent

            _die_with_parent()
            for fd in self.private_fds:
                os.close(fd)
            _child(cf, os.getcwd(), -1, new_session=False)
        kc = BlockingKernelClient(connection_file=cf)
        try:
            kc.load_connection_file()
            kc.start_channels(hb=False)
            self.kernel = Kernel(pid, cf, kc)
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
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def alive_or_restarted(self) -> None:
        """A kernel that died while its run waited for the job: nbclient starts one instead
        (no second fork: this process has threads by now)."""
        if self.kernel is not None and not self.kernel.is_alive():
            self.kill()
            self.kernel = None


def run(job: dict[str, Any], k: ForkedKernel, run_ctx: list[Any] | None = None) -> dict[str, Any]:
    """The job, run with papermill (:func:`exec_api.services.engine.run_notebook`) as this
    process's user, who reads the notebook."""
    from exec_api.services.engine import Run, ipc_kernel_manager, quiet_papermill, run_notebook

    quiet_papermill()
    try:
        nb = nbformat.read(job["notebook"], as_version=4)
    except (OSError, ValueError) as e:
        return _failure("failed", f"cannot read notebook: {e}")
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
