"""Runs are papermill runs: papermill's ``execute_notebook`` with an engine of ours.

Every run, whatever the runner, goes through :func:`run_notebook`, which calls papermill's
own ``execute_notebook``: papermill parameterizes the notebook (its translators, its
``injected-parameters`` cell, ``metadata.papermill``), clears old outputs and error markers,
drives nbclient cell by cell, honours ``raises-exception`` tags, display updates,
``clear_output(wait=True)`` and ``sys.exit()`` as papermill does, and adds its error banner
and anchor cells after a failure.

What is ours is the engine, registered with papermill under the name ``exec_api`` (entry
point ``papermill.engine`` in ``pyproject.toml``).  It is papermill's ``NBClientEngine`` with
four differences, each kept to a hook:

* **a ready kernel**: when the runner started a kernel before the job came (the local
  runner's pool, a ready child) and its kernel name is the notebook's, nbclient is handed
  that kernel instead of starting one.  Otherwise (another kernelspec) the ready kernel is
  killed and nbclient starts the notebook's own kernel, failing with ``NoSuchKernel`` as
  papermill does when it is not installed;
* **the working directory** reaches a ready kernel as an ``os.chdir`` sent to it silently
  (it was started before the directory was known); a kernel nbclient starts gets it as its
  ``cwd``.  The process's own directory is never changed (the local runner has threads);
* **one deadline for the whole run** (papermill's ``execution_timeout`` is per cell): each
  cell gets the time left; the cell where time ran out gets an error output saying so, is
  marked failed in ``metadata.papermill``, and papermill's banner points at it;
* **an output budget**: outputs are counted as they arrive and a run over the budget is
  stopped at once (its kernel is killed); no partial notebook of it is kept.

Dates and datetimes are typed parameters of the API that papermill's Python translator
would inject as strings: a translator of ours (:class:`TypedPythonTranslator`) renders them
as ``__import__("datetime").date.fromisoformat("...")``; every other value is papermill's
own rendering.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import nbformat

# papermill first: its import loads the engine through the entry point (see papermill_engine)
import papermill
import papermill.execute
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from papermill.exceptions import PapermillExecutionError
from papermill.iorw import papermill_io
from papermill.translators import PythonTranslator, papermill_translators

from exec_api.services.papermill_engine import (
    DEFAULT_KERNEL,
    ENGINE_NAME,
    ExecApiEngine,
    OutputTooLarge,
    ReadyKernelManager,
    Run,
    ipc_kernel_manager,
)

log = logging.getLogger(__name__)

OUTPUT_PREFIX = "exec-api-output://"


# ----------------------------------------------------------------------- parameters
class IsoDate(str):
    """A ``date`` parameter: its ISO text (what ``metadata.papermill.parameters`` shows), and
    a ``datetime.date`` in the kernel."""

    constructor = "date"


class IsoDateTime(str):
    constructor = "datetime"


class TypedPythonTranslator(PythonTranslator):
    """papermill's Python translator, plus the API's date and datetime types."""

    @classmethod
    def translate(cls, val: Any) -> str:
        if isinstance(val, IsoDate | IsoDateTime):
            text = cls.translate_str(str(val))
            return f'__import__("datetime").{val.constructor}.fromisoformat({text})'
        result: str = super().translate(val)
        return result


papermill_translators.register("python", TypedPythonTranslator)


def typed_values(values: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """The values papermill injects: dates and datetimes marked for the translator."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        t = types.get(name)
        if isinstance(value, str) and t == "date":
            value = IsoDate(value)
        elif isinstance(value, str) and t == "datetime":
            value = IsoDateTime(value)
        out[name] = value
    return out


# ------------------------------------------------------------------------ output I/O
class _CapturedOutput:
    """papermill I/O handler for ``exec-api-output://<key>``: keeps what papermill writes
    (its final notebook, with error markers after a failure) in memory for the caller, who
    writes the output file itself."""

    def __init__(self) -> None:
        self.buffers: dict[str, str] = {}
        self._lock = threading.Lock()

    def write(self, buf: str, path: str) -> None:
        with self._lock:
            self.buffers[path] = buf

    def take(self, path: str) -> str | None:
        with self._lock:
            return self.buffers.pop(path, None)

    def read(self, path: str) -> str:
        raise OSError(f"{path} cannot be read")

    def listdir(self, path: str) -> list[str]:
        raise OSError(f"{path} cannot be listed")

    def pretty_path(self, path: str) -> str:
        return path


CAPTURED = _CapturedOutput()
papermill_io.register(OUTPUT_PREFIX, CAPTURED)


# ---------------------------------------------------------------------------- result
@dataclass
class Result:
    status: str  # succeeded | failed | timed_out | cancelled
    notebook: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # the failing cell
    message: str | None = None


def notebook_kernel(nb: NotebookNode) -> tuple[str, str | None]:
    """The kernel a notebook names (papermill's rule) and its language, or the platform's
    default Python kernel for a notebook that names none."""
    spec = nb.metadata.get("kernelspec") or {}
    name = spec.get("name")
    if name:
        return str(name), None
    language = (nb.metadata.get("language_info") or {}).get("name") or spec.get("language")
    return DEFAULT_KERNEL, (language or "python")


def run_notebook(
    nb: NotebookNode,
    run: Run,
    *,
    parameters: dict[str, Any],
    types: dict[str, str],
    input_path: str,
    output_path: str,
    report_mode: bool = False,
) -> Result:
    """Run ``nb`` (read by the caller, as its owner) with papermill; never raises."""
    key = f"{OUTPUT_PREFIX}{secrets.token_hex(8)}.ipynb"
    run.timeout_seconds = run.timeout_seconds or (
        None if run.deadline is None else run.deadline - time.monotonic()
    )
    try:
        result = _execute(nb, run, key, typed_values(parameters, types), report_mode)
    finally:
        CAPTURED.take(key)
    return _finish(result, run, input_path, output_path)


def _execute(
    nb: NotebookNode, run: Run, key: str, parameters: dict[str, Any], report_mode: bool
) -> Result:
    kernel_name, language = notebook_kernel(nb)
    try:
        out = papermill.execute_notebook(
            nb,
            key,
            parameters=parameters or None,
            engine_name=ENGINE_NAME,
            request_save_on_cell_execute=False,
            kernel_name=kernel_name,
            language=language,
            progress_bar=False,
            log_output=False,
            report_mode=report_mode,
            exec_api_run=run,
        )
        return Result("succeeded", notebook=out)
    except PapermillExecutionError as e:
        # papermill wrote the notebook with its banner and anchor before raising
        notebook = _written(key)
        out_index = e.cell_index + 2  # the banner at the top, the anchor before the cell
        error = {
            # index in the submitted notebook (no injected cell), and in the output
            "cell_index": out_index - _injected_before(notebook, out_index),
            "output_cell_index": out_index,
            "ename": e.ename,
            "evalue": e.evalue,
            "traceback": list(e.traceback or []),
        }
        return Result(_status_of(run), notebook, error, _stop_message(run))
    except Exception as e:  # noqa: BLE001 - stopped, or papermill's own error (NoSuchKernel ...)
        if run.stop_reason == "output":  # no partial notebook of it is kept
            assert run.max_output_bytes is not None
            too_large = OutputTooLarge(run.output_used, run.max_output_bytes, at_least=True)
            return Result("failed", message=str(too_large))
        partial = run.nb_man.nb if run.nb_man is not None else None
        if not isinstance(e, CellTimeoutError | DeadKernelError):
            if run.stop_reason in ("timed_out", "cancelled"):
                return Result(run.stop_reason, message=_stop_message(run))
            return Result("failed", notebook=partial, message=f"{type(e).__name__}: {e}")
        if partial is None:
            return Result(_status_of(run), message=_stop_message(run) or str(e))
        # RunClient marked the cell where it stopped: papermill's markers, as for an error.
        try:
            papermill.execute.raise_for_execution_errors(partial, key)
        except PapermillExecutionError:
            pass
        return Result(_status_of(run), _written(key) or dict(partial), None, _stop_message(run))


def _written(key: str) -> dict[str, Any] | None:
    written = CAPTURED.take(key)
    return json.loads(written) if written else None


def _status_of(run: Run) -> str:
    return run.stop_reason if run.stop_reason in ("timed_out", "cancelled") else "failed"


def _stop_message(run: Run) -> str | None:
    if run.stop_reason == "timed_out":
        return f"timed out after {run.timeout_seconds:g} s"
    if run.stop_reason == "cancelled":
        return "execution cancelled"
    if run.stop_reason == "died":
        return "the kernel died during execution"
    return None


def _injected_before(notebook: dict[str, Any] | None, index: int) -> int:
    """Cells papermill added before ``index`` of the output: its injected-parameters cell and
    its error markers."""
    if not notebook:
        return 0
    n = 0
    for c in notebook.get("cells", [])[:index]:
        tags = (c.get("metadata") or {}).get("tags") or []
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            n += 1
    return n


def _finish(result: Result, run: Run, input_path: str, output_path: str) -> Result:
    """Where the run's notebook came from and goes (papermill records its own arguments,
    here a notebook object and a memory key), and the exact size check."""
    nb = result.notebook
    if nb is None:
        return result
    meta = nb.setdefault("metadata", {}).setdefault("papermill", {})
    meta["input_path"] = input_path
    meta["output_path"] = output_path
    if run.max_output_bytes is not None:
        text = nbformat.writes(nbformat.from_dict(nb))
        size = len(text.encode("utf-8", "backslashreplace"))
        if size > run.max_output_bytes:
            return Result("failed", message=str(OutputTooLarge(size, run.max_output_bytes)))
    return result


def quiet_papermill() -> None:
    """papermill logs every run's paths at INFO and warns about what the API has already
    checked (undeclared names, no parameters cell): a service's journal wants its errors."""
    logging.getLogger("papermill").setLevel(logging.ERROR)


__all__ = [
    "DEFAULT_KERNEL",
    "ENGINE_NAME",
    "ExecApiEngine",
    "OutputTooLarge",
    "ReadyKernelManager",
    "Result",
    "Run",
    "ipc_kernel_manager",
    "notebook_kernel",
    "quiet_papermill",
    "run_notebook",
]
