"""A typed Python client for the exec API.

    from exec_api.client import ExecApiClient
    with ExecApiClient.from_env() as api:
        nb = api.register_notebook("reports/monthly.ipynb", name="monthly")
        ex = api.run(notebook_id=nb.id, parameters={"month": "2024-05"})
        ex = api.wait(ex.id)
        api.download_output(ex.id, "monthly-out.ipynb")

Token lookup (first found): the ``token`` argument, ``$EXEC_API_TOKEN``, the file named by
``$EXEC_API_TOKEN_FILE``, ``$JUPYTERHUB_API_TOKEN`` (inside a JupyterHub server), the file
``~/.config/exec-api/token``.  Base URL: ``$EXEC_API_URL`` (no default: a token never goes to
an address nobody chose, such as a local port another user may listen on).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from exec_api.schemas import (
    DeliveryResponse,
    ExecutionHistoryResponse,
    ExecutionSubmitted,
    NotebookResponse,
    NotebookWithParameters,
    ParameterResponse,
    ScheduleResponse,
    SubscriptionCreated,
    SubscriptionResponse,
)

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "skipped")


class ExecApiError(RuntimeError):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def url_from_env() -> str:
    """The exec API's address from ``$EXEC_API_URL``, which the platform sets in users' servers."""
    url = os.environ.get("EXEC_API_URL", "").strip()
    if not url:
        raise ExecApiError(
            0,
            "no exec API address: set EXEC_API_URL to https://api.<your platform's domain> "
            "(JupyterHub sets it in your server and its terminals), or pass --url",
        )
    return url


def find_token(token: str | None = None) -> str:
    if token:
        return token.strip()
    if os.environ.get("EXEC_API_TOKEN"):
        return os.environ["EXEC_API_TOKEN"].strip()
    if os.environ.get("EXEC_API_TOKEN_FILE"):
        return Path(os.environ["EXEC_API_TOKEN_FILE"]).read_text().strip()
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        return os.environ["JUPYTERHUB_API_TOKEN"].strip()
    default = Path.home() / ".config" / "exec-api" / "token"
    if default.is_file():
        return default.read_text().strip()
    raise ExecApiError(
        0,
        "no token: set EXEC_API_TOKEN or EXEC_API_TOKEN_FILE, or write it to "
        "~/.config/exec-api/token",
    )


class ExecApiClient:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._own = http is None
        self.http = http or httpx.Client(base_url=base_url or url_from_env(), timeout=timeout)
        self.headers = {"Authorization": f"Bearer {find_token(token)}"}

    @classmethod
    def from_env(cls, token: str | None = None) -> ExecApiClient:
        return cls(url_from_env(), token)

    def __enter__(self) -> ExecApiClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def _req(self, method: str, url: str, **kw: Any) -> httpx.Response:
        r = self.http.request(method, url, headers=self.headers, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise ExecApiError(r.status_code, detail)
        return r

    # -- notebooks -----------------------------------------------------------------------
    def register_notebook(
        self,
        file_path: str,
        name: str,
        *,
        description: str | None = None,
        tags: list[str] | None = None,
        detect_parameters: bool = True,
        parameters: list[dict[str, Any]] | None = None,
    ) -> NotebookWithParameters:
        body: dict[str, Any] = {
            "file_path": file_path,
            "name": name,
            "detect_parameters": detect_parameters,
        }
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = tags
        if parameters is not None:
            body["parameters"] = parameters
        return NotebookWithParameters.model_validate(
            self._req("POST", "/db/notebooks", json=body).json()
        )

    def notebooks(self) -> list[NotebookResponse]:
        return [
            NotebookResponse.model_validate(x) for x in self._req("GET", "/db/notebooks").json()
        ]

    def notebook(self, notebook_id: int) -> NotebookWithParameters:
        return NotebookWithParameters.model_validate(
            self._req("GET", f"/db/notebooks/{notebook_id}").json()
        )

    def delete_notebook(self, notebook_id: int) -> None:
        self._req("DELETE", f"/db/notebooks/{notebook_id}")

    # -- parameters ----------------------------------------------------------------------
    def declare_parameter(
        self,
        notebook_id: int,
        name: str,
        type: str = "str",
        *,
        default: Any = None,
        required: bool = False,
        description: str | None = None,
        rules: dict[str, Any] | None = None,
    ) -> ParameterResponse:
        body = {
            "notebook_id": notebook_id,
            "param_name": name,
            "param_type": type,
            "default_value": default,
            "required": required,
            "description": description,
            "validation_rules": rules,
        }
        return ParameterResponse.model_validate(
            self._req("POST", "/db/parameters", json=body).json()
        )

    def parameters(self, notebook_id: int) -> list[ParameterResponse]:
        return [
            ParameterResponse.model_validate(x)
            for x in self._req("GET", f"/db/parameters/notebook/{notebook_id}").json()
        ]

    # -- executions ----------------------------------------------------------------------
    def run(
        self,
        *,
        notebook_id: int | None = None,
        path: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
    ) -> ExecutionHistoryResponse:
        body: dict[str, Any] = {"parameters": parameters or {}}
        if notebook_id is not None:
            body["notebook_id"] = notebook_id
        if path is not None:
            body["notebook_path"] = path
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        res = ExecutionSubmitted.model_validate(
            self._req("POST", "/db/executions", json=body).json()
        )
        return res.execution

    def execution(self, execution_id: int) -> ExecutionHistoryResponse:
        return ExecutionHistoryResponse.model_validate(
            self._req("GET", f"/db/executions/{execution_id}").json()
        )

    def wait(
        self, execution_id: int, timeout: float = 3600.0, poll: float = 0.1
    ) -> ExecutionHistoryResponse:
        deadline = time.monotonic() + timeout
        while True:
            ex = self.execution(execution_id)
            if ex.status in TERMINAL:
                return ex
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {ex.status}")
            time.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    def cancel(self, execution_id: int) -> ExecutionHistoryResponse:
        return ExecutionHistoryResponse.model_validate(
            self._req("POST", f"/db/executions/{execution_id}/cancel").json()
        )

    def output(self, execution_id: int) -> bytes:
        return self._req("GET", f"/db/executions/{execution_id}/output").content

    def download_output(self, execution_id: int, dest: str | Path) -> Path:
        p = Path(dest)
        p.write_bytes(self.output(execution_id))
        return p

    def history(
        self,
        *,
        notebook_id: int | None = None,
        status: str | None = None,
        schedule_id: int | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> list[ExecutionHistoryResponse]:
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        if schedule_id is not None:
            params["schedule_id"] = schedule_id
        if notebook_id is not None:
            params["notebook_id"] = notebook_id
        if status is not None:
            params["status"] = status
        return [
            ExecutionHistoryResponse.model_validate(x)
            for x in self._req("GET", "/db/executions", params=params).json()
        ]

    # -- schedules -----------------------------------------------------------------------
    def create_schedule(
        self, notebook_id: int, cron: str, *, timezone: str = "UTC", **fields: Any
    ) -> ScheduleResponse:
        """Run a notebook at each instant ``cron`` plans in ``timezone``; more fields as
        ``POST /db/schedules`` takes them (parameters, ends_at, overlap_policy, ...)."""
        body = {"notebook_id": notebook_id, "cron": cron, "timezone": timezone, **fields}
        return ScheduleResponse.model_validate(self._req("POST", "/db/schedules", json=body).json())

    def schedules(self) -> list[ScheduleResponse]:
        return [
            ScheduleResponse.model_validate(x) for x in self._req("GET", "/db/schedules").json()
        ]

    def schedule(self, schedule_id: int) -> ScheduleResponse:
        r = self._req("GET", f"/db/schedules/{schedule_id}")
        return ScheduleResponse.model_validate(r.json())

    def update_schedule(self, schedule_id: int, **fields: Any) -> ScheduleResponse:
        r = self._req("PUT", f"/db/schedules/{schedule_id}", json=fields)
        return ScheduleResponse.model_validate(r.json())

    def pause_schedule(self, schedule_id: int) -> ScheduleResponse:
        r = self._req("POST", f"/db/schedules/{schedule_id}/pause")
        return ScheduleResponse.model_validate(r.json())

    def resume_schedule(self, schedule_id: int) -> ScheduleResponse:
        r = self._req("POST", f"/db/schedules/{schedule_id}/resume")
        return ScheduleResponse.model_validate(r.json())

    def run_schedule(self, schedule_id: int) -> ExecutionHistoryResponse:
        r = self._req("POST", f"/db/schedules/{schedule_id}/run")
        return ExecutionHistoryResponse.model_validate(r.json())

    def delete_schedule(self, schedule_id: int) -> None:
        self._req("DELETE", f"/db/schedules/{schedule_id}")

    # -- notifications -------------------------------------------------------------------
    def subscribe(self, kind: str, target: str, **fields: Any) -> SubscriptionCreated:
        """A webhook or e-mail address for your runs (``notebook_id``, ``schedule_id``,
        ``on_failure``, ``on_success``, ``on_recovery``); a webhook's secret is in the answer."""
        body = {"kind": kind, "target": target, **fields}
        r = self._req("POST", "/db/notifications", json=body)
        return SubscriptionCreated.model_validate(r.json())

    def subscriptions(self) -> list[SubscriptionResponse]:
        r = self._req("GET", "/db/notifications")
        return [SubscriptionResponse.model_validate(x) for x in r.json()]

    def deliveries(self, subscription_id: int) -> list[DeliveryResponse]:
        r = self._req("GET", f"/db/notifications/{subscription_id}/deliveries")
        return [DeliveryResponse.model_validate(x) for x in r.json()]

    def unsubscribe(self, subscription_id: int) -> None:
        self._req("DELETE", f"/db/notifications/{subscription_id}")
