"""Run a notebook's code cells on one kernel, cell by cell, collecting outputs.

A small, deliberate replacement for nbclient's loop: it works with a kernel that was
started ahead of time, stops at the first failing cell (recording that cell's error),
and honours a wall-clock deadline and a stop flag checked between messages.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import nbformat
from nbformat import NotebookNode

from app.services.kernels import Kernel


class Stopped(Exception):
    """The run was stopped from outside (cancel or timeout); the kernel is being killed."""


class KernelDied(Exception):
    pass


@dataclass
class RunResult:
    status: str  # "succeeded" | "failed"
    notebook: NotebookNode
    error: dict[str, Any] | None = None
    cell_timings: list[float] = field(default_factory=list)


def _wait_reply(
    kernel: Kernel, msg_id: str, deadline: float | None, stop: threading.Event
) -> dict[str, Any]:
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            msg: dict[str, Any] = kernel.client.get_shell_msg(timeout=0.05)
        except queue.Empty:
            if not kernel.is_alive():
                raise KernelDied("kernel died") from None
            if deadline is not None and time.monotonic() > deadline:
                raise Stopped() from None
            continue
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            return msg


def run_code(
    kernel: Kernel,
    code: str,
    *,
    deadline: float | None = None,
    stop: threading.Event | None = None,
    silent: bool = False,
    outputs: list[NotebookNode] | None = None,
) -> dict[str, Any]:
    """Execute ``code``; append outputs to ``outputs``; return the execute_reply content."""
    stop = stop or threading.Event()
    kc = kernel.client
    msg_id = kc.execute(
        code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=True
    )
    idle = False
    while not idle:
        if stop.is_set():
            raise Stopped()
        try:
            msg: dict[str, Any] = kc.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            if not kernel.is_alive():
                raise KernelDied("kernel died") from None
            if deadline is not None and time.monotonic() > deadline:
                raise Stopped() from None
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        mtype = msg["header"]["msg_type"]
        content = msg["content"]
        if mtype == "status":
            idle = content.get("execution_state") == "idle"
        elif mtype == "clear_output":
            if outputs is not None:
                outputs.clear()
        elif mtype in ("stream", "display_data", "execute_result", "error"):
            if outputs is None:
                continue
            if (
                mtype == "stream"
                and outputs
                and outputs[-1].get("output_type") == "stream"
                and outputs[-1].get("name") == content.get("name")
            ):
                outputs[-1]["text"] += content.get("text", "")
            else:
                outputs.append(nbformat.v4.output_from_msg(msg))
    reply = _wait_reply(kernel, msg_id, deadline, stop)
    content_r: dict[str, Any] = reply["content"]
    return content_r


def execute_notebook(
    nb: NotebookNode,
    kernel: Kernel,
    *,
    deadline: float | None = None,
    stop: threading.Event | None = None,
    cwd: str | None = None,
) -> RunResult:
    """Execute every code cell of ``nb`` in order on ``kernel`` (modifies ``nb``)."""
    stop = stop or threading.Event()
    if cwd:
        # The path reaches the kernel as a Python string literal (repr), never as code.
        run_code(
            kernel,
            f"import os as __os; __os.chdir({cwd!r}); del __os",
            deadline=deadline,
            stop=stop,
            silent=True,
        )
    timings: list[float] = []
    count = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if not cell.source.strip():
            continue
        t0 = time.monotonic()
        reply = run_code(kernel, cell.source, deadline=deadline, stop=stop, outputs=cell.outputs)
        timings.append(time.monotonic() - t0)
        count += 1
        cell.execution_count = reply.get("execution_count", count)
        if reply.get("status") != "ok":
            injected = sum(
                1
                for c in nb.cells[:index]
                if "injected-parameters" in c.get("metadata", {}).get("tags", [])
            )
            err = {
                # index in the submitted notebook, and in the output (which has the
                # injected-parameters cell)
                "cell_index": index - injected,
                "output_cell_index": index,
                "ename": reply.get("ename", "Error"),
                "evalue": reply.get("evalue", ""),
                "traceback": reply.get("traceback", []),
            }
            return RunResult(status="failed", notebook=nb, error=err, cell_timings=timings)
    return RunResult(status="succeeded", notebook=nb, cell_timings=timings)
