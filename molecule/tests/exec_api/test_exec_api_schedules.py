"""Schedules on the booted exec API host (the worker inside the API's service): a schedule every
minute fires at least twice, each run starting within seconds of its planned minute, as its
owner with the schedule's parameters; a failing notebook's schedule retries once, the retry its
own execution linked to the first try, and then its webhook (a sink on the provider's host) gets
the failure, signed; a webhook to the API's own host is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from exec_api.client import ExecApiError

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "skipped")
ON_TIME = 10.0  # seconds from the planned minute to the run's start (the scheduler looks every 5 s)


SINK_PORT = 8765
# A webhook receiver on the provider's host: each POST's headers and body, one JSON line each.
SINK = """
import json, http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("/tmp/webhook-sink.jsonl", "a") as f:
            f.write(json.dumps({"headers": dict(self.headers), "body": body.decode()}) + "\\n")
        self.send_response(204)
        self.end_headers()
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture(scope="module")
def sink(group_hosts, hostvars):
    """The sink's URL; its requests are read with sink.got()."""
    host = group_hosts("oidc_test_provider")[0]
    host.run("systemctl stop webhook-sink; rm -f /tmp/webhook-sink.jsonl")
    host.check_output("echo %s | base64 -d > /tmp/webhook-sink.py", base64.b64encode(SINK.encode()).decode())
    host.check_output("systemd-run --unit=webhook-sink --collect python3 /tmp/webhook-sink.py %s", str(SINK_PORT))
    address = hostvars[host.backend.get_hostname()]["ansible_host"]

    class Sink:
        url = f"http://{address}:{SINK_PORT}/hook"

        @staticmethod
        def got() -> list[dict]:
            out = host.run("cat /tmp/webhook-sink.jsonl")
            return [json.loads(line) for line in out.stdout.splitlines()]

    yield Sink
    host.run("systemctl stop webhook-sink")


@pytest.fixture(scope="module")
def fired(exec_api, notebook, sink) -> dict:
    alice = exec_api("alice")
    for nb in alice.notebooks():
        if nb.name in ("tick", "flaky"):
            alice.delete_notebook(nb.id)  # a re-run starts clean (schedules go with their notebook)
    notebook("alice", "tick.ipynb", ["import getpass; print('tick', getpass.getuser(), n)"])
    notebook("alice", "flaky.ipynb", ["raise RuntimeError('flaky on purpose')"])
    tick = alice.create_schedule(alice.register_notebook("tick.ipynb", name="tick").id, "* * * * *",
                                 parameters={"n": 5}, overlap_policy="queue")  # fmt: skip
    flaky = alice.create_schedule(alice.register_notebook("flaky.ipynb", name="flaky").id, "* * * * *",
                                  retry_attempts=1, retry_backoff_seconds=5)  # fmt: skip
    hook = alice.subscribe("webhook", sink.url, schedule_id=flaky.id)
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        ticks = [r for r in alice.history(schedule_id=tick.id) if r.status in TERMINAL]
        retried = [r for r in alice.history(schedule_id=flaky.id) if r.try_number == 2 and r.status in TERMINAL]
        if len(ticks) >= 2 and retried and sink.got():
            break
        time.sleep(3)
    alice.pause_schedule(tick.id)
    alice.pause_schedule(flaky.id)
    return {"tick": alice.history(schedule_id=tick.id), "flaky": alice.history(schedule_id=flaky.id),
            "tick_id": tick.id, "secret": hook.secret, "posts": sink.got()}  # fmt: skip


def test_a_minutely_schedule_fires_twice_on_time(fired):
    runs = sorted((r for r in fired["tick"] if r.status in TERMINAL), key=lambda r: r.planned_for)
    assert len(runs) >= 2, [(r.id, r.status, r.planned_for) for r in fired["tick"]]
    planned = [r.planned_for for r in runs]
    assert all(p.second == 0 and p.microsecond == 0 for p in planned), planned
    assert len(set(planned)) == len(planned), f"a planned minute ran twice: {planned}"
    late = {r.id: (r.started_at - r.planned_for).total_seconds() for r in runs}
    print(f"scheduled runs started after their planned minute (s): {sorted(late.values())}")
    assert all(0 <= s <= ON_TIME for s in late.values()), late


def test_its_runs_are_alices_with_the_schedules_parameters(exec_api, fired):
    alice = exec_api("alice")
    run = next(r for r in fired["tick"] if r.status in TERMINAL)
    assert run.status == "succeeded" and run.parameters_used == {"n": 5}, (run.status, run.error_message)
    assert "tick alice 5" in alice.output(run.id).decode()


def test_a_failing_schedule_retries_once_as_its_own_linked_run(fired):
    runs = sorted(fired["flaky"], key=lambda r: r.id)
    first = next(r for r in runs if r.try_number == 1 and r.status == "failed")
    retries = [r for r in runs if r.retry_of == first.id]
    assert [(r.try_number, r.status, r.planned_for) for r in retries] == [(2, "failed", first.planned_for)], runs
    assert "flaky on purpose" in (retries[0].error_message or "")
    assert not [r for r in runs if r.try_number > 2], "more tries than retry_attempts allows"


def test_the_failure_is_posted_to_the_webhook_signed_after_the_retry(fired):
    """Only the retry's failure is a failure (the first try had a retry to follow)."""
    retry = next(r for r in fired["flaky"] if r.try_number == 2 and r.status == "failed")
    posts = [p for p in fired["posts"] if json.loads(p["body"])["execution"]["id"] == retry.id]
    assert posts, f"no POST for run {retry.id}: {[json.loads(p['body'])['execution']['id'] for p in fired['posts']]}"
    body, headers = posts[0]["body"], posts[0]["headers"]
    doc = json.loads(body)
    assert doc["event"] == "failure" and doc["execution"]["username"] == "alice", doc
    assert doc["execution"]["retry_of"] == retry.retry_of and "flaky on purpose" in doc["execution"]["error_message"]
    t, v1 = (part.split("=", 1)[1] for part in headers["X-Exec-Api-Signature"].split(","))
    want = hmac.new(fired["secret"].encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, want), "the signature does not verify with the subscription's secret"
    first_tries = {r.id for r in fired["flaky"] if r.try_number == 1}
    assert not [p for p in fired["posts"] if json.loads(p["body"])["execution"]["id"] in first_tries]


@pytest.mark.parametrize("target", ["http://127.0.0.1:8000/db/notebooks", "http://localhost:5432/"])
def test_a_webhook_to_the_platforms_own_host_is_refused(exec_api, target):
    with pytest.raises(ExecApiError) as e:
        exec_api("alice").subscribe("webhook", target)
    assert e.value.status_code == 422 and e.value.detail["field"] == "target", e.value.detail
