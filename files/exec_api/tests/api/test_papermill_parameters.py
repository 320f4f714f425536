"""Parameters as papermill means them, through the API: only what the caller passes (and
defaults a user set through the API) is injected; the notebook keeps its own defaults, as the
file has them at run time; ``null`` is a value; papermill's options the API does not take are
refused by name; report mode hides inputs."""

from __future__ import annotations

from conftest import wait_status


def _register(client, user, rel, *cells, params=None):
    user.notebook(rel, *cells, params=params)
    r = client.post("/db/notebooks", headers=user.headers, json={"name": rel, "file_path": rel})
    assert r.status_code == 201, r.text
    return r.json()


def _run(client, user, body):
    r = client.post("/db/executions", headers=user.headers, json=body)
    assert r.status_code == 202, r.text
    ex = wait_status(client, r.json()["execution_id"], user.headers)
    out = client.get(f"/db/executions/{ex['id']}/output", headers=user.headers).json()
    return ex, out


def _printed(out):
    t = out["cells"][-1]["outputs"][0]["text"]
    return "".join(t) if isinstance(t, list) else t


def test_a_run_keeps_the_notebooks_current_defaults(app_client, user):
    nb = _register(app_client, user, "defaults.ipynb", "print(a, b)", params="a = 0\nb = 1")
    params = {p["param_name"]: p for p in nb["parameters"]}
    assert params["b"]["default_value"] == 1 and params["b"]["default_from_notebook"] is True
    # The file changes after registration: b = 5 now.
    user.notebook("defaults.ipynb", "print(a, b)", params="a = 0\nb = 5\nc = 'new'")
    ex, out = _run(app_client, user, {"notebook_id": nb["id"], "parameters": {"a": 2}})
    assert ex["status"] == "succeeded", ex
    assert _printed(out) == "2 5\n"  # papermill: b keeps the file's value
    assert ex["parameters_used"] == {"a": 2}
    injected = next(c for c in out["cells"] if "injected-parameters" in c["metadata"]["tags"])
    assert "".join(injected["source"]) == "# Parameters\na = 2\n"
    assert out["metadata"]["papermill"]["parameters"] == {"a": 2}
    # The declarations followed the file: b's default, and c is declared.
    got = app_client.get(f"/db/parameters/notebook/{nb['id']}", headers=user.headers).json()
    by = {p["param_name"]: p for p in got}
    assert by["b"]["default_value"] == 5 and by["c"]["default_value"] == "new"


def test_a_default_set_through_the_api_is_injected_and_null_gives_the_file_back(app_client, user):
    nb = _register(app_client, user, "userdef.ipynb", "print(b)", params="b = 1")
    pid = nb["parameters"][0]["id"]
    r = app_client.put(f"/db/parameters/{pid}", headers=user.headers, json={"default_value": 7})
    assert r.status_code == 200 and r.json()["default_from_notebook"] is False, r.text
    ex, out = _run(app_client, user, {"notebook_id": nb["id"]})
    assert _printed(out) == "7\n" and ex["parameters_used"] == {"b": 7}
    r = app_client.put(f"/db/parameters/{pid}", headers=user.headers, json={"default_value": None})
    assert r.json()["default_from_notebook"] is True, r.text
    ex, out = _run(app_client, user, {"notebook_id": nb["id"]})
    assert _printed(out) == "1\n" and ex["parameters_used"] == {}


def test_null_is_passed_as_none(app_client, user):
    nb = _register(
        app_client, user, "nulls.ipynb", "print(repr(s), repr(i))", params="s = 'x'\ni = 1"
    )
    ex, out = _run(
        app_client, user, {"notebook_id": nb["id"], "parameters": {"s": None, "i": None}}
    )
    assert ex["status"] == "succeeded" and _printed(out) == "None None\n"


def test_papermill_options_the_api_does_not_take_are_refused_by_name(app_client, user):
    user.notebook("opts.ipynb", "1")
    for field in ("cwd", "log_output", "kernel_name", "no_such_field"):
        r = app_client.post(
            "/db/executions",
            headers=user.headers,
            json={"notebook_path": "opts.ipynb", field: "x"},
        )
        assert r.status_code == 422, (field, r.text)
        assert field in r.text, r.text
    r = app_client.post("/execute", headers=user.headers, json={"path": "opts.ipynb", "cwd": "/"})
    assert r.status_code == 422 and "cwd is not supported" in r.text, r.text


def test_report_mode_hides_inputs(app_client, user):
    user.notebook("report.ipynb", "print(1)")
    ex, out = _run(app_client, user, {"notebook_path": "report.ipynb", "report_mode": True})
    assert ex["status"] == "succeeded" and ex["report_mode"] is True
    assert out["cells"][-1]["metadata"]["jupyter"]["source_hidden"] is True
