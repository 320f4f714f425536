"""Schedules on the booted exec API host (the worker inside the API's service): a schedule every
minute fires at least twice, each run starting within seconds of its planned minute, as its
owner with the schedule's parameters; a failing notebook's schedule retries once, the retry its
own execution linked to the first try."""

from __future__ import annotations

import time

import pytest

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "skipped")
ON_TIME = 10.0  # seconds from the planned minute to the run's start (the scheduler looks every 5 s)


@pytest.fixture(scope="module")
def fired(exec_api, notebook) -> dict:
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
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        ticks = [r for r in alice.history(schedule_id=tick.id) if r.status in TERMINAL]
        retried = [r for r in alice.history(schedule_id=flaky.id) if r.try_number == 2 and r.status in TERMINAL]
        if len(ticks) >= 2 and retried:
            break
        time.sleep(3)
    alice.pause_schedule(tick.id)
    alice.pause_schedule(flaky.id)
    return {"tick": alice.history(schedule_id=tick.id), "flaky": alice.history(schedule_id=flaky.id),
            "tick_id": tick.id}  # fmt: skip


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
