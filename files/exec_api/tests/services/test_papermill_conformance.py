"""Runs are papermill runs: each notebook papermill ships in its wheel
(``papermill/tests/notebooks/``, read from the installed package) and small equivalents of
nbclient's notebooks for cell tags and display updates (nbclient's wheel ships none), run
once with papermill's own ``execute_notebook`` and once through the API's runner (the child
process of the subprocess and systemd runners, on a kernel started ahead) with the same
parameters.  The output notebooks are compared whole after normalising what differs between
any two runs (timestamps, durations, cell ids, kernel temp file names, paths):
cells, sources, outputs, execution counts, papermill's metadata and statuses, error markers.

Every difference that remains is in ``EXPECTED`` with its reason.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from exec_api.core.config import Settings
from exec_api.services.runners import Control, Job, SubprocessRunner

PAPERMILL_NOTEBOOKS = Path(papermill.__file__).parent / "tests" / "notebooks"

# Parameters per notebook (papermill's own tests use these); others run without.
PARAMETERS: dict[str, dict[str, Any]] = {
    "simple_execute": {"msg": "Hello"},
    "complex_parameters": {"msg": 'quoted "text" and a \\ backslash', "a": 3.5, "c": None},
    "nb_version_4.4": {"var": 5},
    "report_mode_test": {"a": 2},
    "result_no_exec": {"foo": 2},
    "notimplemented_translator": {"msg": "Hello"},
    "no_parameters": {"x": 1},  # injected at the top, as papermill does
    "stale_outputs": {"a": 1},
    "nulls": {"s": None, "i": None},
}
TIMEOUTS = {"keyboard_interrupt": 3}
SKIPPED = {
    "binder": "runs `python -m papermill` on paths relative to papermill's source tree",
}

# What differs on purpose: notebook -> (what the API does, why).
EXPECTED: dict[str, str] = {
    "blank-vscode": "papermill refuses a notebook that names no kernel (ValueError: No kernel "
    "name found); the API runs it on the platform's default Python kernel, python3",
    "keyboard_interrupt": "papermill leaves no trace of a timeout (CellTimeoutError, every cell "
    "'completed'); the API marks the cell where the run's time ran out as failed, with an error "
    "output naming the timeout and papermill's banner and anchor pointing at it",
}


# ------------------------------------------------------------------ notebooks of our own
def _code(src: str, **meta: Any) -> Any:
    c = nbformat.v4.new_code_cell(src)
    c.metadata.update(meta)
    return c


def _own_notebooks() -> dict[str, Any]:
    """nbclient's cases (its test notebooks are not in its wheel) and the issue's."""
    ks = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbs: dict[str, Any] = {}

    def nb(name: str, *cells: Any) -> None:
        n = nbformat.v4.new_notebook()
        n.metadata["kernelspec"] = ks
        n.cells = list(cells)
        nbs[name] = n

    nb(
        "raises_exception_tag",
        _code("raise ValueError('expected')", tags=["raises-exception"]),
        _code("print('runs on')"),
        _code("raise KeyError('not expected')"),
        _code("print('never')"),
    )
    nb(
        "clear_output_wait",
        _code(
            "from IPython.display import clear_output\n"
            "for i in range(3):\n    clear_output(wait=True)\n    print(i)"
        ),
        _code("from IPython.display import clear_output\nprint('a')\nclear_output()\nprint('b')"),
    )
    nb(
        "update_display_data",
        _code(
            "from IPython.display import display\n"
            "h = display(2, display_id=True)\nh2 = display(3, display_id='x')\n"
            "display(4, display_id='x')"
        ),
        _code("h.update(8)\nh2.update(6)"),
        _code("from IPython.display import update_display\nupdate_display(8, display_id='x')"),
    )
    stale = nbformat.v4.new_notebook()
    stale.metadata["kernelspec"] = ks
    stale.metadata["papermill"] = {"parameters": {"a": 99}, "exception": None}
    p = _code("a = 0", tags=["parameters"])
    fail = _code("1 / a if a == 0 else undefined_name")
    after = _code("print('after')")
    after.execution_count = 99
    after.outputs = [nbformat.v4.new_output("stream", name="stdout", text="STALE output\n")]
    stale.cells = [p, fail, after]
    nbs["stale_outputs"] = stale
    nb("nulls", _code("s = 'x'\ni = 1", tags=["parameters"]), _code("print(repr(s), repr(i))"))
    nb("sysexit_in_middle", _code("import sys\nprint(1)"), _code("sys.exit()"), _code("print(2)"))
    return nbs


# --------------------------------------------------------------------------- normalising
_VOLATILE_NB = ("start_time", "end_time", "duration", "input_path", "output_path")
_PATHS = [
    (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "/tmp/ipykernel_N/N.py"),
    (re.compile(r"ipykernel_\d+"), "ipykernel_N"),
]


def _text(s: str, workdir: str) -> str:
    s = s.replace(workdir, "<workdir>")
    for rx, rep in _PATHS:
        s = rx.sub(rep, s)
    return s


def normalise(nb: dict[str, Any], workdir: str) -> dict[str, Any]:
    # as both would be saved (multi-line strings as lists of lines)
    nb = json.loads(nbformat.writes(nbformat.from_dict(copy.deepcopy(nb))))
    pm = nb.get("metadata", {}).get("papermill", {})
    for k in _VOLATILE_NB:
        pm.pop(k, None)
    for c in nb.get("cells", []):
        c.pop("id", None)
        meta = c.get("metadata", {})
        meta.pop("execution", None)
        for k in _VOLATILE_NB:
            meta.get("papermill", {}).pop(k, None)
        c["outputs"] = _merged_streams(c.get("outputs", []))
        for o in c.get("outputs", []):
            if "text" in o:
                o["text"] = _text("".join(o["text"]), workdir)
            if "traceback" in o:
                o["traceback"] = [_text(t, workdir) for t in o["traceback"]]
            for mime, v in (o.get("data") or {}).items():
                if isinstance(v, str | list):
                    o["data"][mime] = _text("".join(v), workdir)
    return json.loads(json.dumps(nb, sort_keys=True))


def _merged_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive stream outputs of one stream as one: how a kernel's writes are cut into
    messages depends on timing (nbclient does not join them)."""
    out: list[dict[str, Any]] = []
    for o in outputs:
        prev = out[-1] if out else None
        if (
            prev is not None
            and o.get("output_type") == "stream" == prev.get("output_type")
            and o.get("name") == prev.get("name")
        ):
            prev["text"] = "".join(prev["text"]) + "".join(o["text"])
        else:
            out.append(o)
    return out


# ---------------------------------------------------------------------------- the runs
def papermill_run(src: Path, out: Path, params: dict[str, Any], timeout: int | None) -> Any:
    """papermill's result: the output notebook, or the error it raised before one."""
    try:
        papermill.execute_notebook(
            str(src),
            str(out),
            parameters=params or None,
            progress_bar=False,
            cwd=str(src.parent),
            execution_timeout=timeout,
        )
    except PapermillExecutionError:
        # the output is written, with papermill's markers
        return json.loads(out.read_text()), "failed"
    except Exception as e:  # noqa: BLE001 - the reference's own error is the expectation
        return (type(e).__name__, str(e))
    return json.loads(out.read_text()), "succeeded"


def api_run(runner: SubprocessRunner, src: Path, out: Path, params: dict, timeout: int) -> Any:
    from exec_api.services.engine import notebook_kernel

    nb = nbformat.read(str(src), as_version=4)
    o = runner.run(
        Job(
            execution_id=1,
            username="conformance",
            notebook_path=str(src),
            cwd=str(src.parent),
            parameters=params,
            types={},
            timeout_seconds=timeout,
            kernel_name=notebook_kernel(nb)[0],
            output_path=str(out),
        ),
        Control(),
    )
    return o


CASES = sorted({p.stem for p in PAPERMILL_NOTEBOOKS.glob("*.ipynb")} | set(_own_notebooks()))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("conformance")
    for p in PAPERMILL_NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(p, d / p.name)
    for name, nb in _own_notebooks().items():
        nbformat.write(nb, str(d / f"{name}.ipynb"))
    (d / "check.txt").write_text("read_check wants it\n")
    return d


@pytest.fixture(scope="module")
def runner(workdir):
    cfg = Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer="http://i",
        oidc_audience="a",
        notebook_root_template=str(workdir / "{username}"),
        ready_per_user=1,
    )
    r = SubprocessRunner(cfg)
    r.start()
    yield r
    r.close()


@pytest.mark.parametrize("name", CASES)
def test_a_run_is_the_papermill_run(name, workdir, runner):
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    src = workdir / f"{name}.ipynb"
    params = PARAMETERS.get(name, {})
    timeout = TIMEOUTS.get(name)
    ref = papermill_run(src, workdir / f"{name}.papermill.ipynb", params, timeout)
    got = api_run(runner, src, workdir / f"{name}.api.ipynb", params, timeout or 120)

    if name in EXPECTED:
        _expected_difference(name, ref, got)
        return
    if isinstance(ref[0], str):  # papermill raised before it had a notebook to write
        ename, evalue = ref
        assert got.status == "failed", (name, got.status, got.error_message)
        assert got.error_message.startswith(f"{ename}: "), (got.error_message, ref)
        return
    assert got.notebook is not None, (name, got.status, got.error_message)
    ref_nb, ref_status = ref
    want, have = normalise(ref_nb, str(workdir)), normalise(got.notebook, str(workdir))
    assert have == want, f"{name}: the API's output differs from papermill's: {_diff(have, want)}"
    assert got.status == ref_status, (name, got.status, got.error_message)


def _diff(a: Any, b: Any, at: str = "") -> str:
    """The first place two JSON documents differ, with both values."""
    if type(a) is not type(b):
        return f"{at or '/'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, "<missing>") != b.get(k, "<missing>"):
                return _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{at}/{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{at}: {len(a)} items != {len(b)}: {a!r} != {b!r}"[:2000]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _diff(x, y, f"{at}/{i}")
    return f"{at or '/'}: {a!r} != {b!r}"[:2000]


def _expected_difference(name: str, ref: Any, got: Any) -> None:
    if name == "blank-vscode":
        assert ref[0] == "ValueError" and "No kernel name found" in ref[1], ref
        assert got.status == "succeeded", got.error_message
    elif name == "keyboard_interrupt":
        assert ref[0] == "CellTimeoutError", ref
        assert got.status == "timed_out", got
        cells = got.notebook["cells"]
        tags = [c["metadata"].get("tags", []) for c in cells]
        assert tags[0] == ["papermill-error-cell-tag"] and tags[1] == ["papermill-error-cell-tag"]
        stopped = cells[2]
        assert stopped["metadata"]["papermill"]["status"] == "failed"
        assert stopped["outputs"][-1]["ename"] == "TimeoutError"
        assert "timeout of 3 s" in stopped["outputs"][-1]["evalue"]


def test_the_issues_silent_wrong_results_are_gone(workdir, runner):
    """The three silent wrong results, read off the API's outputs."""
    stale = api_run(
        runner, workdir / "stale_outputs.ipynb", workdir / "s.ipynb", {"a": 1}, 60
    ).notebook
    after = stale["cells"][-1]
    assert after["execution_count"] is None and after["outputs"] == [], after
    assert stale["metadata"]["papermill"]["parameters"] == {"a": 1}

    nulls = api_run(
        runner, workdir / "nulls.ipynb", workdir / "n.ipynb", {"s": None, "i": None}, 60
    ).notebook
    assert nulls["cells"][-1]["outputs"][0]["text"] == "None None\n"


def test_a_kernel_that_is_not_installed_fails_the_run(workdir, runner):
    nb = nbformat.read(str(workdir / "simple_execute.ipynb"), as_version=4)
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "language": "python"}
    p = workdir / "nokernel.ipynb"
    nbformat.write(nb, str(p))
    o = api_run(runner, p, workdir / "nk.ipynb", {}, 60)
    assert o.status == "failed"
    assert o.error_message.startswith("NoSuchKernel"), o.error_message
