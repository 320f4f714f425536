"""Fair share, against the real PostgreSQL: per-user queued and running limits, and the claim
order (the user with the fewest running runs, then the oldest), with several workers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from freshdb import fresh_sessions
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from exec_api.services import queue as q


@pytest.fixture
def sf(pg: Any) -> Iterator[sessionmaker[Session]]:
    yield from fresh_sessions(pg, "fair")


def submit(
    sf: sessionmaker[Session], user: str, n: int = 1, max_queued: int | None = None
) -> list[int]:
    ids = []
    for _ in range(n):
        with sf() as db:
            ex = q.submit(
                db,
                username=user,
                input_path="n.ipynb",
                notebook_id=None,
                parameters={},
                timeout_seconds=60,
                runner="local",
                max_queued=max_queued,
            )
            ids.append(ex.id)
    return ids


def claim(sf: sessionmaker[Session], worker: int, max_running: int = 2) -> q.Claimed | None:
    with sf() as db:
        return q.claim(db, worker, 60, max_running=max_running)


def finish(sf: sessionmaker[Session], job: q.Claimed, worker: int) -> None:
    with sf() as db:
        assert q.finish(db, job.id, worker, status="succeeded", duration=0.1)


def running(sf: sessionmaker[Session]) -> Counter[str]:
    with sf() as db:
        rows = db.execute(
            text("SELECT username FROM notebook_executions WHERE status = 'running'")
        ).scalars()
        return Counter(rows)


def test_bobs_single_run_starts_before_alices_backlog_drains(sf):
    alice = submit(sf, "alice", 50)
    (bob,) = submit(sf, "bob")
    # Two workers take the first two runs: alice's oldest, then bob's (he has none running),
    # not alice's second (strict FIFO would make bob wait for all 50).
    first, second = claim(sf, 1), claim(sf, 2)
    assert first is not None and second is not None
    assert (first.id, second.id) == (alice[0], bob), (first, second)
    # bob's run ends; alice's backlog goes on in order, two at a time.
    finish(sf, second, 2)
    third = claim(sf, 2)
    assert third is not None and third.id == alice[1]
    assert claim(sf, 3) is None, "alice already has 2 running"
    with sf() as db:
        assert q.queued_count(db, "alice") == 48


def test_the_user_with_fewest_running_goes_first_then_the_oldest(sf):
    a = submit(sf, "alice", 3)
    b = submit(sf, "bob", 3)
    c = submit(sf, "carol", 1)
    order = [claim(sf, w, max_running=5) for w in range(1, 8)]
    assert [j.id for j in order if j] == [a[0], b[0], c[0], a[1], b[1], a[2], b[2]]


def test_running_cap_holds_with_many_workers_claiming_at_once(sf):
    for user in ("alice", "bob", "carol"):
        submit(sf, user, 6)
    got: list[q.Claimed] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def worker(w: int) -> None:
        barrier.wait()
        for _ in range(3):
            job = claim(sf, w, max_running=2)
            if job is not None:
                with lock:
                    got.append(job)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_user = running(sf)
    assert per_user == Counter({"alice": 2, "bob": 2, "carol": 2}), per_user
    assert len(got) == 6 and len({j.id for j in got}) == 6, got


def test_a_users_21st_queued_run_is_refused_even_from_parallel_submitters(sf):
    errors: list[q.QueueFull] = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def one() -> None:
        barrier.wait()
        try:
            submit(sf, "alice", 1, max_queued=20)
        except q.QueueFull as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sf() as db:
        assert q.queued_count(db, "alice") == 20
    assert len(errors) == 10
    assert "alice has 20 waiting, the limit is 20" in str(errors[0])
    assert "EXEC_API_MAX_QUEUED_PER_USER" in str(errors[0])
    # Another user is not affected, and a started run frees a place.
    submit(sf, "bob", 1, max_queued=20)
    job = claim(sf, 1)
    assert job is not None and job.username == "alice"
    submit(sf, "alice", 1, max_queued=20)


# ------------------------------------------------------------------ through the API: 429
@pytest.fixture(scope="module")
def api_without_worker(env):
    from fastapi.testclient import TestClient

    from exec_api.main import create_app

    with TestClient(create_app(start_worker=False)) as c:
        yield c


def test_the_21st_queued_submission_gets_429_with_retry_after(api_without_worker, make_user):
    alice, bob = make_user(), make_user()
    alice.notebook("n.ipynb", "1")
    bob.notebook("n.ipynb", "1")
    api = api_without_worker
    for i in range(20):
        r = api.post("/db/executions", headers=alice.headers, json={"notebook_path": "n.ipynb"})
        assert r.status_code == 202, (i, r.text)
    r = api.post("/db/executions", headers=alice.headers, json={"notebook_path": "n.ipynb"})
    assert r.status_code == 429, r.text
    assert r.headers.get("retry-after") == "30", r.headers
    detail = r.json()["detail"]
    assert f"{alice.name} has 20 waiting, the limit is 20 per user" in detail, detail
    assert "EXEC_API_MAX_QUEUED_PER_USER" in detail
    r = api.post("/execute", headers=alice.headers, json={"path": "n.ipynb"})
    assert r.status_code == 429 and r.headers.get("retry-after") == "30", r.text
    r = api.post("/db/executions", headers=bob.headers, json={"notebook_path": "n.ipynb"})
    assert r.status_code == 202, "bob's queue is his own"
    assert "429" in api.get("/openapi.json").json()["paths"]["/db/executions"]["post"]["responses"]
    # No worker runs here: leave nothing queued for the other modules' workers.
    for who in (alice, bob):
        queued = api.get("/db/executions", headers=who.headers, params={"status": "queued"})
        for ex in queued.json():
            api.post(f"/db/executions/{ex['id']}/cancel", headers=who.headers)
