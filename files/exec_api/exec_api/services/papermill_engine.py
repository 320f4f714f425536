"""The ``exec_api`` papermill engine: papermill's nbclient engine on a run's ready kernel.

papermill loads this module through its entry point (``papermill.engine`` in
``pyproject.toml``) while it is itself being imported, so it imports only the parts of
papermill that exist by then (``papermill.engines`` up to its registration, and the modules
that one imports).  Import :mod:`exec_api.services.engine`, which imports papermill first, rather
than this module.  What the engine changes, and why, is in :mod:`exec_api.services.engine`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_hook
from nbformat import NotebookNode
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from papermill.log import logger as papermill_logger
from papermill.utils import merge_kwargs, remove_args
from traitlets import default

from exec_api.services.kernels import Kernel

ENGINE_NAME = "exec_api"
DEFAULT_KERNEL = "python3"  # a notebook that names no kernel (papermill's CLI wants -k)


class OutputTooLarge(Exception):
    """The run's output is over ``EXEC_API_MAX_OUTPUT_BYTES``; it is not kept."""

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        self.size, self.limit = size, limit
        more = "more than " if at_least else ""
        super().__init__(
            f"output is {more}{size} bytes, over the limit of {limit} (EXEC_API_MAX_OUTPUT_BYTES)"
        )


# --------------------------------------------------------------------------- kernels
class _ReadyKernelClient(AsyncKernelClient):
    """A client of a kernel started elsewhere: alive while its process is."""

    kernel: Kernel | None = None

    async def is_alive(self) -> bool:  # type: ignore[override]
        return self.kernel is not None and self.kernel.is_alive()


class ReadyKernelManager:
    """What nbclient needs of a kernel manager, over a kernel that is already running."""

    has_kernel = True

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.kernel_id = os.path.basename(kernel.connection_file)

    def client(self) -> AsyncKernelClient:
        kc = _ReadyKernelClient(connection_file=self.kernel.connection_file)
        kc.load_connection_file()
        kc.kernel = self.kernel
        return kc

    def is_alive(self) -> bool:
        return self.kernel.is_alive()

    def interrupt_kernel(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.kernel.pid, signal.SIGINT)

    def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        self.kernel.kill()


def ipc_kernel_manager(sockdir: str) -> type[AsyncKernelManager]:
    """nbclient's kernel manager class, on the ipc transport in ``sockdir`` (0700): for a
    kernel nbclient starts itself (a kernelspec no ready kernel was started for)."""

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            return os.path.join(sockdir, f"k-{secrets.token_hex(4)}")

    return IpcKernelManager


# ------------------------------------------------------------------------------- run
@dataclass
class Run:
    """One run's context, handed to the engine through papermill's engine kwargs."""

    ready: Kernel | None = None  # started before the job (None: nbclient starts one)
    ready_kernel_name: str = DEFAULT_KERNEL
    cwd: str | None = None
    deadline: float | None = None  # time.monotonic()
    timeout_seconds: float | None = None
    max_output_bytes: int | None = None
    kernel_manager_class: type[AsyncKernelManager] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None  # "cancelled", "timed_out", "output"
    output_used: int = 0
    nb_man: Any = None
    km: Any = None
    kc: Any = None

    def kill(self, reason: str) -> None:
        """Stop the run from outside: the kernel and all it started are killed; nbclient sees
        it dead within a second and the run ends with ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()
        km = self.km
        if isinstance(km, ReadyKernelManager):
            km.kernel.kill()
        elif km is not None:
            provisioner = getattr(km, "provisioner", None)
            pid = getattr(getattr(provisioner, "process", None), "pid", None)
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid), signal.SIGKILL)

    def seconds_left(self, _cell: Any = None) -> float | None:
        if self.deadline is None:
            return None
        return max(0.05, self.deadline - time.monotonic())

    def count(self, content: dict[str, Any]) -> None:
        if self.max_output_bytes is None:
            return
        n = len(content.get("text", "") or "")
        for v in (content.get("data") or {}).values():
            n += len(v) if isinstance(v, str) else len(json.dumps(v))
        n += sum(len(t) for t in content.get("traceback") or [])
        self.output_used += n
        if self.output_used > self.max_output_bytes:
            self.kill("output")
            raise OutputTooLarge(self.output_used, self.max_output_bytes, at_least=True)


class RunClient(PapermillNotebookClient):
    """papermill's notebook client with the run's ready kernel, deadline and budget.

    nbclient's blocking methods are ``run_sync`` wrappers of its async ones, bound at class
    level: each async method overridden here gets its wrapper again."""

    def __init__(self, nb_man: Any, run: Run, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.run = run

    async def async_start_new_kernel(self, **kw: Any) -> None:
        await super().async_start_new_kernel(**kw)
        self.run.km = self.km  # a kernel nbclient started: the run's kill() finds it here
        if self.run.stop.is_set():
            self.run.kill(self.run.stop_reason or "cancelled")

    start_new_kernel = run_sync(async_start_new_kernel)

    async def async_start_new_kernel_client(self) -> Any:
        if not isinstance(self.km, ReadyKernelManager):
            kc = await super().async_start_new_kernel_client()
            self.run.kc = kc
            return kc
        # nbclient's own steps, but for a kernel known to be up: jupyter_client's
        # wait_for_ready ends with 0.2 s of listening for stray messages, a third of a
        # trivial run; the messages it drains are not this run's cells' and nbclient skips them.
        kc = self.kc = self.run.kc = self.km.client()
        kc.start_channels()
        await _until_connected(kc, float(self.startup_timeout))
        kc.allow_stdin = False
        await run_hook(self.on_notebook_start, notebook=self.nb)
        if self.run.cwd:
            # Started before its job: it moves to the notebook's directory now.  The path
            # reaches the kernel as a Python string literal (repr), never as code.
            code = f"import os as __os; __os.chdir({self.run.cwd!r}); del __os"
            msg_id = kc.execute(code, silent=True, store_history=False)
            reply = await self.async_wait_for_reply(msg_id)
            if not reply or reply["content"].get("status") != "ok":
                raise RuntimeError(f"the kernel cannot change to {self.run.cwd}")
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        if msg.get("header", {}).get("msg_type") in _COUNTED:
            self.run.count(msg.get("content") or {})
        return super().process_message(msg, cell, cell_index)

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kw)
        except (CellTimeoutError, DeadKernelError) as e:
            # Where the run stopped is marked as papermill marks a failing cell, so its banner
            # and anchor point here (papermill itself would leave no trace of a timeout).
            self.run.stop_reason = self.run.stop_reason or (
                "timed_out" if isinstance(e, CellTimeoutError) else "died"
            )
            cell.outputs.append(_stop_output(self.run))
            self.nb_man.cell_exception(cell, cell_index=cell_index, exception=e)
            raise

    execute_cell = run_sync(async_execute_cell)


async def _until_connected(kc: AsyncKernelClient, timeout: float) -> None:
    """A kernel_info reply on shell and a message on IOPub: both channels are connected
    (a subscriber that joins late misses what was published before)."""
    end = time.monotonic() + timeout
    while True:
        kc.kernel_info()
        try:
            msg = await kc.shell_channel.get_msg(timeout=1)
        except Empty:
            msg = None
        if msg is not None and msg["msg_type"] == "kernel_info_reply":
            try:
                await kc.iopub_channel.get_msg(timeout=0.2)
                return
            except Empty:
                pass
        if not await kc.is_alive():
            raise DeadKernelError("the ready kernel died before the run")
        if time.monotonic() > end:
            raise RuntimeError(f"the ready kernel did not answer in {timeout:g} s")


_COUNTED = ("stream", "display_data", "update_display_data", "execute_result", "error")


def _stop_output(run: Run) -> NotebookNode:
    reason = run.stop_reason
    if reason == "timed_out":
        ename = "TimeoutError"
        evalue = f"the run reached its timeout of {run.timeout_seconds:g} s (timeout_seconds)"
    elif reason == "cancelled":
        ename, evalue = "Cancelled", "the run was cancelled"
    elif reason == "output":
        ename, evalue = "OutputTooLarge", "the run's output went over its limit"
    else:
        ename, evalue = "DeadKernelError", "the kernel died (out of memory, or killed)"
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])


class ExecApiEngine(NBClientEngine):
    """papermill's nbclient engine, on the run's ready kernel (see the module's doc)."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        exec_api_run: Run | None = None,
        **kwargs: Any,
    ) -> Any:
        run = exec_api_run or Run()
        run.nb_man = nb_man
        km: Any = None
        if run.ready is not None:
            if kernel_name == run.ready_kernel_name and run.ready.is_alive():
                km = ReadyKernelManager(run.ready)
            else:
                run.ready.kill()  # the notebook wants another kernel: nbclient starts it
        run.km = km
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        extra: dict[str, Any] = {}
        if run.kernel_manager_class is not None:
            extra["kernel_manager_class"] = run.kernel_manager_class
        if run.cwd:
            extra["resources"] = {"metadata": {"path": run.cwd}}
        final = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            timeout_func=run.seconds_left if run.deadline is not None else None,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=papermill_logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **extra,
        )
        client = RunClient(nb_man, run, km=km, **final)
        return client.execute()
