"""Notifications: a user's webhooks and e-mail addresses for the failures, successes and
recoveries of their own runs (exec_api.models.NotificationSubscription).

* **Fan-out** happens in the transaction that records a run's outcome (``queue.finish``): one
  delivery row per matching subscription of the run's owner (a notification never carries
  another user's run), once per subscription, execution and event (a unique constraint).
  ``failure``: a failed or timed-out run with no retry to follow; ``success``: a succeeded run;
  ``recovery``: a succeeded run whose schedule's (or notebook's) previous finished run failed.
* **Delivery** is a worker thread of its own (never a run's slot): it leases due deliveries
  (``FOR UPDATE SKIP LOCKED``, a lease of ``LEASE`` seconds so a crashed sender's delivery comes
  back), sends each with ``notify_timeout_seconds``, and retries a failure with a doubling
  backoff up to ``notify_max_attempts``.
* **Webhooks** get a JSON body signed like Stripe's: ``X-Exec-Api-Signature: t=<unix time>,
  v1=<hex HMAC-SHA256 of "<t>.<body>" with the subscription's secret>``. The target's name is
  resolved once, every address must be public (or in ``notify_allowed_networks``), and the
  request goes to that address (Host and TLS name kept): a user's webhook cannot reach the
  platform's own services, by address or by DNS rebinding. Redirects are not followed.
* **E-mail** goes through the platform's relay (``smtp_host``), only to the domains of
  ``notify_email_domains`` when set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from exec_api.core.config import Settings
from exec_api.models import (
    Notebook,
    NotebookExecution,
    NotificationDelivery,
    NotificationSubscription,
)

log = logging.getLogger("exec_api.notify")
CHANNEL = "exec_api_notify"
LEASE = 300  # seconds a delivery being sent is not taken by another sender
FAILED = ("failed", "timed_out")
# Plain ASCII addresses only: no encoded words (=?...?=) a header would decode into more
# recipients, no routing characters (% !), no quoting.
_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)")


class TargetRefused(ValueError):
    """A target the platform will not send to; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class DeliveryError(Exception):
    pass


# ------------------------------------------------------------------------ targets
# Public-looking IPv6 ranges that carry (or route to) IPv4 addresses, and old site-local space:
# refused unless an operator allows them (a NAT64 gateway turns 64:ff9b::a9fe:a9fe into
# 169.254.169.254).
_DENIED = [ipaddress.ip_network(n) for n in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
                                              "2001::/32", "fec0::/10")]  # fmt: skip
WEBHOOK_PORTS = (80, 443)


def _in_networks(settings: Settings, ip: str) -> bool:
    """The address is in a network the operator allowed (EXEC_API_NOTIFY_ALLOWED_NETWORKS)."""
    addr = ipaddress.ip_address(ip)
    return any(
        addr in ipaddress.ip_network(n, strict=False) for n in settings.notify_allowed_networks
    )


def _allowed(settings: Settings, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if _in_networks(settings, ip):
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return _allowed(settings, str(addr.ipv4_mapped))
        if any(addr in n for n in _DENIED):
            return False
    return addr.is_global and not addr.is_multicast


def addresses(settings: Settings, host: str, port: int) -> list[str]:
    """The target's addresses, all of which must be allowed (else TargetRefused)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise TargetRefused("target", f"the webhook's host {host!r} does not resolve: {e}") from e
    found = sorted({str(i[4][0]) for i in infos})
    refused = [ip for ip in found if not _allowed(settings, ip)]
    if not found or refused:
        raise TargetRefused(
            "target",
            f"the webhook's host {host!r} is at {', '.join(refused or found)}: a private, loopback "
            "or link-local address is refused (an operator may allow networks: "
            "EXEC_API_NOTIFY_ALLOWED_NETWORKS)",
        )
    return found


def check_target(settings: Settings, kind: str, target: str) -> str:
    if kind == "webhook":
        u = urlsplit(target)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise TargetRefused("target", "a webhook is an http:// or https:// URL with a host")
        if u.username or u.password:
            raise TargetRefused("target", "a webhook URL carries no user or password")
        if not target.isascii() or any(ord(c) < 33 or ord(c) == 127 for c in target):
            raise TargetRefused(
                "target", "a webhook URL is ASCII without spaces or control characters"
            )
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError as e:
            raise TargetRefused("target", f"bad port in the webhook URL: {e}") from e
        ips = addresses(settings, u.hostname, port)
        if port not in WEBHOOK_PORTS and not all(_in_networks(settings, ip) for ip in ips):
            raise TargetRefused("target", "a webhook uses port 80 or 443 (other ports only on "
                                          "EXEC_API_NOTIFY_ALLOWED_NETWORKS)")  # fmt: skip
        return target
    if not settings.smtp_host:
        raise TargetRefused("kind", "e-mail notifications are off: the platform has no SMTP relay")
    m = _EMAIL.fullmatch(target)
    if not m:
        raise TargetRefused("target", f"{target!r} is not an e-mail address")
    domains = [d.lower() for d in settings.notify_email_domains]
    if domains and m.group(1).lower() not in domains:
        raise TargetRefused(
            "target", f"e-mail notifications go only to {', '.join(domains)} addresses"
        )
    return target


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ------------------------------------------------------------------------ fan-out
_FAN_OUT = text(
    """
    INSERT INTO notification_deliveries (subscription_id, execution_id, event)
    SELECT s.id, :eid, CAST(:event AS varchar) FROM notification_subscriptions AS s
     WHERE s.username = :u AND s.enabled
       AND CASE CAST(:event AS varchar) WHEN 'failure' THEN s.on_failure
                                        WHEN 'success' THEN s.on_success
                                        ELSE s.on_recovery END
       AND (s.notebook_id IS NULL OR s.notebook_id = :nb)
       AND (s.schedule_id IS NULL OR s.schedule_id = :sch)
    ON CONFLICT DO NOTHING
    """
)


def fan_out(db: Session, execution_id: int, status: str, retried: bool) -> int:
    """Deliveries for a run that just ended (in the caller's transaction); how many."""
    ex = db.get(NotebookExecution, execution_id)
    if ex is None:
        return 0
    events = []
    if status in FAILED and not retried:
        events.append("failure")
    if status == "succeeded":
        events.append("success")
        same = (
            NotebookExecution.schedule_id == ex.schedule_id
            if ex.schedule_id is not None
            else NotebookExecution.notebook_id == ex.notebook_id
        )
        before = db.execute(
            select(NotebookExecution.status)
            .where(
                NotebookExecution.id < ex.id,
                NotebookExecution.username == ex.username,
                NotebookExecution.status.in_(("succeeded", *FAILED)),
                same,
            )
            .order_by(NotebookExecution.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if before in FAILED and (ex.schedule_id is not None or ex.notebook_id is not None):
            events.append("recovery")
    made = 0
    for event in events:
        made += db.execute(_FAN_OUT, {"eid": ex.id, "event": event, "u": ex.username,
                                      "nb": ex.notebook_id, "sch": ex.schedule_id}).rowcount  # type: ignore[attr-defined]  # fmt: skip
    if made:
        db.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANNEL})
    return made


# ------------------------------------------------------------------------ delivery
_LEASE = text(
    """
    UPDATE notification_deliveries AS d
       SET status = 'sending', attempts = d.attempts + 1,
           next_attempt_at = timezone('utc', now()) + make_interval(secs => :lease)
     WHERE d.id IN (SELECT id FROM notification_deliveries
                     WHERE status IN ('pending', 'sending') AND attempts < :max
                       AND next_attempt_at <= timezone('utc', now())
                     ORDER BY next_attempt_at
                     FOR UPDATE SKIP LOCKED LIMIT :n)
    RETURNING d.id
    """
)


def deliver_due(sf: sessionmaker[Session], settings: Settings, limit: int = 20) -> int:
    """Send what is due; how many were sent."""
    with sf() as db:
        params = {"lease": LEASE, "n": limit, "max": settings.notify_max_attempts}
        ids = [r[0] for r in db.execute(_LEASE, params)]
        db.commit()
    sent = 0
    for did in ids:
        sent += _deliver(sf, settings, did)
    return sent


def _deliver(sf: sessionmaker[Session], settings: Settings, delivery_id: int) -> int:
    with sf() as db:
        d = db.get(NotificationDelivery, delivery_id)
        if d is None:
            return 0
        sub = db.get(NotificationSubscription, d.subscription_id)
        ex = db.get(NotebookExecution, d.execution_id)
        if sub is None or ex is None or sub.username != ex.username:  # never another user's run
            d.status, d.last_error = "failed", "the subscription or the run is gone"
            db.commit()
            return 0
        nb = db.get(Notebook, ex.notebook_id) if ex.notebook_id else None
        doc = payload(d, ex, nb)
        kind, target, secret, attempts = sub.kind, sub.target, sub.secret, d.attempts
    try:
        if kind == "webhook":
            within(
                settings.notify_timeout_seconds * 3,
                post_webhook,
                settings,
                target,
                secret or "",
                doc,
            )
        else:
            within(settings.notify_timeout_seconds * 3, send_email, settings, target, doc)
    except Exception as e:  # noqa: BLE001 - one delivery's failure is its own, never the batch's
        why = f"{type(e).__name__}: {e}"[:1000]
        with sf() as db:
            d = db.get(NotificationDelivery, delivery_id)
            if d is not None:
                d.last_error = why
                if attempts >= settings.notify_max_attempts:
                    d.status = "failed"
                else:
                    d.status = "pending"
                    d.next_attempt_at = _now() + dt.timedelta(seconds=10 * 2 ** (attempts - 1))
                db.commit()
        log.warning(
            "notification %s (%s) not delivered, attempt %s: %s", delivery_id, kind, attempts, why
        )
        return 0
    with sf() as db:
        d = db.get(NotificationDelivery, delivery_id)
        if d is not None:
            d.status, d.sent_at, d.last_error = "sent", _now(), None
            db.commit()
    return 1


_ABANDONED: list[threading.Thread] = []
MAX_ABANDONED = 16


def within(seconds: float, fn: Any, *args: Any) -> None:
    """fn(*args) in a thread of its own, given up after ``seconds`` in all (a receiver that
    trickles bytes defeats per-read timeouts). A given-up call may linger until its socket ends;
    past MAX_ABANDONED of those, no new call starts."""
    _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()]
    if len(_ABANDONED) >= MAX_ABANDONED:
        raise DeliveryError(f"{len(_ABANDONED)} earlier deliveries still hang; not sending now")
    error: list[BaseException] = []

    def call() -> None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            error.append(e)

    t = threading.Thread(target=call, name="exec-notify-call", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        _ABANDONED.append(t)
        raise DeliveryError(f"no complete answer within {seconds:g} s")
    if error:
        raise error[0]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _iso(v: dt.datetime | None) -> str | None:
    return v.isoformat() + "Z" if v is not None else None


def payload(d: NotificationDelivery, ex: NotebookExecution, nb: Notebook | None) -> dict[str, Any]:
    """What a notification says: the event and the owner's own run, nothing else."""
    return {
        "event": d.event,
        "delivery_id": d.id,
        "subscription_id": d.subscription_id,
        "execution": {
            "id": ex.id,
            "status": ex.status,
            "username": ex.username,
            "notebook_id": ex.notebook_id,
            "notebook_name": nb.name if nb is not None else None,
            "input_path": ex.input_path,
            "schedule_id": ex.schedule_id,
            "planned_for": _iso(ex.planned_for),
            "try_number": ex.try_number,
            "max_tries": ex.max_tries,
            "retry_of": ex.retry_of,
            "error_message": ex.error_message,
            "submitted_at": _iso(ex.submitted_at),
            "started_at": _iso(ex.started_at),
            "completed_at": _iso(ex.completed_at),
            "duration_seconds": ex.duration_seconds,
            "cpu_seconds": ex.cpu_seconds,
            "peak_memory_bytes": ex.peak_memory_bytes,
            "output_bytes": ex.output_bytes,
            "url": f"/db/executions/{ex.id}",
        },
    }


def post_webhook(settings: Settings, url: str, secret: str, doc: dict[str, Any]) -> None:
    u = urlsplit(url)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    ip = addresses(settings, host, port)[0]  # resolved once: the request goes to this address
    netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = {
        "Host": u.netloc,
        "Content-Type": "application/json",
        "User-Agent": "exec-api-notify",
        "X-Exec-Api-Event": doc["event"],
        "X-Exec-Api-Delivery": str(doc["delivery_id"]),
        "X-Exec-Api-Signature": signature(secret, int(time.time()), body),
    }
    extensions = {"sni_hostname": host} if u.scheme == "https" else {}
    http = httpx.Client(
        timeout=settings.notify_timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        verify=ssl.create_default_context(),
    )
    to = urlunsplit((u.scheme, netloc, u.path or "/", u.query, ""))
    with http, http.stream("POST", to, content=body, headers=headers, extensions=extensions) as r:
        code = r.status_code  # the body is never read: a receiver cannot make it large
    if not 200 <= code < 300:
        raise DeliveryError(f"the webhook answered HTTP {code}")


def send_email(settings: Settings, to: str, doc: dict[str, Any]) -> None:
    if not settings.smtp_host:
        raise DeliveryError("no SMTP relay configured")
    ex = doc["execution"]
    what = ex["notebook_name"] or ex["input_path"]
    msg = EmailMessage()
    msg["From"], msg["To"] = settings.smtp_from, to
    subject = f"[exec API] {what}: run {ex['id']} {doc['event']} ({ex['status']})"
    msg["Subject"] = " ".join(subject.split())[:200]  # no line breaks of any kind
    lines = [f"{k}: {v}" for k, v in ex.items() if v is not None]
    msg.set_content(f"Event: {doc['event']}\n\n" + "\n".join(lines) + "\n")
    t = settings.notify_timeout_seconds
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=t) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(msg, to_addrs=[to])  # the envelope is the checked address, only
