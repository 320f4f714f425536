from conftest import wait_status


def test_register_and_run(app_client, user):
    user.notebook("hello.ipynb", "print(greeting * times)", params="greeting = 'hi'\ntimes = 2")
    r = app_client.post(
        "/db/notebooks", json={"name": "hello", "file_path": "hello.ipynb"}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    nb = r.json()
    assert {p["param_name"]: p["param_type"] for p in nb["parameters"]} == {
        "greeting": "str",
        "times": "int",
    }
    r = app_client.post(
        "/db/executions",
        json={"notebook_id": nb["id"], "parameters": {"times": 3}},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    ex = wait_status(app_client, r.json()["execution_id"], user.headers)
    assert ex["status"] == "succeeded", ex
    out = app_client.get(f"/db/executions/{ex['id']}/output", headers=user.headers)
    assert out.status_code == 200
    assert "hihihi" in out.text
