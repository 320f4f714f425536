"""The execution worker: takes queued executions from PostgreSQL and runs them.

Runs inside the API process (``EXEC_API_WORKER_EMBEDDED=true``, the default) or on its own
(``exec-api-worker``).  Each worker holds a session advisory lock on its id while it lives,
which is how survivors recognise the executions of a dead worker (see exec_api.services.queue).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import secrets
import signal
import threading
import time
from typing import Any

import nbformat
import psycopg
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from exec_api.core.config import Settings, get_settings
from exec_api.models import NotebookParameter
from exec_api.services import metrics, notify, schedules
from exec_api.services import queue as q
from exec_api.services.engine import (
    DEFAULT_KERNEL,
    OutputTooLarge,
    notebook_kernel,
    quiet_papermill,
)
from exec_api.services.params import discover
from exec_api.services.paths import PathRefused, output_path_for, read_notebook, resolve_notebook
from exec_api.services.runners import Control, Job, Outcome, Runner, make_runner

log = logging.getLogger("exec_api.worker")


def _psycopg_dsn(url: str) -> str:
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


class Worker:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        runner: Runner | None = None,
    ) -> None:
        self.s = settings
        self.sf = session_factory
        self.runner = runner or make_runner(settings)
        self.worker_id = secrets.randbelow(1_999_999_999) + 1
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._gen = 0
        self._running: dict[int, Control] = {}
        self._rlock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._dsn = _psycopg_dsn(settings.database_url)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        quiet_papermill()
        self._lock_conn = psycopg.connect(self._dsn, autocommit=True)
        self._lock_conn.execute("SELECT pg_advisory_lock(%s, %s)", (q.LOCK_CLASS, self.worker_id))
        self.recover()
        self.runner.start()
        self._spawn(self._listen, "exec-listener")
        self._spawn(self._janitor, "exec-janitor")
        # Schedules and notifications each in a thread of their own: a slow webhook or a large
        # notebook to plan never holds a run's slot.
        every = (
            ("exec-scheduler", self.s.schedule_poll_seconds, self._fire_schedules),
            ("exec-notifier", self.s.notify_poll_seconds, self._send_notifications),
        )
        for name, seconds, fn in every:
            self._spawn(functools.partial(self._every, seconds, name, fn), name)
        for i in range(max(1, self.s.worker_concurrency)):
            self._spawn(self._slot, f"exec-slot-{i}")
        log.info(
            "worker %s started: runner=%s concurrency=%s",
            self.worker_id,
            self.runner.name,
            self.s.worker_concurrency,
        )

    def _spawn(self, fn: Any, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking work; running executions are cancelled after ``grace`` seconds."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._rlock:
                if not self._running:
                    break
            time.sleep(0.05)
        with self._rlock:
            for c in self._running.values():
                c.reason = "cancelled"
                c.stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.runner.close()
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()

    def recover(self) -> list[int]:
        with self.sf() as db:
            ids = q.recover_orphans(
                db, self.s.orphan_policy, self.s.max_attempts, exclude_worker=self.worker_id
            )
        if ids:
            metrics.RECOVERED.labels(self.s.orphan_policy).inc(len(ids))
            log.warning("recovered orphaned executions %s (policy %s)", ids, self.s.orphan_policy)
            self.runner.reap(ids)
        return ids

    # ------------------------------------------------------------------ threads
    def _wake(self) -> None:
        with self._cond:
            self._gen += 1
            self._cond.notify_all()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {q.QUEUE_CHANNEL}")
                    conn.execute(f"LISTEN {q.CANCEL_CHANNEL}")
                    self._wake()
                    while not self._stop.is_set():
                        got = False
                        for n in conn.notifies(timeout=self.s.poll_interval_seconds):
                            got = True
                            if n.channel == q.CANCEL_CHANNEL:
                                with contextlib.suppress(ValueError):
                                    self.cancel_local(int(n.payload))
                            else:
                                self._wake()
                        if not got:
                            self._wake()  # poll fallback
            except psycopg.Error:
                log.exception("listener connection lost; retrying")
                self._stop.wait(1.0)

    def _janitor(self) -> None:
        while not self._stop.wait(self.s.orphan_check_interval_seconds):
            try:
                self.recover()
                with self.sf() as db:
                    for eid in q.running_with_cancel(db, self.worker_id):
                        self.cancel_local(eid)
                metrics.READY_KERNELS.set(self.runner.ready_kernels())
            except Exception:  # noqa: BLE001 - keep the janitor alive
                log.exception("janitor pass failed")

    def _every(self, seconds: float, what: str, fn: Any) -> None:
        """fn() every ``seconds`` until the worker stops; a failed pass is logged, not fatal."""
        while not self._stop.wait(seconds):
            try:
                fn()
            except Exception:  # noqa: BLE001 - keep the thread alive
                log.exception("%s pass failed", what)

    def _send_notifications(self) -> None:
        notify.deliver_due(self.sf, self.s)

    def _fire_schedules(self) -> None:
        """Plans the runs of due schedules (every worker does; exactly once across them:
        exec_api.services.schedules)."""
        with self.sf() as db:
            made = schedules.fire_due(db, self.s)
        if made:
            log.info("scheduled executions %s", made)

    def cancel_local(self, execution_id: int) -> bool:
        with self._rlock:
            c = self._running.get(execution_id)
        if c is None:
            return False
        c.reason = "cancelled"
        c.stop.set()
        return True

    def _slot(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                gen = self._gen
            try:
                with self.sf() as db:
                    job = q.claim(
                        db,
                        self.worker_id,
                        self.s.default_timeout_seconds,
                        max_running=self.s.max_running_per_user,
                    )
            except Exception:  # noqa: BLE001 - DB hiccup: back off and retry
                log.exception("claim failed")
                self._stop.wait(1.0)
                continue
            if job is None:
                with self._cond:
                    if self._gen == gen and not self._stop.is_set():
                        self._cond.wait(timeout=self.s.poll_interval_seconds)
                continue
            try:
                self._execute(job)
            except Exception:  # noqa: BLE001 - a slot lives on whatever one run did
                log.exception("execution %s could not be recorded", job.id)

    # ------------------------------------------------------------------ one run
    def _inspect(self, job: q.Claimed) -> tuple[dict[str, str], str]:
        """The parameters' types (declared, or read from the notebook) and the kernel the
        notebook names: its ready kernels are kept by kernelspec."""
        try:  # through a handle of the user's area: never a second open by name
            _rel, nb = read_notebook(self.s, job.username, job.input_path)
        except (PathRefused, FileNotFoundError, ValueError):
            nb = None
        kernel = notebook_kernel(nb)[0] if nb is not None else DEFAULT_KERNEL
        if job.notebook_id is not None:
            with self.sf() as db:
                rows = db.execute(
                    select(NotebookParameter.param_name, NotebookParameter.param_type).where(
                        NotebookParameter.notebook_id == job.notebook_id
                    )
                ).all()
            return {str(n): str(t) for n, t in rows}, kernel
        return ({d.name: d.type for d in discover(nb)} if nb is not None else {}), kernel

    def _execute(self, job: q.Claimed) -> None:
        control = Control()
        with self._rlock:
            self._running[job.id] = control
        t0 = time.monotonic()
        outcome: Outcome
        try:
            with self.sf() as db:
                if q.cancel_requested(db, job.id):
                    control.stop.set()
            try:
                _rel, real = resolve_notebook(self.s, job.username, job.input_path)
            except (PathRefused, FileNotFoundError) as e:
                outcome = Outcome("failed", error_message=str(e))
            else:
                if control.stop.is_set():
                    outcome = Outcome("cancelled", error_message="execution cancelled")
                else:
                    types, kernel = self._inspect(job)
                    rjob = Job(
                        execution_id=job.id,
                        username=job.username,
                        notebook_path=str(real),
                        cwd=str(real.parent),
                        parameters=job.parameters,
                        types=types,
                        timeout_seconds=job.timeout_seconds,
                        max_output_bytes=self.s.max_output_bytes,
                        kernel_name=kernel,
                        output_path=str(output_path_for(self.s, job.username, job.id)),
                        report_mode=job.report_mode,
                    )
                    outcome = self.runner.run(rjob, control)
        except Exception as e:  # noqa: BLE001 - a run must always end in a recorded state
            log.exception("execution %s crashed", job.id)
            outcome = Outcome("failed", error_message=f"internal error: {e}")
        finally:
            with self._rlock:
                self._running.pop(job.id, None)
        duration = time.monotonic() - t0
        out_path: str | None = None
        if outcome.notebook is not None:
            try:
                out_path = self._write_output(job, outcome.notebook)
            except OutputTooLarge as e:
                outcome = Outcome("failed", error_message=str(e))
            except (OSError, ValueError) as e:
                log.error("cannot write output of %s: %s", job.id, e)
            except Exception as e:  # noqa: BLE001 - e.g. nested too deep (the user's own answer)
                why = f"the output is not a notebook that can be saved: {type(e).__name__}"
                outcome = Outcome("failed", error_message=why)
            outcome.notebook = None  # the dict can be large: let it go before the next run
        try:
            with self.sf() as db:
                q.finish(
                    db,
                    job.id,
                    self.worker_id,
                    status=outcome.status,
                    duration=duration,
                    output_path=out_path,
                    error_message=outcome.error_message,
                    error_detail=outcome.error_detail,
                    cpu_seconds=outcome.cpu_seconds,
                    peak_memory_bytes=outcome.peak_memory_bytes,
                    output_bytes=os.stat(out_path).st_size if out_path else None,
                )
        except Exception:  # noqa: BLE001
            log.exception("cannot record outcome of %s", job.id)
        metrics.EXECUTIONS.labels(outcome.status).inc()
        metrics.DURATION.observe(duration)

    def _write_output(self, job: q.Claimed, notebook: dict[str, Any]) -> str:
        """Write the output notebook next to its final name, check its size from the open
        file, and only then give it its name: an output over the cap is never served."""
        p = output_path_for(self.s, job.username, job.id)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = p.with_suffix(".ipynb.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                nbformat.write(nbformat.from_dict(notebook), f)
                f.flush()
                size = os.fstat(f.fileno()).st_size
            if size > self.s.max_output_bytes:
                raise OutputTooLarge(size, self.s.max_output_bytes)
            os.replace(tmp, p)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return str(p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="exec API execution worker")
    ap.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics of this worker on 127.0.0.1:PORT",
    )
    args = ap.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from exec_api.core.db import get_sessionmaker

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")
    w = Worker(settings, get_sessionmaker())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    w.start()
    stop.wait()
    w.stop()


if __name__ == "__main__":
    main()
