"""JupyterLab's scheduling UI (jupyter-scheduler) on the exec API.

jupyter-scheduler's JupyterLab extension ("Create a notebook job", "Notebook Jobs") talks only to
its server extension's ``/scheduler/*`` handlers, and those call a pluggable scheduler class
(``c.SchedulerApp.scheduler_class``). :class:`ExecApiScheduler` is that class for this platform:
a job is an exec API execution (``exec-<id>``), a job definition an exec API schedule
(``sched-<id>``), both made as the logged-in user with the server's own token (the hub gives it
the exec API's scope). Nothing runs inside the user's server and nothing is kept in it: the
history, the outputs and the firing of schedules are the exec API's, so schedules fire whether
or not the server runs. jupyter-scheduler's own database is never used (``db_url`` is
``sqlite://``, in memory).

Installed only in the users' environment with jupyter-scheduler (roles/jupyterhub), enabled by
``etc/jupyter/jupyter_server_config.json`` there. The exec API server itself
never imports this module.

Differences from jupyter-scheduler's own backend, shown to users as errors where they act:
- notebooks run from your notebook area (``~/notebooks``), as they are when the run starts (no
  copy is taken when the job is created);
- parameters are given as text and converted to each parameter's declared type by the exec API
  (``month`` = ``3`` for an ``int``; a ``str`` is given without quotes);
- runs are the exec API's history: they cannot be deleted or renamed (stop a running one);
- a job definition's notebook cannot change (make a new one).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Any

import httpx
from jupyter_scheduler.environments import EnvironmentManager
from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.job_files_manager import JobFilesManager
from jupyter_scheduler.models import (
    CountJobsQuery,
    CreateJob,
    CreateJobDefinition,
    CreateJobFromDefinition,
    DescribeJob,
    DescribeJobDefinition,
    ListJobDefinitionsQuery,
    ListJobDefinitionsResponse,
    ListJobsQuery,
    ListJobsResponse,
    RuntimeEnvironment,
    SortDirection,
    Status,
    UpdateJob,
    UpdateJobDefinition,
)
from jupyter_scheduler.scheduler import BaseScheduler
from traitlets import Unicode

from exec_api.client import find_token

ENVIRONMENT = "exec-api"
JOB, DEFINITION = "exec-", "sched-"
# The exec API's statuses as the UI knows them; the message says what the UI's status cannot.
STATUS = {
    "queued": Status.QUEUED,
    "running": Status.IN_PROGRESS,
    "succeeded": Status.COMPLETED,
    "failed": Status.FAILED,
    "timed_out": Status.FAILED,
    "cancelled": Status.STOPPED,
    "skipped": Status.STOPPED,
}
API_STATUSES = {ui: [api for api, s in STATUS.items() if s == ui] for ui in Status}
API_STATUSES[Status.CREATED] = ["queued"]
HISTORY_LIMIT = 1000  # the newest runs the jobs list pages through (the exec API's page size)


def job_id(execution_id: int) -> str:
    return f"{JOB}{execution_id}"


def definition_id(schedule_id: int) -> str:
    return f"{DEFINITION}{schedule_id}"


def number(prefix: str, value: str) -> int:
    """``exec-42`` -> 42; anything else names what it is not."""
    digits = value[len(prefix) :] if value.startswith(prefix) else ""
    if not digits.isdigit() or len(digits) > 10:
        kind = "job" if prefix == JOB else "job definition"
        raise SchedulerError(f"{value!r} is not a {kind} of the exec API ({prefix}<number>)")
    return int(digits)


def millis(value: str | None) -> int | None:
    """The exec API's instants (ISO 8601, UTC when naive) as the UI's epoch milliseconds."""
    if not value:
        return None
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def as_text(parameters: dict[str, Any] | None) -> dict[str, str]:
    """Parameter values as the UI shows them (text); strings as they are."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (parameters or {}).items()}


def describe_error(status: int, detail: Any) -> str:
    """The exec API's error as one line for the UI: each invalid field by name."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    return f"exec API (HTTP {status}): {detail}"


def status_message(ex: dict[str, Any]) -> str | None:
    if ex["status"] == "timed_out":
        return f"timed out after {ex.get('timeout_seconds')} s"
    if ex["status"] == "skipped":
        return "skipped: " + (ex.get("error_message") or "the schedule's overlap policy")
    if ex.get("retry_of"):
        return (ex.get("error_message") or "") + f" (retry of {job_id(ex['retry_of'])})"
    return ex.get("error_message")


def page(items: list[Any], query: Any) -> tuple[list[Any], str | None]:
    """Sorted by the query's fields, then one page from its ``next_token`` (an offset)."""
    for field in reversed(query.sort_by or []):

        def key(x: Any, name: str = field.name) -> tuple[bool, Any]:
            value = getattr(x, name, None)
            return (True, "") if value is None else (False, value)

        items.sort(key=key, reverse=field.direction == SortDirection.desc)
    start = int(query.next_token) if (query.next_token or "").isdigit() else 0
    size = query.max_items or len(items)
    end = start + size
    return items[start:end], str(end) if end < len(items) else None


class ExecApiEnvironmentManager(EnvironmentManager):
    """One runtime environment: the exec API (the users' environment, run as the user)."""

    def list_environments(self) -> list[RuntimeEnvironment]:
        return [
            RuntimeEnvironment(
                name=ENVIRONMENT,
                label="Platform (exec API)",
                description="Runs as you through the platform's exec API, with papermill, in "
                "the users' environment; the history and outputs are kept by the exec API",
                file_extensions=["ipynb"],
                output_formats=["ipynb"],
                metadata={},
                compute_types=None,
                default_compute_type=None,
                utc_only=False,
            )
        ]

    def manage_environments_command(self) -> str:
        return ""

    def output_formats_mapping(self) -> dict[str, str]:
        return {"ipynb": "Notebook"}


class ExecApiScheduler(BaseScheduler):
    """jupyter-scheduler's scheduler interface on the exec API (module docstring)."""

    task_runner = None  # nothing runs in the server: the exec API fires schedules

    api_url = Unicode(
        os.environ.get("EXEC_API_URL", ""), config=True, help="The exec API's address."
    )
    notebook_area = Unicode(
        "~/notebooks", config=True, help="The notebook area the exec API runs notebooks from."
    )

    def __init__(
        self,
        root_dir: str,
        environments_manager: EnvironmentManager,
        db_url: str | None = None,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root_dir=root_dir, environments_manager=environments_manager, config=config, **kwargs
        )
        # Lists name the user: an admin's lab lists the admin's own runs, not everyone's.
        self.user = os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    # ------------------------------------------------------------------ the exec API
    def mine(self) -> dict[str, Any]:
        return {"username": self.user, "limit": 1000}

    def own(self, record: dict[str, Any], what: str) -> dict[str, Any]:
        """A run or schedule read by its id: the server's user's own, or "not found" (an admin's
        token may read others'; the admin's lab shows the admin's own work, as its lists do)."""
        if record.get("username") != self.user:
            raise SchedulerError(f"exec API (HTTP 404): {what} not found")
        return record

    async def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One call as the server's user; the token is read each time (the hub renews it). Only
        to an https:// address: the token never goes in clear, nor to a local port anyone may
        listen on when EXEC_API_URL is missing."""
        if not self.api_url.startswith("https://"):
            raise SchedulerError(
                f"the exec API's address is {self.api_url!r}: set EXEC_API_URL (the jupyterhub "
                "role's jupyterhub_exec_api_url) to its https:// address"
            )
        headers = {"Authorization": f"Bearer {find_token()}"}
        try:
            async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as http:
                r = await http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise SchedulerError(f"exec API at {self.api_url} not reachable: {e}") from e
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:300]
            raise SchedulerError(describe_error(r.status_code, detail))
        return r

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self.api(method, path, **kw)).json()

    async def submit(self, body: dict[str, Any]) -> str:
        """A run now (``POST /db/executions``): its job id."""
        return job_id((await self.json("POST", "/db/executions", json=body))["execution"]["id"])

    def notebook_path(self, input_uri: str) -> str:
        """The UI's path (relative to the server's root) as a path in the notebook area."""
        uri = input_uri.removeprefix("RTC:")
        full = Path(self.root_dir, uri).resolve()
        area = Path(os.path.expanduser(self.notebook_area)).resolve()
        if not full.is_relative_to(area) or full == area:
            raise SchedulerError(
                f"{uri}: the exec API runs notebooks of your notebook area {self.notebook_area} "
                "only; move the notebook there"
            )
        return str(full.relative_to(area))

    async def notebook_id(self, input_uri: str) -> int:
        """The exec API's notebook for this file: registered now if it is not yet (its
        parameters are declared from its ``parameters`` cell)."""
        rel = self.notebook_path(input_uri)
        for nb in (await self.api("GET", "/db/notebooks", params=self.mine())).json():
            if nb.get("relative_path") == rel:
                return int(nb["id"])
        body = {"name": rel[:255], "file_path": rel}
        return int((await self.api("POST", "/db/notebooks", json=body)).json()["id"])

    def describe_job(self, ex: dict[str, Any], names: dict[int, str]) -> DescribeJob:
        path = ex.get("input_path") or ""
        created = millis(ex["submitted_at"])
        ended = millis(ex.get("completed_at"))
        running = ex["status"] not in ("queued", "skipped")
        schedule = ex.get("schedule_id")
        return DescribeJob(
            job_id=job_id(ex["id"]),
            name=(names.get(schedule) or f"schedule {schedule}") if schedule else Path(path).stem,
            input_filename=os.path.basename(path),
            runtime_environment_name=ENVIRONMENT,
            output_formats=["ipynb"],
            parameters=as_text(ex.get("parameters_used")),
            job_definition_id=definition_id(schedule) if schedule else None,
            url=f"/jobs/{job_id(ex['id'])}",
            create_time=created,
            update_time=ended or millis(ex.get("started_at")) or created,
            start_time=millis(ex.get("started_at")) if running else None,
            end_time=ended,
            status=STATUS.get(ex["status"], Status.FAILED),
            status_message=status_message(ex),
        )

    async def schedule_names(self) -> dict[int, str]:
        return {
            s["id"]: s.get("name") or f"schedule {s['id']}"
            for s in (await self.api("GET", "/db/schedules", params=self.mine())).json()
        }

    # ------------------------------------------------------------------ jobs (executions)
    async def create_job(self, model: CreateJob) -> str:
        nb = await self.notebook_id(model.input_uri)
        return await self.submit({"notebook_id": nb, "parameters": model.parameters or {}})

    async def update_job(self, job_id: str, model: UpdateJob) -> None:
        raise SchedulerError("runs are the exec API's history: they cannot be renamed")

    async def list_jobs(self, query: ListJobsQuery) -> ListJobsResponse:
        if query.max_items == 0:  # the UI's probe for the server extension: no call
            return ListJobsResponse(jobs=[], total_count=0)
        params: dict[str, Any] = {"username": self.user, "limit": HISTORY_LIMIT}
        if query.job_definition_id:
            params["schedule_id"] = number(DEFINITION, query.job_definition_id)
        wanted = API_STATUSES[query.status] if query.status else None
        if wanted and len(wanted) == 1:
            params["status"] = wanted[0]
        runs = (await self.api("GET", "/db/executions", params=params)).json()
        names = await self.schedule_names()
        jobs = [
            self.describe_job(ex, names) for ex in runs if wanted is None or ex["status"] in wanted
        ]
        if query.name:
            jobs = [j for j in jobs if j.name.startswith(query.name)]
        if query.start_time:
            jobs = [j for j in jobs if (j.start_time or 0) >= query.start_time]
        shown, token = page(jobs, query)
        for j in shown:
            self.add_job_files(j)
        return ListJobsResponse(jobs=shown, total_count=len(jobs), next_token=token)

    async def count_jobs(self, query: CountJobsQuery) -> int:
        total = 0
        for status in API_STATUSES[query.status]:
            params = {"username": self.user, "status": status, "limit": 1}
            r = await self.api("GET", "/db/executions", params=params)
            total += int(r.headers.get("X-Total-Count", "0"))
        return total

    async def execution(self, job_id: str) -> dict[str, Any]:
        ex = await self.json("GET", f"/db/executions/{number(JOB, job_id)}")
        return self.own(ex, f"job {job_id}")

    async def schedule(self, job_definition_id: str) -> dict[str, Any]:
        s = await self.json("GET", f"/db/schedules/{number(DEFINITION, job_definition_id)}")
        return self.own(s, f"job definition {job_definition_id}")

    async def get_job(self, job_id: str, job_files: bool | None = True) -> DescribeJob:
        ex = await self.execution(job_id)
        names = await self.schedule_names() if ex.get("schedule_id") else {}
        job = self.describe_job(ex, names)
        if job_files:
            self.add_job_files(job)
        return job

    async def delete_job(self, job_id: str) -> None:
        number(JOB, job_id)
        raise SchedulerError("runs are the exec API's history and cannot be deleted; stop a run")

    async def stop_job(self, job_id: str) -> None:
        await self.api("POST", f"/db/executions/{(await self.execution(job_id))['id']}/cancel")

    # ------------------------------------------------------------------ definitions (schedules)
    async def describe_definition(self, s: dict[str, Any]) -> DescribeJobDefinition:
        nb = (await self.api("GET", f"/db/notebooks/{s['notebook_id']}")).json()
        return DescribeJobDefinition(
            job_definition_id=definition_id(s["id"]),
            name=s.get("name") or f"schedule {s['id']}",
            input_filename=os.path.basename(nb.get("file_path") or ""),
            runtime_environment_name=ENVIRONMENT,
            output_formats=["ipynb"],
            parameters=as_text(s.get("parameters")),
            schedule=s["cron"],
            timezone=s["timezone"],
            create_time=millis(s["created_at"]),
            update_time=millis(s["updated_at"]),
            active=not s["paused"],
        )

    async def create_job_definition(self, model: CreateJobDefinition) -> str:
        if not model.schedule:
            raise SchedulerError("schedule: give a cron expression (a job without one: Run now)")
        nb = await self.notebook_id(model.input_uri)
        body = {
            "notebook_id": nb,
            "name": model.name,
            "cron": model.schedule,
            "timezone": model.timezone or "UTC",
            "parameters": model.parameters or {},
        }
        return definition_id((await self.api("POST", "/db/schedules", json=body)).json()["id"])

    async def update_job_definition(self, job_definition_id: str, model: UpdateJobDefinition):
        current = await self.schedule(job_definition_id)
        sid = current["id"]
        if model.input_uri and await self.notebook_id(model.input_uri) != current["notebook_id"]:
            raise SchedulerError("a job definition's notebook cannot change: make a new one")
        changes = {
            k: v
            for k, v in {
                "name": model.name,
                "cron": model.schedule,
                "timezone": model.timezone,
                "parameters": model.parameters,
            }.items()
            if v is not None
        }
        if changes:
            await self.api("PUT", f"/db/schedules/{sid}", json=changes)
        if model.active is not None and model.active == current["paused"]:
            await self.api("POST", f"/db/schedules/{sid}/{'resume' if model.active else 'pause'}")

    async def delete_job_definition(self, job_definition_id: str) -> None:
        await self.api("DELETE", f"/db/schedules/{(await self.schedule(job_definition_id))['id']}")

    async def get_job_definition(self, job_definition_id: str) -> DescribeJobDefinition:
        return await self.describe_definition(await self.schedule(job_definition_id))

    async def list_job_definitions(
        self, query: ListJobDefinitionsQuery
    ) -> ListJobDefinitionsResponse:
        if query.max_items == 0:
            return ListJobDefinitionsResponse(job_definitions=[], total_count=0)
        mine = await self.json("GET", "/db/schedules", params=self.mine())
        found = [await self.describe_definition(s) for s in mine]
        if query.name:
            found = [d for d in found if d.name.startswith(query.name)]
        if query.create_time:
            found = [d for d in found if d.create_time >= query.create_time]
        shown, token = page(found, query)
        return ListJobDefinitionsResponse(
            job_definitions=shown, total_count=len(found), next_token=token
        )

    async def create_job_from_definition(
        self, job_definition_id: str, model: CreateJobFromDefinition
    ) -> str:
        """The UI's "Run Job": one run now, linked to the schedule. Other parameter values than the
        schedule's make a plain run of its notebook (the schedule's runs keep its values)."""
        s = await self.schedule(job_definition_id)
        sid = s["id"]
        given = model.parameters or {}
        if not given or given == as_text(s.get("parameters")):
            return job_id((await self.json("POST", f"/db/schedules/{sid}/run"))["id"])
        values = {**(s.get("parameters") or {}), **given}
        return await self.submit({"notebook_id": s["notebook_id"], "parameters": values})

    def get_staging_paths(self, model: Any) -> dict[str, str]:
        return {}  # no staging: the exec API keeps inputs and outputs


class ExecApiJobFilesManager(JobFilesManager):
    """The UI's "Download job files": the run's output notebook from the exec API, and the
    notebook it ran, into ``~/jobs/<notebook>-<job id>/`` under jupyter-scheduler's file names."""

    scheduler: ExecApiScheduler

    async def copy_from_staging(self, job_id: str, redownload: Any = False) -> None:
        # The handler passes the query's text ("false"), which a plain truth test takes for yes.
        redownload = str(redownload).lower() in ("1", "true", "yes")
        job = await self.scheduler.get_job(job_id, False)
        names = self.scheduler.get_job_filenames(job)
        out = Path(self.scheduler.root_dir, self.scheduler.get_local_output_path(job, True))
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = out / names["ipynb"]
        if redownload or not target.exists():
            r = await self.scheduler.api("GET", f"/db/executions/{number(JOB, job_id)}/output")
            target.write_bytes(r.content)
        source = out / names["input"]
        if redownload or not source.exists():
            ex = await self.scheduler.execution(job_id)
            # The run's notebook, relative to the notebook area (as the exec API names it).
            ran = Path(os.path.expanduser(self.scheduler.notebook_area), ex["input_path"])
            try:
                source.write_bytes(ran.read_bytes())
            except OSError as e:
                raise SchedulerError(f"the notebook this run used is gone: {e}") from e
