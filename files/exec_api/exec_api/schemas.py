"""Pydantic request/response models (names kept from the prototype where it had them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

MAX_ID = 2_147_483_647


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("NUL characters are not accepted")
    return v


def _json_safe(v: Any) -> Any:
    from exec_api.services.params import _is_json_data

    if not _is_json_data(v):
        raise ValueError("must be JSON data (finite numbers, string keys, nesting <= 20)")
    return v


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
Username = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@\-]*$")
]
RelPath = Annotated[str, Field(min_length=1, max_length=400), AfterValidator(_no_nul)]
JsonData = Annotated[Any, AfterValidator(_json_safe)]
ParamType = Literal["int", "float", "str", "bool", "list", "dict", "date", "datetime"]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Timeout = Annotated[int, Field(ge=1, le=86_400)]
# skipped: a schedule's planned run that its overlap policy (or a full queue) did not start.
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "skipped"]


class ValidationRules(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    min: float | int | str | None = None
    max: float | int | str | None = None
    min_length: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    max_length: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    regex: Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)] | None = None
    choices: list[JsonData] | None = None


# ------------------------------------------------------------------------ parameters
class ParameterBase(BaseModel):
    param_name: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
    param_type: ParamType = "str"
    default_value: JsonData = None
    description: Text | None = None
    required: bool = False
    validation_rules: ValidationRules | None = None


class ParameterCreate(ParameterBase):
    notebook_id: Id


class ParameterBulkItem(ParameterBase):
    pass


class ParameterUpdate(BaseModel):
    param_name: (
        Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)] | None
    ) = None
    param_type: ParamType | None = None
    default_value: JsonData = None
    description: Text | None = None
    required: bool | None = None
    validation_rules: ValidationRules | None = None


class ParameterResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    notebook_id: int
    param_name: str
    param_type: str
    default_value: Any = None
    description: str | None = None
    required: bool
    validation_rules: dict[str, Any] | None = None
    default_from_notebook: bool = Field(
        default=False,
        description="the default is the notebook's own (read from its parameters cell, "
        "refreshed when the file changes, not injected); false: set through the API",
    )
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------ notebooks
class NotebookCreate(BaseModel):
    name: Name
    description: Text | None = None
    file_path: RelPath = Field(description="Path relative to your notebook area")
    username: Username | None = Field(default=None, description="Defaults to the caller")
    tags: list[Annotated[str, Field(max_length=100), AfterValidator(_no_nul)]] | None = None
    metadata: dict[str, JsonData] | None = None
    detect_parameters: bool = Field(
        default=True,
        description="Declare the parameters found in the notebook's "
        "'parameters' cell (explicit declarations win)",
    )
    parameters: list[ParameterBulkItem] | None = None


class NotebookUpdate(BaseModel):
    name: Name | None = None
    description: Text | None = None
    file_path: RelPath | None = None
    tags: list[Annotated[str, Field(max_length=100), AfterValidator(_no_nul)]] | None = None
    metadata: dict[str, JsonData] | None = None


class NotebookResponse(BaseModel):
    id: int
    name: str
    description: str | None = None
    file_path: str
    relative_path: str | None = None
    username: str
    tags: Any = None
    metadata: Any = None
    created_at: datetime
    updated_at: datetime


class NotebookWithParameters(NotebookResponse):
    parameters: list[ParameterResponse] = []


class NotebookListEntry(BaseModel):
    path: str
    registered: bool
    notebook_id: int | None = None


# ------------------------------------------------------------------------ executions
class ExecutionHistoryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    notebook_id: int | None = None
    username: str
    input_path: str
    output_path: str | None = None
    parameters_used: Any = None
    status: str
    error_message: str | None = None
    error_detail: Any = None
    execution_time_seconds: int | None = None
    duration_seconds: float | None = None
    timeout_seconds: int | None = None
    submitted_at: datetime
    started_at: datetime
    completed_at: datetime | None = None
    cancel_requested: bool = False
    attempts: int = 0
    runner: str | None = None
    report_mode: bool = False
    schedule_id: int | None = Field(default=None, description="the schedule that planned this run")
    planned_for: datetime | None = Field(
        default=None, description="the planned instant (UTC) this run is for; none for run-now"
    )
    retry_of: int | None = Field(default=None, description="a retry: the first try's id")
    try_number: int = Field(default=1, description="1 for a first try, 2 for its first retry, ...")
    max_tries: int = 1
    not_before: datetime | None = Field(default=None, description="a retry waits until then")
    cpu_seconds: float | None = Field(
        default=None, description="CPU time of the run's process and kernel; null: not measured"
    )
    peak_memory_bytes: int | None = Field(
        default=None, description="peak resident memory of the run's kernel; null: not measured"
    )
    output_bytes: int | None = Field(default=None, description="size of the output notebook")


# papermill's options a submission may not set, and why (an unknown field is refused too).
UNSUPPORTED_OPTIONS = {
    "cwd": "a run starts in its notebook's own directory",
    "log_output": "a run's streams are in its output notebook (GET /db/executions/{id}/output)",
    "kernel_name": "the notebook's kernelspec decides the kernel (metadata.kernelspec.name)",
    "language": "the notebook's kernelspec decides the language",
    "engine_name": "runs use the exec API's papermill engine",
    "prepare_only": "every submission runs",
    "execution_timeout": "use timeout_seconds (the whole run's wall-clock limit)",
    "start_timeout": "kernels are started ahead by the platform",
    "stdout_file": "a run's streams are in its output notebook",
    "stderr_file": "a run's streams are in its output notebook",
    "progress_bar": "follow a run with GET /db/executions/{id}",
    "request_save_on_cell_execute": "the output is written when the run ends",
}


class SubmissionOptions(BaseModel):
    """What every submission body shares: papermill's report mode, and a clear 422 for a
    field the API does not know (never silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    report_mode: bool = Field(
        default=False, description="papermill's report mode: code cells' inputs are hidden"
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, why in UNSUPPORTED_OPTIONS.items():
                if name in data:
                    raise ValueError(f"{name} is not supported: {why}")
        return data


class SubmitExecution(SubmissionOptions):
    """New-style submission (``POST /db/executions``)."""

    notebook_id: Id | None = None
    notebook_path: RelPath | None = None
    parameters: dict[str, JsonData] = {}
    username: Username | None = None
    timeout_seconds: Timeout | None = None


class LegacySubmission(SubmissionOptions):
    """The prototype's submission bodies: each says how it maps to a ``SubmitExecution``."""

    wait: bool = False
    timeout_seconds: Timeout | None = None

    def submission(self) -> SubmitExecution:
        raise NotImplementedError


class ExecuteRequest(LegacySubmission):
    """``POST /execute`` (prototype: ``{user, path, params}``)."""

    model_config = ConfigDict(populate_by_name=True)
    user: Username | None = Field(default=None, validation_alias=AliasChoices("user", "username"))
    path: RelPath = Field(validation_alias=AliasChoices("path", "notebook_path", "notebook"))
    params: dict[str, JsonData] = Field(
        default={}, validation_alias=AliasChoices("params", "parameters")
    )

    def submission(self) -> SubmitExecution:
        return SubmitExecution(
            notebook_path=self.path,
            parameters=self.params,
            username=self.user,
            timeout_seconds=self.timeout_seconds,
            report_mode=self.report_mode,
        )


class RunNotebookRequest(LegacySubmission):
    """``POST /run-notebook``: ``output_path`` is ignored (outputs go to the output area)."""

    input_path: RelPath
    output_path: Annotated[str, Field(max_length=1000)] | None = None
    parameters: dict[str, JsonData] = {}
    username: Username | None = None

    def submission(self) -> SubmitExecution:
        return SubmitExecution(
            notebook_path=self.input_path,
            parameters=self.parameters,
            username=self.username,
            timeout_seconds=self.timeout_seconds,
            report_mode=self.report_mode,
        )


class ExecuteNotebookRequest(SubmitExecution, LegacySubmission):
    """``POST /execute-notebook``: by registered id or by path (``POST /db/executions``'s body
    plus ``wait``)."""

    def submission(self) -> SubmitExecution:
        return SubmitExecution.model_validate(self.model_dump(exclude={"wait"}))


class ExecutionSubmitted(BaseModel):
    execution_id: int
    status: str
    output_path: str | None = None
    execution: ExecutionHistoryResponse


# The answer a submission endpoint gives when its owner's queue is full (for the OpenAPI
# description; services.submissions raises it).
QUEUE_FULL: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "the owner has EXEC_API_MAX_QUEUED_PER_USER runs queued; "
        "the Retry-After header says when to try again"
    }
}


# ------------------------------------------------------------------------ schedules
def _cron(v: str) -> str:
    from exec_api.services.cron import check_cron

    return check_cron(_no_nul(v))


def _zone(v: str) -> str:
    from exec_api.services.cron import check_zone

    check_zone(_no_nul(v))
    return v


def _utc(v: datetime | None) -> datetime | None:
    """An aware instant as naive UTC (what the API stores); a naive one is UTC already."""
    if v is not None and v.tzinfo is not None:
        from datetime import UTC

        return v.astimezone(UTC).replace(tzinfo=None)
    return v


Cron = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_cron)]
Zone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_zone)]
Instant = Annotated[datetime, AfterValidator(_utc)]
OverlapPolicy = Literal["skip", "queue", "cancel"]
CatchupPolicy = Literal["none", "latest", "all"]
_POLICIES = {
    "cron": "five fields: minute hour day-of-month month day-of-week, in `timezone`",
    "overlap_policy": "a planned time while an earlier run of the schedule is queued or running: "
    "skip it (recorded as skipped), queue it behind, or cancel the earlier run",
    "catchup_policy": "planned times missed while no worker ran: none, the latest only, or all "
    "(at most catchup_max)",
    "retry_attempts": "retries of a failed or timed-out run (never of a cancelled one), each its "
    "own execution linked to the first, after retry_backoff_seconds, doubled each time",
}


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notebook_id: Id
    name: Name | None = None
    cron: Cron = Field(description=_POLICIES["cron"])
    timezone: Zone = "UTC"
    parameters: dict[str, JsonData] = {}
    timeout_seconds: Timeout | None = None
    report_mode: bool = False
    ends_at: Instant | None = Field(
        default=None, description="no run is planned after this instant"
    )
    paused: bool = False
    overlap_policy: OverlapPolicy = Field(default="skip", description=_POLICIES["overlap_policy"])
    catchup_policy: CatchupPolicy = Field(default="latest", description=_POLICIES["catchup_policy"])
    catchup_max: Annotated[int, Field(ge=1, le=100)] = 10
    retry_attempts: Annotated[int, Field(ge=0, le=10)] = Field(
        default=0, description=_POLICIES["retry_attempts"]
    )
    retry_backoff_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60


class ScheduleUpdate(BaseModel):
    """Only the fields given change; ``notebook_id`` cannot (make a new schedule)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """A field given as null would erase a value the schedule needs (name, timeout and
        ends_at may be null: none, the default, no end)."""
        if isinstance(data, dict):
            for name, value in data.items():
                if value is None and name not in ("name", "timeout_seconds", "ends_at"):
                    raise ValueError(f"{name} cannot be null: leave it out to keep it")
        return data

    name: Name | None = None
    cron: Cron | None = None
    timezone: Zone | None = None
    parameters: dict[str, JsonData] | None = None
    timeout_seconds: Timeout | None = None
    report_mode: bool | None = None
    ends_at: Instant | None = None
    overlap_policy: OverlapPolicy | None = None
    catchup_policy: CatchupPolicy | None = None
    catchup_max: Annotated[int, Field(ge=1, le=100)] | None = None
    retry_attempts: Annotated[int, Field(ge=0, le=10)] | None = None
    retry_backoff_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = None


class ScheduleResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    notebook_id: int
    name: str | None = None
    cron: str
    timezone: str
    parameters: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    report_mode: bool
    ends_at: datetime | None = None
    paused: bool
    overlap_policy: str
    catchup_policy: str
    catchup_max: int
    retry_attempts: int
    retry_backoff_seconds: int
    next_run_at: datetime | None = Field(
        default=None, description="the next planned instant (UTC); none once the schedule ended"
    )
    last_planned_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------ notifications
class SubscriptionCreate(BaseModel):
    """A webhook (an https:// URL, signed with a secret shown once) or an e-mail address, for
    your runs' failures (a failed or timed-out run with no retry to follow), successes and
    recoveries; of one notebook, one schedule, or all of your runs."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["webhook", "email"]
    target: Annotated[str, Field(min_length=3, max_length=2000), AfterValidator(_no_nul)]
    notebook_id: Id | None = None
    schedule_id: Id | None = None
    on_failure: bool = True
    on_success: bool = False
    on_recovery: bool = True


class SubscriptionResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    kind: str
    target: str
    notebook_id: int | None = None
    schedule_id: int | None = None
    on_failure: bool
    on_success: bool
    on_recovery: bool
    enabled: bool
    created_at: datetime


class SubscriptionCreated(SubscriptionResponse):
    secret: str | None = Field(
        default=None,
        description="webhooks: the key of X-Exec-Api-Signature (t=<unix>,v1=<hex HMAC-SHA256 of "
        "'<t>.<body>'>); shown only now",
    )


class DeliveryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    subscription_id: int
    execution_id: int
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None
