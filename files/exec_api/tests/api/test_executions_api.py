"""Executions over HTTP with real kernels: parameters, outcomes, timeout, cancel, legacy
endpoints, history, isolation."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import count_executions, wait_status


def _register(client, user, rel, *cells, params=None, extra=None):
    user.notebook(rel, *cells, params=params)
    r = client.post(
        "/db/notebooks", headers=user.headers, json={"name": rel, "file_path": rel, **(extra or {})}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def typed(app_client, user):
    nid = _register(
        app_client,
        user,
        "typed.ipynb",
        "print(json.dumps({'n': n, 'ratio': ratio, 'name': name, 'on': on, "
        "'items': items, 'cfg': cfg, 'day': day.isoformat(), "
        "'at': at.isoformat(), 'types': [type(v).__name__ for v in "
        "(n, ratio, name, on, items, cfg, day, at)]}))",
        params="import json\nn = 1",
        extra={"detect_parameters": False},
    )
    r = app_client.post(
        f"/db/parameters/bulk/{nid}",
        headers=user.headers,
        json=[
            {
                "param_name": "n",
                "param_type": "int",
                "required": True,
                "validation_rules": {"min": 1, "max": 100},
            },
            {"param_name": "ratio", "param_type": "float", "default_value": 0.5},
            {
                "param_name": "name",
                "param_type": "str",
                "default_value": "abc",
                "validation_rules": {"regex": "[a-z'\";() ]+", "max_length": 60},
            },
            {"param_name": "on", "param_type": "bool", "default_value": False},
            {
                "param_name": "items",
                "param_type": "list",
                "default_value": [],
                "validation_rules": {"max_length": 3},
            },
            {"param_name": "cfg", "param_type": "dict", "default_value": {}},
            {
                "param_name": "day",
                "param_type": "date",
                "default_value": "2024-02-29",
                "validation_rules": {"min": "2024-01-01"},
            },
            {"param_name": "at", "param_type": "datetime", "default_value": "2024-01-01T10:00:00"},
            {
                "param_name": "mode",
                "param_type": "str",
                "default_value": "fast",
                "validation_rules": {"choices": ["fast", "slow"]},
            },
        ],
    )
    assert r.status_code == 201, r.text
    return nid


def _text(o):
    t = o["text"]
    return "".join(t) if isinstance(t, list) else t


def _output_json(client, user, eid):
    out = client.get(f"/db/executions/{eid}/output", headers=user.headers)
    assert out.status_code == 200
    nb = out.json()
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o.get("name") == "stdout" and _text(o).startswith("{"):
                return json.loads(_text(o))
    raise AssertionError(nb)


def test_typed_parameters_merged_coerced_and_injected_as_data(app_client, user, typed):
    r = app_client.post(
        "/db/executions",
        headers=user.headers,
        json={
            "notebook_id": typed,
            "parameters": {
                "n": "7",
                "on": True,
                "items": [1, "b"],
                "name": 'o\'neil "x" ();',
                "cfg": {"k": [1]},
            },
        },
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["execution"]["parameters_used"]["n"] == 7
    ex = wait_status(app_client, body["execution_id"], user.headers)
    assert ex["status"] == "succeeded", ex
    assert ex["execution_time_seconds"] is not None and ex["duration_seconds"] > 0
    assert ex["completed_at"] >= ex["started_at"] >= ex["submitted_at"][:19]
    got = _output_json(app_client, user, ex["id"])
    assert got == {
        "n": 7,
        "ratio": 0.5,
        "name": 'o\'neil "x" ();',
        "on": True,
        "items": [1, "b"],
        "cfg": {"k": [1]},
        "day": "2024-02-29",
        "at": "2024-01-01T10:00:00",
        "types": ["int", "float", "str", "bool", "list", "dict", "date", "datetime"],
    }


@pytest.mark.parametrize(
    "params,name",
    [
        ({"n": 5, "undeclared": 1}, "undeclared"),
        ({"n": 5, "x; import os": 1}, "x; import os"),
        ({"n": 5, "__import__('os').system('id')": 1}, "__import__('os').system('id')"),
        ({"n": 5, "a-b": 1}, "a-b"),
        ({"n": 5, "class": 1}, "class"),
        ({"n": 5, "__builtins__": 1}, "__builtins__"),
        ({}, "n"),  # required
        ({"n": "seven"}, "n"),
        ({"n": 500}, "n"),  # max
        ({"n": 5, "ratio": "NaN"}, "ratio"),
        ({"n": 5, "on": "yes"}, "on"),
        ({"n": 5, "items": [1, 2, 3, 4]}, "items"),
        ({"n": 5, "name": "UPPER"}, "name"),  # regex
        ({"n": 5, "day": "2023-12-31"}, "day"),  # min date
        ({"n": 5, "day": "not a date"}, "day"),
        ({"n": 5, "mode": "medium"}, "mode"),  # choices
        ({"n": 5, "cfg": [1]}, "cfg"),
    ],
)
def test_bad_parameters_refused_by_name_and_nothing_recorded(
    app_client, user, typed, db_url, params, name
):
    for path, body in [
        ("/db/executions", {"notebook_id": typed, "parameters": params}),
        ("/execute-notebook", {"notebook_id": typed, "parameters": params}),
        ("/execute", {"path": "typed.ipynb", "params": params}),
    ]:
        r = app_client.post(path, headers=user.headers, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"]["parameter"] == name, r.json()
    assert count_executions(db_url, user.name) == 0


def test_value_injection_is_inert(app_client, user, workdir):
    marker = workdir / f"pwned-{user.name}"
    nid = _register(app_client, user, "inj.ipynb", "print(repr(s))", params="s = 'x'")
    evil = [
        f"'); open({str(marker)!r}, 'w').write('x'); ('",
        f'"""\nopen({str(marker)!r}, \'w\')\n"""',
        f"\\'); open({str(marker)!r}, 'w') #",
        "\n".join(["x", f"open({str(marker)!r},'w')"]),
    ]
    ids = []
    for v in evil:
        r = app_client.post(
            "/db/executions",
            headers=user.headers,
            json={"notebook_id": nid, "parameters": {"s": v}},
        )
        assert r.status_code == 202
        ids.append((r.json()["execution_id"], v))
    for eid, v in ids:
        ex = wait_status(app_client, eid, user.headers)
        assert ex["status"] == "succeeded", ex
        out = app_client.get(f"/db/executions/{eid}/output", headers=user.headers).json()
        printed = _text(out["cells"][-1]["outputs"][0]).strip()
        assert printed == repr(v)
    assert not marker.exists()


def test_failing_cell_recorded_with_error_and_output(app_client, user):
    nid = _register(
        app_client, user, "fail.ipynb", "a = 1", "print('before')\n1/0", "print('never')"
    )
    r = app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid})
    ex = wait_status(app_client, r.json()["execution_id"], user.headers)
    assert ex["status"] == "failed"
    assert "ZeroDivisionError" in ex["error_message"] and "cell 1" in ex["error_message"]
    assert ex["error_detail"]["cell_index"] == 1
    assert ex["error_detail"]["ename"] == "ZeroDivisionError"
    out = app_client.get(f"/db/executions/{ex['id']}/output", headers=user.headers).json()
    # papermill's banner at the top and its anchor before the failing cell
    assert out["cells"][0]["metadata"]["tags"] == ["papermill-error-cell-tag"]
    assert ex["error_detail"]["output_cell_index"] == 3
    failing = out["cells"][3]
    assert _text(failing["outputs"][0]) == "before\n"
    assert failing["metadata"]["papermill"]["status"] == "failed"
    assert out["cells"][4]["outputs"] == [] and out["cells"][4]["execution_count"] is None
    assert out["metadata"]["papermill"]["exception"] is True


def test_timeout(app_client, user):
    nid = _register(app_client, user, "slow.ipynb", "import time\ntime.sleep(60)")
    t0 = time.monotonic()
    r = app_client.post(
        "/db/executions", headers=user.headers, json={"notebook_id": nid, "timeout_seconds": 2}
    )
    ex = wait_status(app_client, r.json()["execution_id"], user.headers, timeout=30)
    assert ex["status"] == "timed_out", ex
    assert time.monotonic() - t0 < 15
    assert 1.5 < ex["duration_seconds"] < 10


def test_cancel_running_kills_kernel_and_children(app_client, user, workdir):
    pidfile = workdir / f"pids-{user.name}.json"
    nid = _register(
        app_client,
        user,
        "spawn.ipynb",
        "import os, subprocess, json, time\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pidfile)!r}, 'w').write(json.dumps([os.getpid(), p.pid]))\n"
        "time.sleep(300)",
    )
    r = app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid})
    eid = r.json()["execution_id"]
    deadline = time.time() + 30
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    kernel_pid, child_pid = json.loads(pidfile.read_text())
    assert _pid_alive(kernel_pid) and _pid_alive(child_pid)
    r = app_client.post(f"/db/executions/{eid}/cancel", headers=user.headers)
    assert r.status_code == 200
    assert r.json()["cancel_requested"] is True
    ex = wait_status(app_client, eid, user.headers, timeout=20)
    assert ex["status"] == "cancelled"
    deadline = time.time() + 5
    while (_pid_alive(kernel_pid) or _pid_alive(child_pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(kernel_pid)
    assert not _pid_alive(child_pid)
    assert app_client.post(f"/db/executions/{eid}/cancel", headers=user.headers).status_code == 409


def test_cancel_queued(app_client, user):
    nid = _register(app_client, user, "busy.ipynb", "import time\ntime.sleep(30)")
    ids = [
        app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid}).json()[
            "execution_id"
        ]
        for _ in range(3)
    ]
    # concurrency is 2: the third one waits in the queue
    last = ids[-1]
    r = app_client.post(f"/db/executions/{last}/cancel", headers=user.headers)
    assert r.status_code == 200
    assert r.json()["status"] in ("cancelled", "running")
    for eid in ids:
        app_client.post(f"/db/executions/{eid}/cancel", headers=user.headers)
    for eid in ids:
        assert wait_status(app_client, eid, user.headers, timeout=20)["status"] == "cancelled"


def test_legacy_endpoints_are_aliases(app_client, user):
    user.notebook("legacy.ipynb", "print(x * 2)", params="x = 1")
    h = user.headers
    r = app_client.post(
        "/execute",
        headers=h,
        json={"user": user.name, "path": "legacy.ipynb", "params": {"x": 21}, "wait": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["output_path"].endswith(f"/{user.name}/{r.json()['execution_id']}.ipynb")
    r = app_client.post(
        "/run-notebook",
        headers=h,
        json={"input_path": "legacy.ipynb", "output_path": "/etc/x.ipynb", "parameters": {"x": 2}},
    )
    assert r.status_code == 202 and r.json()["status"] == "queued"
    ex = wait_status(app_client, r.json()["execution_id"], h)
    assert ex["status"] == "succeeded" and ex["output_path"] != "/etc/x.ipynb"
    r = app_client.post(
        "/execute-notebook", headers=h, json={"notebook_path": "legacy.ipynb", "wait": True}
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    # the prototype's user must match the token
    r = app_client.post(
        "/execute", headers=h, json={"user": "someone-else", "path": "legacy.ipynb"}
    )
    assert r.status_code == 403
    r = app_client.post("/execute", headers=h, json={"path": "missing.ipynb"})
    assert r.status_code == 404


def test_history_filters_paging_and_isolation(app_client, user, make_user):
    nid = _register(app_client, user, "h.ipynb", "1")
    ids = []
    for _ in range(3):
        ids.append(
            app_client.post(
                "/db/executions", headers=user.headers, json={"notebook_id": nid}
            ).json()["execution_id"]
        )
    for eid in ids:
        wait_status(app_client, eid, user.headers)
    r = app_client.get("/db/executions", headers=user.headers, params={"limit": 2})
    assert r.status_code == 200
    assert r.headers["X-Total-Count"] == "3"
    assert [e["id"] for e in r.json()] == sorted(ids, reverse=True)[:2]
    r = app_client.get(
        "/db/executions",
        headers=user.headers,
        params={"skip": 2, "limit": 2, "status": "succeeded", "notebook_id": nid},
    )
    assert [e["id"] for e in r.json()] == [min(ids)]
    assert (
        app_client.get("/db/executions", headers=user.headers, params={"status": "failed"}).json()
        == []
    )
    r = app_client.get(f"/db/executions/notebook/{nid}", headers=user.headers)
    assert len(r.json()) == 3
    other = make_user()
    assert app_client.get("/db/executions", headers=other.headers).json() == []
    assert app_client.get(f"/db/executions/{ids[0]}", headers=other.headers).status_code == 404
    assert (
        app_client.get(f"/db/executions/{ids[0]}/output", headers=other.headers).status_code == 404
    )
    assert (
        app_client.post(f"/db/executions/{ids[0]}/cancel", headers=other.headers).status_code == 404
    )
    assert (
        app_client.get(
            "/db/executions", headers=other.headers, params={"username": user.name}
        ).status_code
        == 403
    )
    admin = make_user(admin=True)
    r = app_client.get("/db/executions", headers=admin.headers, params={"username": user.name})
    assert len(r.json()) == 3


def test_metrics_count_outcomes(app_client, user):
    nid = _register(app_client, user, "m.ipynb", "1")
    eid = app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid}).json()[
        "execution_id"
    ]
    wait_status(app_client, eid, user.headers)
    m = app_client.get("/metrics", headers=user.headers).text
    assert 'exec_api_executions_total{status="succeeded"}' in m
    assert "exec_api_execution_duration_seconds_bucket" in m


def test_notebooks_cannot_read_service_secrets(app_client, user):
    assert os.environ.get("EXEC_API_DATABASE_URL")  # the service has it...
    nid = _register(
        app_client, user, "env.ipynb", "import os, json\nprint(json.dumps(sorted(os.environ)))"
    )
    eid = app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid}).json()[
        "execution_id"
    ]
    assert wait_status(app_client, eid, user.headers)["status"] == "succeeded"
    out = app_client.get(f"/db/executions/{eid}/output", headers=user.headers).json()
    keys = json.loads(_text(out["cells"][-1]["outputs"][0]))
    assert "PATH" in keys
    assert not [k for k in keys if k.startswith(("EXEC_API_", "PG"))]  # ...the notebook not
