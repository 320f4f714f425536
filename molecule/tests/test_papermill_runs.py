"""Runs on the deployed platform are papermill runs (issue #19): alice, from her own server,
registers a notebook, edits it, and runs it through the exec API (its systemd runner: her own
unit, a kernel started ahead); the output notebook is papermill's.

The package's conformance suite (files/exec_api/tests/services/test_papermill_conformance.py)
compares every notebook papermill ships; these check that the deployed path is that engine.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.papermill

RUN = """
import json
path = notebook("papermill-run.ipynb", ["print(a, b)", "1 / 0", "print('never')"],
                parameters="a = 0\\nb = 1")
s, reg = call("POST", "/db/notebooks", {"name": "papermill-run", "file_path": path})
assert s in (201, 409), (s, reg)
if s == 409:
    s, mine = call("GET", "/db/notebooks")
    reg = next(n for n in mine if n["name"] == "papermill-run")
# The file changes after registration: b = 5 now, and the last cell has a stale output.
full = os.path.expanduser("~/notebooks/" + path)
nb = json.load(open(full))
nb["cells"][0]["source"] = "a = 0\\nb = 5"
nb["cells"][-1]["execution_count"] = 99
nb["cells"][-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "STALE\\n"}]
json.dump(nb, open(full, "w"))
s, sub = call("POST", "/db/executions", {"notebook_id": reg["id"], "parameters": {"a": 2}})
assert s == 202, (s, sub)
eid = sub["execution_id"]
import time
for _ in range(240):
    s, ex = call("GET", f"/db/executions/{eid}")
    if ex["status"] not in ("queued", "running"):
        break
    time.sleep(0.5)
s, out = call("GET", f"/db/executions/{eid}/output")
s2, nulls = call("POST", "/execute", {"path": notebook("papermill-null.ipynb", ["print(repr(s))"],
                                                        parameters="s = 'x'"),
                                        "params": {"s": None}, "wait": True})
s3, nout = call("GET", f"/db/executions/{nulls['execution_id']}/output")
print(json.dumps({"ex": ex, "out": out, "null_run": nulls, "null_out": nout}))
"""


@pytest.fixture(scope="module")
def papermill_run(alice):
    return alice.json(RUN, timeout=300)


def _text(cell):
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))


def test_a_failed_run_has_papermills_banner_and_no_stale_output(papermill_run):
    ex, out = papermill_run["ex"], papermill_run["out"]
    assert ex["status"] == "failed" and ex["runner"] == "systemd", ex
    tags = [c["metadata"].get("tags", []) for c in out["cells"]]
    assert tags[0] == ["papermill-error-cell-tag"], f"no papermill banner on top: {tags}"
    failing = out["cells"][ex["error_detail"]["output_cell_index"]]
    assert failing["metadata"]["papermill"]["status"] == "failed", failing["metadata"]
    assert (
        "papermill-error-cell-tag" in out["cells"][ex["error_detail"]["output_cell_index"] - 1]["metadata"]["tags"]
    ), "no papermill anchor before the failing cell"
    last = out["cells"][-1]
    assert last["execution_count"] is None and last["outputs"] == [], f"a stale output kept: {last}"
    assert out["metadata"]["papermill"]["exception"] is True


def test_a_run_injects_only_what_was_passed(papermill_run):
    ex, out = papermill_run["ex"], papermill_run["out"]
    printed = next(_text(c) for c in out["cells"] if c["source"] in ("print(a, b)", ["print(a, b)"]))
    assert printed == "2 5\n", f"b must keep the file's current default (5), got {printed!r}"
    assert out["metadata"]["papermill"]["parameters"] == {"a": 2}
    assert ex["parameters_used"] == {"a": 2}


def test_null_reaches_the_notebook_as_none(papermill_run):
    run, out = papermill_run["null_run"], papermill_run["null_out"]
    assert run["status"] == "succeeded", run
    assert _text(out["cells"][-1]) == "None\n"
