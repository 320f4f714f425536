"""Notifications against the real PostgreSQL, a local webhook sink and a local SMTP sink
(exec_api.services.notify): who is told what and when, the webhook's signature, retries and
timeouts of a delivery, e-mail through the relay, and the targets a user may not reach."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from freshdb import fresh_sessions
from pg import free_port
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from exec_api.core.config import Settings
from exec_api.models import Notebook, NotificationDelivery, NotificationSubscription
from exec_api.services import notify
from exec_api.services import queue as q


class Sink:
    """A webhook receiver: records each POST; answers with `status` after `delay` seconds."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.status, self.delay = 200, 0.0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.got.append({"headers": dict(self.headers), "body": body, "path": self.path})
                time.sleep(sink.delay)
                self.send_response(sink.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.server.shutdown()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    c = Controller(box, hostname="127.0.0.1", port=port)
    c.start()
    yield box, port
    c.stop()


@pytest.fixture
def sf(pg: Any) -> Iterator[sessionmaker[Session]]:
    yield from fresh_sessions(pg, "notify")


@pytest.fixture
def settings(env: dict[str, str], sf, mailbox) -> Settings:
    return Settings(
        database_url=sf.kw["bind"].url.render_as_string(hide_password=False),
        notify_allowed_networks=["127.0.0.0/8", "::1/128"],
        notify_timeout_seconds=1.0,
        notify_max_attempts=3,
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_starttls=False,
        notify_email_domains=["example.org"],
    )


def subscribe(sf, username: str, kind: str, target: str, **flags: Any) -> NotificationSubscription:
    with sf() as db:
        sub = NotificationSubscription(
            username=username,
            kind=kind,
            target=target,
            secret=notify.new_secret() if kind == "webhook" else None,
            **flags,
        )
        db.add(sub)
        db.commit()
        return sub


def ends(sf, username: str, status: str, **fields: Any) -> int:
    """A run of `username` (notebook 'n.ipynb', no registered notebook) that ends `status`."""
    with sf() as db:
        ex = q.submit(
            db,
            username=username,
            input_path="n.ipynb",
            notebook_id=None,
            parameters={},
            timeout_seconds=60,
            runner="local",
            **fields,
        )
        job = q.claim(db, 5, 60)
        assert job is not None and job.id == ex.id
    with sf() as db:
        assert q.finish(
            db,
            ex.id,
            5,
            status=status,
            duration=1.0,
            error_message="boom" if status != "succeeded" else None,
        )
    return ex.id


def deliveries(sf, sub_id: int) -> list[NotificationDelivery]:
    with sf() as db:
        return list(
            db.execute(
                select(NotificationDelivery)
                .where(NotificationDelivery.subscription_id == sub_id)
                .order_by(NotificationDelivery.id)
            ).scalars()
        )


def test_a_failure_is_posted_signed_and_carries_only_the_owners_run(sf, settings, sink):
    sub = subscribe(sf, "alice", "webhook", sink.url)
    ends(sf, "bob", "failed")  # bob's run: nothing for alice
    eid = ends(sf, "alice", "failed")
    assert notify.deliver_due(sf, settings) == 1
    [got] = sink.got
    body = json.loads(got["body"])
    assert body["event"] == "failure" and body["execution"]["id"] == eid
    assert body["execution"]["username"] == "alice" and body["execution"]["error_message"] == "boom"
    assert got["path"] == "/hook?x=1" and got["headers"]["Host"] == sink.url.split("/")[2]
    t, v1 = (part.split("=", 1)[1] for part in got["headers"]["X-Exec-Api-Signature"].split(","))
    want = hmac.new(sub.secret.encode(), f"{t}.".encode() + got["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, want) and abs(int(t) - time.time()) < 60
    assert [d.status for d in deliveries(sf, sub.id)] == ["sent"]
    assert notify.deliver_due(sf, settings) == 0  # sent once


def test_a_run_that_will_be_retried_is_not_yet_a_failure(sf, settings, sink):
    sub = subscribe(sf, "carol", "webhook", sink.url)
    ends(sf, "carol", "failed", max_tries=2, retry_backoff_seconds=1)
    assert deliveries(sf, sub.id) == []


def test_success_and_recovery(sf, settings, sink):
    sub = subscribe(sf, "dave", "webhook", sink.url, on_success=True)
    with sf() as db:  # a schedule-less run is matched to earlier runs of the same notebook
        nb = Notebook(name="n", file_path=f"/tmp/{uuid.uuid4().hex}.ipynb", username="dave")
        db.add(nb)
        db.commit()
    with sf() as db:
        ex = q.submit(
            db,
            username="dave",
            input_path="n.ipynb",
            notebook_id=nb.id,
            parameters={},
            timeout_seconds=60,
            runner="local",
        )
        q.claim(db, 5, 60)
    with sf() as db:
        q.finish(db, ex.id, 5, status="timed_out", duration=1.0)
    with sf() as db:
        ex2 = q.submit(
            db,
            username="dave",
            input_path="n.ipynb",
            notebook_id=nb.id,
            parameters={},
            timeout_seconds=60,
            runner="local",
        )
        q.claim(db, 5, 60)
    with sf() as db:
        q.finish(db, ex2.id, 5, status="succeeded", duration=1.0)
    assert [(d.execution_id, d.event) for d in deliveries(sf, sub.id)] == [
        (ex.id, "failure"),
        (ex2.id, "success"),
        (ex2.id, "recovery"),
    ]


def test_a_failing_webhook_is_retried_with_backoff_then_given_up(sf, settings, sink):
    sink.status = 500
    sub = subscribe(sf, "erin", "webhook", sink.url)
    ends(sf, "erin", "failed")
    for attempt in range(1, 4):
        notify.deliver_due(sf, settings)
        [d] = deliveries(sf, sub.id)
        assert d.attempts == attempt and "HTTP 500" in d.last_error
        if attempt < 3:
            assert d.status == "pending" and d.next_attempt_at > q.utcnow()
            with sf() as db:  # the backoff is over
                db.get(NotificationDelivery, d.id).next_attempt_at = q.utcnow()
                db.commit()
    assert d.status == "failed" and len(sink.got) == 3


def test_a_slow_webhook_times_out_without_holding_the_sender_long(sf, settings, sink):
    sink.delay = 5.0
    sub = subscribe(sf, "fred", "webhook", sink.url)
    ends(sf, "fred", "failed")
    start = time.monotonic()
    assert notify.deliver_due(sf, settings) == 0
    assert time.monotonic() - start < 3.0
    [d] = deliveries(sf, sub.id)
    assert d.status == "pending" and "Timeout" in d.last_error


def test_an_email_goes_through_the_relay(sf, settings, mailbox):
    box, _ = mailbox
    subscribe(sf, "gina", "email", "gina@example.org")
    eid = ends(sf, "gina", "failed")
    assert notify.deliver_due(sf, settings) == 1
    msg = box.messages[-1]
    assert msg.rcpt_tos == ["gina@example.org"]
    text = msg.content.decode()
    assert f"run {eid} failure" in text and "boom" in text


@pytest.mark.parametrize(
    ("kind", "target", "field", "words"),
    [
        ("webhook", "http://127.0.0.1:8002/db/notebooks", "target", "private, loopback"),
        ("webhook", "http://localhost/x", "target", "private, loopback"),
        ("webhook", "http://169.254.169.254/latest/meta-data", "target", "private, loopback"),
        ("webhook", "http://[::1]/x", "target", "private, loopback"),
        ("webhook", "http://10.1.2.3/x", "target", "private, loopback"),
        ("webhook", "ftp://example.org/x", "target", "http:// or https://"),
        ("webhook", "https://user:pw@example.org/x", "target", "no user or password"),
        ("webhook", "https://no-such-host.invalid/x", "target", "does not resolve"),
        (
            "webhook",
            "http://[64:ff9b::a9fe:a9fe]/x",
            "target",
            "private, loopback",
        ),  # NAT64 of 169.254.169.254
        ("webhook", "http://[::ffff:127.0.0.1]/x", "target", "private, loopback"),
        ("webhook", "http://[2002:7f00:1::]/x", "target", "private, loopback"),  # 6to4 of 127.0.0.1
        ("webhook", "http://[::127.0.0.1]/x", "target", "private, loopback"),
        ("webhook", "http://[fec0::1]/x", "target", "private, loopback"),
        ("webhook", "https://1.1.1.1:5432/x", "target", "port 80 or 443"),
        ("webhook", "https://1.1.1.1/x\x01y", "target", "ASCII"),
        ("email", "not-an-address", "target", "not an e-mail address"),
        (
            "email",
            "=?utf-8?q?victim=40evil.com=2c?=x@example.org",
            "target",
            "not an e-mail address",
        ),
        ("email", "bob@example.org\n", "target", "not an e-mail address"),
        ("email", "bob%evil.com@example.org", "target", "not an e-mail address"),
        ("email", "mallory@elsewhere.example", "target", "only to example.org"),
    ],
)
def test_targets_a_user_may_not_reach_are_refused_naming_the_field(env, kind, target, field, words):
    strict = Settings(
        database_url="postgresql+psycopg://x@y/z",
        smtp_host="relay",
        notify_email_domains=["example.org"],
    )
    with pytest.raises(notify.TargetRefused) as e:
        notify.check_target(strict, kind, target)
    assert e.value.field == field and words in str(e.value), str(e.value)


def test_email_without_a_relay_is_refused_naming_the_kind(env):
    with pytest.raises(notify.TargetRefused) as e:
        notify.check_target(
            Settings(database_url="postgresql+psycopg://x@y/z"), "email", "a@example.org"
        )
    assert e.value.field == "kind"


def test_a_webhook_that_trickles_or_floods_is_given_up_in_bounded_time_and_memory(
    sink, settings, sf
):
    """A receiver that answers a byte at a time defeats per-read timeouts; one that streams an
    endless body would fill the worker's memory: the call ends within 3 timeouts, the body is
    never read."""

    class Trickle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(60):
                self.wfile.write(b"X-Slow: a\r\n")
                self.wfile.flush()
                time.sleep(0.5)

        def log_message(self, *args: Any) -> None:
            pass

    class Flood(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            for _ in range(20000):  # 1.3 GB if anyone read it
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

        def log_message(self, *args: Any) -> None:
            pass

    for handler, user in ((Trickle, "trick"), (Flood, "flood")):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sub = subscribe(sf, user, "webhook", f"http://localhost:{server.server_address[1]}/h")
        ends(sf, user, "failed")
        start = time.monotonic()
        notify.deliver_due(sf, settings)
        took = time.monotonic() - start
        [d] = deliveries(sf, sub.id)
        server.shutdown()
        if handler is Trickle:
            assert (
                took < 3 * settings.notify_timeout_seconds + 1
                and "no complete answer" in d.last_error
            ), (took, d)
        else:  # the status line came at once: a 200, the body never read
            assert d.status == "sent" and took < 3, (took, d.status, d.last_error)


def test_one_poisoned_delivery_does_not_hold_the_others(sf, settings, sink, monkeypatch):
    bad = subscribe(sf, "poison", "webhook", sink.url)
    good = subscribe(sf, "honest", "webhook", sink.url)
    ends(sf, "poison", "failed")
    ends(sf, "honest", "failed")
    real = notify.post_webhook

    def post(settings_: Settings, url: str, secret: str, doc: dict) -> None:
        if doc["execution"]["username"] == "poison":
            raise UnicodeEncodeError("idna", "x", 0, 1, "a host that cannot be encoded")
        real(settings_, url, secret, doc)

    monkeypatch.setattr(notify, "post_webhook", post)
    assert notify.deliver_due(sf, settings) == 1
    assert [d.status for d in deliveries(sf, good.id)] == ["sent"]
    [d] = deliveries(sf, bad.id)
    assert d.status == "pending" and "UnicodeEncodeError" in d.last_error
    with sf() as db:  # attempts exhausted: never leased again
        db.get(NotificationDelivery, d.id).attempts = settings.notify_max_attempts
        db.get(NotificationDelivery, d.id).next_attempt_at = q.utcnow()
        db.commit()
    assert (
        notify.deliver_due(sf, settings) == 0
        and deliveries(sf, bad.id)[0].attempts == settings.notify_max_attempts
    )


def test_an_email_goes_to_the_checked_address_only(sf, settings, mailbox):
    box, _ = mailbox
    subscribe(sf, "hank", "email", "hank@example.org")
    ends(sf, "hank", "failed")
    notify.deliver_due(sf, settings)
    assert box.messages[-1].rcpt_tos == ["hank@example.org"]
