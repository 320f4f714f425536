"""Settings, read from the environment (prefix ``EXEC_API_``) or an env file.

Secrets (the database URL, which carries the password) have no default.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EXEC_API_", env_file=None, extra="ignore", case_sensitive=False
    )

    # --- database ---------------------------------------------------------------------
    database_url: str = Field(
        description="SQLAlchemy URL, e.g. postgresql+psycopg://exec_api:PASSWORD@127.0.0.1/exec_api"
    )
    # Sized so that a busy process keeps its connections: a connection past the pool (an
    # "overflow" one) is opened, authenticated (SCRAM) and closed per use, which cost about
    # 40 % of CRUD throughput on 2 cores; and 16 threads keep 2 cores busy with less GIL
    # contention than 40 (bench/bench.py: 100 connections closed loop 598 -> 794-852 req/s).
    db_pool_size: int = 24
    db_max_overflow: int = 8
    threadpool_size: int = Field(
        default=16,
        description="Threads for blocking request work; the DB pool must be larger "
        "(db_pool_size + db_max_overflow > threadpool_size + worker_concurrency + 2)",
    )

    # --- files ------------------------------------------------------------------------
    notebook_root_template: str = Field(
        default="/home/{username}/notebooks",
        description="Per-user notebook area; notebook paths are relative to it",
    )
    output_root: str = Field(
        default="/var/lib/exec-api/outputs",
        description="Outputs are written to <output_root>/<username>/<execution id>.ipynb",
    )

    # --- authentication ---------------------------------------------------------------
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = Field(
        default=None,
        description="Defaults to jwks_uri of <issuer>/.well-known/openid-configuration",
    )
    oidc_algorithms: list[str] = ["RS256"]
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_leeway_seconds: int = 30
    jwks_cache_seconds: int = 300
    jupyterhub_api_url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:8081/hub/api ; enables hub tokens"
    )
    jupyterhub_admin_is_admin: bool = True
    auth_cache_seconds: int = 30
    admin_group: str = "exec-api-admins"
    probe_token: str | None = Field(
        default=None, description="Optional static bearer token for /ready and /metrics"
    )
    http_timeout_seconds: float = 5.0

    # --- access (who may use the API) ---------------------------------------------------
    users_group: str = Field(
        default="platform-users",
        description="Group (OIDC groups claim or hub groups) whose members may use the API; "
        "members of admin_group may too, everyone else gets 403",
    )
    jupyterhub_required_scope: str = Field(
        default="custom:exec-api:run",
        description="Scope a JupyterHub token must hold (in the 'scopes' of the hub's "
        "/user answer), alone or filtered to its owner (!user=<name>)",
    )
    notebook_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Largest notebook file the API reads (registration, parameter discovery)",
    )

    # --- execution --------------------------------------------------------------------
    runner: Literal["local", "subprocess", "systemd"] = "local"
    worker_embedded: bool = Field(
        default=True, description="Run the execution worker inside the API process"
    )
    worker_concurrency: int = 2
    kernel_pool_size: int = Field(default=-1, description="-1: same as worker_concurrency")
    default_timeout_seconds: int = 600
    max_timeout_seconds: int = 3600
    poll_interval_seconds: float = 1.0
    schedule_poll_seconds: float = Field(
        default=5.0, description="how often a worker looks for schedules that are due"
    )
    notify_allowed_networks: list[str] = Field(
        default=[],
        description="networks (CIDR) a webhook may reach though they are private, loopback or "
        "link-local (refused otherwise: a user's webhook must not reach the platform's insides)",
    )
    notify_timeout_seconds: float = Field(default=5.0, description="one webhook or SMTP call")
    notify_max_attempts: int = Field(default=5, ge=1, description="deliveries of one notification")
    notify_poll_seconds: float = 2.0
    smtp_host: str | None = Field(
        default=None, description="the relay e-mail goes through; none: off"
    )
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "exec-api@localhost"
    notify_email_domains: list[str] = Field(
        default=[],
        description="domains e-mail notifications may go to (a user's own organisation's): the "
        "relay is the platform's, not an open one; empty: any",
    )
    max_schedules_per_user: int = Field(
        default=50, ge=0, description="schedules one user may have (each plans runs on its own)"
    )
    max_subscriptions_per_user: int = Field(
        default=20, ge=0, description="notification subscriptions one user may have"
    )
    schedule_grace_seconds: int = Field(
        default=90,
        description="a planned time later than this when a worker sees it was missed (the "
        "schedule's catchup_policy decides); earlier, it is on time",
    )
    orphan_policy: Literal["fail", "requeue"] = "fail"
    orphan_check_interval_seconds: float = 10.0
    max_attempts: int = 3
    wait_max_seconds: float = 300.0

    zygote_preload_file: str | None = Field(
        default=None,
        description="JSON list of extra modules the kernel fork server imports once "
        "(e.g. numpy, pandas), read by the zygote process from the environment",
    )

    # --- systemd runner ---------------------------------------------------------------
    systemd_run_path: str = "/usr/bin/systemd-run"
    systemctl_path: str = "/usr/bin/systemctl"
    systemd_python: str | None = Field(
        default=None, description="Interpreter for the per-run unit (defaults to this one)"
    )
    systemd_memory_max: str = "2G"
    systemd_cpu_quota: str = "100%"
    systemd_tasks_max: int = 256
    systemd_slice: str = "exec-api-runs.slice"
    systemd_extra_properties: list[str] = []
    systemd_environment: dict[str, str] = Field(
        default={},
        description="environment of every run, the same for all users (the launcher allows exactly "
        "these, e.g. PGSERVICE for the analytics database)",
    )

    # --- ready runs (subprocess and systemd runners) --------------------------------------
    ready_per_user: int = Field(
        default=1,
        ge=0,
        description="Runs started ahead for each recent user: a child (for systemd, a unit as "
        "that user, with the run limits) whose kernel is up and which waits for its job; "
        "0 starts every run cold",
    )
    ready_max_users: int = Field(
        default=8, ge=1, description="Users with ready runs at once (least recently used go first)"
    )
    ready_idle_seconds: int = Field(
        default=600, ge=1, description="A ready run nobody took in this time is ended"
    )

    # --- fair share and retention ---
    # Queued: enough for a sweep of parameters, small enough that one user's flood cannot fill
    # the table (a submission over it gets 429 with Retry-After).  Running: 2, the default
    # worker_concurrency, so a user alone still uses every slot; when others wait, the worker
    # takes their runs first (fewest running, then oldest), so nobody waits for a backlog.
    max_queued_per_user: int = Field(
        default=20, ge=1, description="Queued executions a user may have; more get 429"
    )
    max_running_per_user: int = Field(
        default=2, ge=1, description="Executions of one user running at once (all workers)"
    )
    queue_retry_after_seconds: int = Field(
        default=30, ge=1, description="Retry-After of a 429 for a full queue"
    )
    # 32 MiB holds tables and plots of any notebook meant to be read; the worker holds about
    # three copies of an output while it records it.
    max_output_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="An output notebook larger than this fails its run and is not kept",
    )
    retention_days: int = Field(
        default=90, ge=1, description="`exec-api retention` deletes finished runs older than this"
    )
    retention_per_user: int = Field(
        default=1000, ge=1, description="... and a user's finished runs beyond the newest N"
    )

    # --- misc -------------------------------------------------------------------------
    cors_origins: list[str] = []
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.oidc_issuer and not self.oidc_jwks_url and not self.jupyterhub_api_url:
            raise ValueError(
                "no authentication configured: set EXEC_API_OIDC_ISSUER (and "
                "EXEC_API_OIDC_AUDIENCE) and/or EXEC_API_JUPYTERHUB_API_URL"
            )
        if (self.oidc_issuer or self.oidc_jwks_url) and not self.oidc_audience:
            raise ValueError("EXEC_API_OIDC_AUDIENCE is required with OIDC")
        if (
            self.db_pool_size + self.db_max_overflow
            <= self.threadpool_size + self.worker_concurrency + 2
        ):
            # Otherwise request threads can all wait for a connection held by sessions whose
            # clean-up needs a thread: a deadlock until the pool timeout.
            raise ValueError(
                "EXEC_API_DB_POOL_SIZE + EXEC_API_DB_MAX_OVERFLOW must exceed "
                "EXEC_API_THREADPOOL_SIZE + EXEC_API_WORKER_CONCURRENCY + 2"
            )
        if "{username}" not in self.notebook_root_template:
            raise ValueError("EXEC_API_NOTEBOOK_ROOT_TEMPLATE must contain {username}")
        return self

    @property
    def pool_size(self) -> int:
        return self.worker_concurrency if self.kernel_pool_size < 0 else self.kernel_pool_size


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]
