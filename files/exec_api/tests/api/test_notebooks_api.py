"""/db/notebooks and /db/parameters over HTTP: CRUD, constraints, isolation, path confinement."""

from __future__ import annotations

import os

import psycopg
import pytest
from conftest import wait_status

from exec_api.worker import _psycopg_dsn


def _count(db_url, table, username):
    with psycopg.connect(_psycopg_dsn(db_url)) as c:
        row = c.execute(f"SELECT count(*) FROM {table} WHERE username = %s", (username,)).fetchone()
        return row[0]


def test_crud_and_parameters_from_parameters_cell(app_client, user):
    user.notebook(
        "rep/report.ipynb",
        "print(region)",
        params="region = 'north'  # sales region\nyear: int = 2024\nrate = 0.5\n"
        "flags = [1, 2]\nopts = {'a': 1}\ndebug = False\nwhen = foo()",
    )
    r = app_client.post(
        "/db/notebooks",
        headers=user.headers,
        json={
            "name": "report",
            "file_path": "rep/report.ipynb",
            "description": "d",
            "tags": ["x"],
            "metadata": {"k": 1},
        },
    )
    assert r.status_code == 201, r.text
    nb = r.json()
    assert nb["relative_path"] == "rep/report.ipynb"
    assert nb["file_path"].endswith(f"/{user.name}/notebooks/rep/report.ipynb")
    assert nb["tags"] == ["x"] and nb["metadata"] == {"k": 1}
    found = {p["param_name"]: (p["param_type"], p["default_value"]) for p in nb["parameters"]}
    assert found == {
        "region": ("str", "north"),
        "year": ("int", 2024),
        "rate": ("float", 0.5),
        "flags": ("list", [1, 2]),
        "opts": ("dict", {"a": 1}),
        "debug": ("bool", False),
        "when": ("str", None),
    }
    region = next(p for p in nb["parameters"] if p["param_name"] == "region")
    assert region["description"] == "sales region"

    nid = nb["id"]
    assert app_client.get(f"/db/notebooks/{nid}", headers=user.headers).json()["name"] == "report"
    lst = app_client.get("/db/notebooks", headers=user.headers).json()
    assert [n["id"] for n in lst] == [nid]
    assert [
        n["id"]
        for n in app_client.get(f"/db/notebooks/user/{user.name}", headers=user.headers).json()
    ] == [nid]
    r = app_client.put(
        f"/db/notebooks/{nid}", headers=user.headers, json={"description": "new", "tags": ["y"]}
    )
    assert r.status_code == 200 and r.json()["description"] == "new"
    assert r.json()["tags"] == ["y"]

    # parameters
    r = app_client.post(
        "/db/parameters",
        headers=user.headers,
        json={
            "notebook_id": nid,
            "param_name": "limit",
            "param_type": "int",
            "required": True,
            "validation_rules": {"min": 1, "max": 10},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.json()["required"] is True
    r = app_client.post(
        "/db/parameters",
        headers=user.headers,
        json={"notebook_id": nid, "param_name": "limit", "param_type": "int"},
    )
    assert r.status_code == 409  # unique parameter name per notebook
    r = app_client.post(
        f"/db/parameters/bulk/{nid}",
        headers=user.headers,
        json=[
            {"param_name": "start", "param_type": "date", "default_value": "2024-01-01"},
            {"param_name": "stamp", "param_type": "datetime"},
        ],
    )
    assert r.status_code == 201, r.text
    assert len(app_client.get(f"/db/parameters/notebook/{nid}", headers=user.headers).json()) == 10
    r = app_client.put(
        f"/db/parameters/{pid}",
        headers=user.headers,
        json={"default_value": 5, "description": "rows"},
    )
    assert r.status_code == 200 and r.json()["default_value"] == 5
    r = app_client.put(f"/db/parameters/{pid}", headers=user.headers, json={"default_value": 50})
    assert r.status_code == 422  # default must satisfy the rules
    assert (
        app_client.get(f"/db/parameters/{pid}", headers=user.headers).json()["description"]
        == "rows"
    )
    assert app_client.delete(f"/db/parameters/{pid}", headers=user.headers).status_code == 204
    assert app_client.get(f"/db/parameters/{pid}", headers=user.headers).status_code == 404

    # an execution keeps its row when the notebook goes (ON DELETE SET NULL); parameters go
    r = app_client.post("/db/executions", headers=user.headers, json={"notebook_id": nid})
    assert r.status_code == 202, r.text
    eid = r.json()["execution_id"]
    wait_status(app_client, eid, user.headers)
    assert app_client.delete(f"/db/notebooks/{nid}", headers=user.headers).status_code == 204
    assert app_client.get(f"/db/notebooks/{nid}", headers=user.headers).status_code == 404
    assert app_client.get(f"/db/parameters/notebook/{nid}", headers=user.headers).status_code == 404
    ex = app_client.get(f"/db/executions/{eid}", headers=user.headers).json()
    assert ex["notebook_id"] is None


def test_unique_name_per_user_and_unique_file(app_client, user, make_user):
    user.notebook("a.ipynb", "1")
    user.notebook("b.ipynb", "1")
    h = user.headers
    assert (
        app_client.post(
            "/db/notebooks", headers=h, json={"name": "n", "file_path": "a.ipynb"}
        ).status_code
        == 201
    )
    assert (
        app_client.post(
            "/db/notebooks", headers=h, json={"name": "n", "file_path": "b.ipynb"}
        ).status_code
        == 409
    )
    assert (
        app_client.post(
            "/db/notebooks", headers=h, json={"name": "m", "file_path": "./a.ipynb"}
        ).status_code
        == 409
    )
    other = make_user()
    other.notebook("a.ipynb", "1")
    # same name and same relative path for another user: fine (different areas)
    assert (
        app_client.post(
            "/db/notebooks", headers=other.headers, json={"name": "n", "file_path": "a.ipynb"}
        ).status_code
        == 201
    )


def test_users_are_isolated(app_client, user, make_user):
    user.notebook("mine.ipynb", "1", params="x = 1")
    nid = app_client.post(
        "/db/notebooks", headers=user.headers, json={"name": "mine", "file_path": "mine.ipynb"}
    ).json()["id"]
    other = make_user()
    h = other.headers
    assert app_client.get(f"/db/notebooks/{nid}", headers=h).status_code == 404
    assert app_client.put(f"/db/notebooks/{nid}", headers=h, json={"name": "z"}).status_code == 404
    assert app_client.delete(f"/db/notebooks/{nid}", headers=h).status_code == 404
    assert app_client.get(f"/db/parameters/notebook/{nid}", headers=h).status_code == 404
    assert (
        app_client.post(
            "/db/parameters", headers=h, json={"notebook_id": nid, "param_name": "y"}
        ).status_code
        == 404
    )
    assert (
        app_client.post("/db/executions", headers=h, json={"notebook_id": nid}).status_code == 404
    )
    assert app_client.get("/db/notebooks", headers=h).json() == []
    # registering someone else's file by naming them is refused
    assert (
        app_client.post(
            "/db/notebooks",
            headers=h,
            json={"name": "steal", "file_path": "mine.ipynb", "username": user.name},
        ).status_code
        == 403
    )
    admin = make_user(admin=True)
    assert app_client.get(f"/db/notebooks/{nid}", headers=admin.headers).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd.ipynb",
        "../other/x.ipynb",
        "a/../../x.ipynb",
        "~/x.ipynb",
        "http://evil.example/x.ipynb",
        "s3://bucket/x.ipynb",
        "file:///etc/x.ipynb",
        "gs://b/x.ipynb",
        "notes.txt",
        "a\\..\\x.ipynb",
        "link_out/secret.ipynb",
        "escape.ipynb",
    ],
)
def test_path_escapes_refused_and_nothing_recorded(app_client, user, workdir, db_url, bad):
    outside = workdir / "outside"
    outside.mkdir(exist_ok=True)
    marker = outside / f"ran-{user.name}"
    # a notebook outside the area that would leave a marker if it ever ran
    src = user.notebook("tmp.ipynb", f"open({str(marker)!r}, 'w').write('x')")
    os.replace(src, outside / "secret.ipynb")
    (user.root / "link_out").symlink_to(outside)
    (user.root / "escape.ipynb").symlink_to(outside / "secret.ipynb")
    h = user.headers
    r = app_client.post("/db/notebooks", headers=h, json={"name": "x", "file_path": bad})
    assert r.status_code in (400, 422), r.text
    for path, body in [
        ("/execute", {"path": bad, "wait": True}),
        ("/run-notebook", {"input_path": bad}),
        ("/execute-notebook", {"notebook_path": bad}),
        ("/db/executions", {"notebook_path": bad}),
    ]:
        r = app_client.post(path, headers=h, json=body)
        assert r.status_code in (400, 422), (path, r.status_code, r.text)
    assert _count(db_url, "notebooks", user.name) == 0
    assert _count(db_url, "notebook_executions", user.name) == 0
    assert not marker.exists()


def test_list_notebooks_legacy(app_client, user, workdir):
    user.notebook("a.ipynb", "1")
    user.notebook("sub/b.ipynb", "1")
    (user.root / ".hidden").mkdir()
    user.notebook(".hidden/c.ipynb", "1")
    (user.root / "x.txt").write_text("x")
    (user.root / "out.ipynb").symlink_to(workdir)
    app_client.post(
        "/db/notebooks", headers=user.headers, json={"name": "a", "file_path": "a.ipynb"}
    )
    r = app_client.get(f"/list-notebooks/{user.name}", headers=user.headers)
    assert r.status_code == 200
    got = {e["path"]: e["registered"] for e in r.json()}
    assert got == {"a.ipynb": True, "sub/b.ipynb": False}
