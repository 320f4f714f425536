"""The typed client and the ``exec-api`` command line, against the real app over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import uvicorn
from conftest import PKG
from pg import free_port

from exec_api.client import ExecApiClient, ExecApiError


@pytest.fixture(scope="module")
def server(app_client):
    # Serve the module's app (already started, with its worker) on a real port.
    port = free_port()
    cfg = uvicorn.Config(
        app_client.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    srv = uvicorn.Server(cfg)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(timeout=10)


def test_client_flow(server, user, tmp_path):
    user.notebook("c.ipynb", "print(n + 1)", params="n = 1")
    tok = user.headers["Authorization"].split()[1]
    with ExecApiClient(server, tok) as api:
        nb = api.register_notebook("c.ipynb", "c")
        assert [p.param_name for p in nb.parameters] == ["n"]
        api.declare_parameter(nb.id, "label", "str", default="x")
        assert {p.param_name for p in api.parameters(nb.id)} == {"n", "label"}
        ex = api.run(notebook_id=nb.id, parameters={"n": 41})
        assert ex.status == "queued"
        ex = api.wait(ex.id, timeout=60)
        assert ex.status == "succeeded"
        out = api.download_output(ex.id, tmp_path / "o.ipynb")
        assert "42" in out.read_text()
        assert [h.id for h in api.history(notebook_id=nb.id)] == [ex.id]
        with pytest.raises(ExecApiError) as ei:
            api.run(notebook_id=nb.id, parameters={"bogus": 1})
        assert ei.value.status_code == 422 and ei.value.detail["parameter"] == "bogus"


def command_line(server, user, tmp_path):
    """cli(*args) -> (exit code, stdout, stderr) of `exec-api` as the user (token in a file)."""
    tokfile = tmp_path / "tok"
    tokfile.write_text(user.headers["Authorization"].split()[1])
    env = {"EXEC_API_URL": server, "EXEC_API_TOKEN_FILE": str(tokfile), "PATH": "/usr/bin:/bin"}

    def cli(*args):
        r = subprocess.run(
            [sys.executable, "-m", "exec_api.cli", *args],
            cwd=PKG,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return r.returncode, r.stdout, r.stderr

    return cli


def test_cli(server, user, tmp_path):
    user.notebook("cli.ipynb", "print(str(n) * 2)", params="n = 1")
    cli = command_line(server, user, tmp_path)

    code, out, err = cli("register", "cli.ipynb", "--name", "cli")
    assert code == 0, err
    nid = json.loads(out)["id"]
    code, out, err = cli("declare", str(nid), "tag", "--type", "str", "--default", "t")
    assert code == 0, err
    code, out, err = cli(
        "run", "--id", str(nid), "-p", "n=7", "--wait", "-o", str(tmp_path / "out.ipynb")
    )
    assert code == 0, err
    ex = json.loads(out)
    assert ex["status"] == "succeeded"
    assert "77" in (tmp_path / "out.ipynb").read_text()
    code, out, _ = cli("history")
    assert [e["id"] for e in json.loads(out)] == [ex["id"]]
    code, out, _ = cli("output", str(ex["id"]))
    assert json.loads(out)["cells"]
    code, _, err = cli("run", "--path", "../x.ipynb")
    assert code == 2 and "400" in err


def test_schedules_from_the_client_and_the_command_line(server, user, tmp_path):
    user.notebook("sched.ipynb", "print(str(n) * 3)", params="n = 1")
    cli = command_line(server, user, tmp_path)

    code, out, err = cli("register", "sched.ipynb", "--name", "sched")
    assert code == 0, err
    nid = json.loads(out)["id"]
    code, out, err = cli(
        "schedule",
        str(nid),
        "0 6 * * 1-5",
        "--timezone",
        "Europe/Berlin",
        "-p",
        "n=4",
        "--retries",
        "2",
        "--overlap",
        "queue",
    )
    assert code == 0, err
    sch = json.loads(out)
    assert (sch["cron"], sch["timezone"], sch["parameters"], sch["retry_attempts"]) == (
        "0 6 * * 1-5",
        "Europe/Berlin",
        {"n": 4},
        2,
    )
    code, out, err = cli("schedule", str(nid), "0 6 * * * *")
    assert code == 2 and "422" in err and "five fields" in err
    code, out, err = cli("schedule", str(nid), "0 6 * * *", "--timezone", "Nowhere/Special")
    assert code == 2 and "no time zone" in err
    code, out, _ = cli("schedules")
    assert [s["id"] for s in json.loads(out)] == [sch["id"]]
    code, out, _ = cli("pause", str(sch["id"]))
    assert json.loads(out)["paused"] is True
    code, out, err = cli("run-now", str(sch["id"]))
    assert code == 0, err
    with ExecApiClient(server, user.headers["Authorization"].split()[1]) as api:
        ex = api.wait(json.loads(out)["id"], timeout=120)
        assert ex.status == "succeeded" and ex.schedule_id == sch["id"]
        assert [e.id for e in api.history(schedule_id=sch["id"])] == [ex.id]
        assert api.resume_schedule(sch["id"]).paused is False
        assert api.update_schedule(sch["id"], cron="30 7 * * *").cron == "30 7 * * *"
    code, _, err = cli("unschedule", str(sch["id"]))
    assert code == 0, err
    code, out, _ = cli("schedules")
    assert json.loads(out) == []


def test_without_an_address_nothing_is_sent_and_the_error_says_what_to_set(tmp_path, monkeypatch):
    """No default address: a token never goes to a local port another user may listen on."""
    monkeypatch.delenv("EXEC_API_URL", raising=False)
    with pytest.raises(ExecApiError, match="set EXEC_API_URL"):
        ExecApiClient(token="t")
    tokfile = tmp_path / "tok"
    tokfile.write_text("secret-token")
    r = subprocess.run(
        [sys.executable, "-m", "exec_api.cli", "notebooks"],
        cwd=PKG,
        env={"EXEC_API_TOKEN_FILE": str(tokfile), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "set EXEC_API_URL" in r.stderr, (r.returncode, r.stderr)
