"""Run a notebook's code cells on one kernel, cell by cell, collecting outputs.

A small, deliberate replacement for nbclient's loop: it works with a kernel that was
started ahead of time, stops at the first failing cell (recording that cell's error),
and honours a wall-clock deadline and a stop flag checked between messages.
"""

from __future__ import annotations

import json
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


class OutputTooLarge(Exception):
    """The run's output is over ``EXEC_API_MAX_OUTPUT_BYTES``; it is not kept."""

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        self.size, self.limit = size, limit
        more = "more than " if at_least else ""
        super().__init__(
            f"output is {more}{size} bytes, over the limit of {limit} (EXEC_API_MAX_OUTPUT_BYTES)"
        )


def _size(content: dict[str, Any]) -> int:
    """What a message adds to the saved notebook, about (text and data, as stored)."""
    n = len(content.get("text", "") or "")
    for v in (content.get("data") or {}).values():
        n += len(v) if isinstance(v, str) else len(json.dumps(v))
    n += sum(len(t) for t in content.get("traceback") or [])
    return n


class _Budget:
    """Output bytes a run may still produce; counting starts at the notebook's own size."""

    def __init__(self, limit: int | None, used: int = 0) -> None:
        self.limit, self.used = limit, used

    def add(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise OutputTooLarge(self.used, self.limit, at_least=True)


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
    budget: _Budget | None = None,
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
            if budget is not None:
                budget.add(_size(content))  # stops a run that floods its output, early
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
    max_output_bytes: int | None = None,
) -> RunResult:
    """Execute every code cell of ``nb`` in order on ``kernel`` (modifies ``nb``).

    With ``max_output_bytes``, outputs are counted as they arrive and the run stops with
    :class:`OutputTooLarge` once the notebook would be larger (the caller checks the exact
    size of what it saves)."""
    stop = stop or threading.Event()
    for cell in nb.cells:  # every output in the result is this run's (as papermill does)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    budget = None
    if max_output_bytes is not None:
        budget = _Budget(max_output_bytes, len(nbformat.writes(nb)))
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
        reply = run_code(
            kernel, cell.source, deadline=deadline, stop=stop, outputs=cell.outputs, budget=budget
        )
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
