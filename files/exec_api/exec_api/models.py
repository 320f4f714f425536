"""Tables.  The prototype's three tables, columns and constraints are kept; the execution
table gains the columns the queue needs (all nullable or defaulted, so old rows stay valid).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Timestamps are naive UTC (the prototype's TIMESTAMP columns), whatever the server's zone.
UTC_NOW = text("timezone('utc', now())")


class Base(DeclarativeBase):
    pass


class Notebook(Base):
    __tablename__ = "notebooks"
    __table_args__ = (UniqueConstraint("name", "username", name="uq_notebook_name_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    file_path: Mapped[str] = mapped_column(String(512), nullable=False, unique=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=UTC_NOW, onupdate=UTC_NOW
    )
    tags: Mapped[Any | None] = mapped_column(JSON)
    # "metadata" is reserved by SQLAlchemy's declarative API: attribute renamed, column kept.
    metadata_: Mapped[Any | None] = mapped_column("metadata", JSON)
    # The registration read the parameters cell: names added to it later are declared at the
    # next run (0003; older rows: false).
    detect_parameters: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )

    parameters: Mapped[list[NotebookParameter]] = relationship(
        back_populates="notebook",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="NotebookParameter.id",
    )


class NotebookParameter(Base):
    __tablename__ = "notebook_parameters"
    __table_args__ = (UniqueConstraint("notebook_id", "param_name", name="uq_param_notebook_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notebook_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("notebooks.id", ondelete="CASCADE"), nullable=False
    )
    param_name: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    param_type: Mapped[str] = mapped_column(String(50), nullable=False)
    default_value: Mapped[Any | None] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    required: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    validation_rules: Mapped[Any | None] = mapped_column(JSON)
    # True: default_value mirrors the notebook's parameters cell (refreshed from the file,
    # never injected: papermill injects only what the caller passed).  False: a user set it.
    default_from_notebook: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=UTC_NOW, onupdate=UTC_NOW
    )

    notebook: Mapped[Notebook] = relationship(back_populates="parameters")


class NotebookExecution(Base):
    __tablename__ = "notebook_executions"
    __table_args__ = (
        Index(
            "ix_executions_queued",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_executions_running",
            "worker_id",
            postgresql_where=text("status = 'running'"),
        ),
        # Fair share: each user's oldest queued run, and each user's running count.
        Index(
            "ix_executions_queued_user",
            "username",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_executions_running_user",
            "username",
            postgresql_where=text("status = 'running'"),
        ),
        Index(
            "uq_executions_schedule_planned",
            "schedule_id",
            "planned_for",
            unique=True,
            postgresql_where=text("try_number = 1 AND planned_for IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notebook_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("notebooks.id", ondelete="SET NULL"), index=True
    )
    username: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    input_path: Mapped[str] = mapped_column(String(512), nullable=False)
    output_path: Mapped[str | None] = mapped_column(String(512))
    parameters_used: Mapped[Any | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(50), nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    execution_time_seconds: Mapped[int | None] = mapped_column(Integer)
    # Prototype column, NOT NULL: set on submission, then reset to the run's real start.
    started_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)

    # --- added for the queue --------------------------------------------------------
    submitted_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    error_detail: Mapped[Any | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    worker_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    runner: Mapped[str | None] = mapped_column(String(50))
    report_mode: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    # --- schedules and retries (0004) ----------------------------------------------
    # The schedule that planned this run and the planned instant it is for (a "run now" of a
    # schedule has no planned instant). One first try per schedule and instant: the unique
    # index below is what makes firing exactly-once across workers and hosts. It is keyed on
    # try_number, not retry_of: deleting a first try (retention) nulls its retries' retry_of,
    # and two retries of one instant must not then collide.
    schedule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    planned_for: Mapped[datetime | None] = mapped_column(DateTime)
    # A retry is its own row: try_number 2, 3, ... linked to the first try (retry_of).
    retry_of: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("notebook_executions.id", ondelete="SET NULL"), index=True
    )
    try_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    max_tries: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    retry_backoff_seconds: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("60")
    )
    # Not claimed before this instant (a retry's backoff).
    not_before: Mapped[datetime | None] = mapped_column(DateTime)
    # What the run used (its own process and kernel's rusage; NULL where the runner cannot
    # tell): CPU seconds (user + system), peak resident memory, and the output notebook's size.
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Schedule(Base):
    """A user's notebook, run with these parameters at the instants a cron expression plans in
    a time zone (exec_api.services.cron), until ``ends_at``."""

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_due", "next_run_at", postgresql_where=text("NOT paused")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    notebook_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("notebooks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str | None] = mapped_column(String(255))
    cron: Mapped[str] = mapped_column(String(200), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC")
    parameters: Mapped[Any | None] = mapped_column(JSON)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    report_mode: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # skip | queue | cancel: what a planned time does while an earlier run is queued or running.
    overlap_policy: Mapped[str] = mapped_column(String(20), nullable=False, server_default="skip")
    # none | latest | all: what planned times missed while no worker ran (more than the grace
    # late) do; `all` is capped at catchup_max runs.
    catchup_policy: Mapped[str] = mapped_column(String(20), nullable=False, server_default="latest")
    catchup_max: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("10"))
    retry_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    retry_backoff_seconds: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("60")
    )
    # The next planned instant not yet fired; NULL once the schedule has ended.
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_planned_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=UTC_NOW, onupdate=UTC_NOW
    )


class NotificationSubscription(Base):
    """A user's own notifications: a webhook (signed with its secret) or an e-mail address, for
    the failures, successes or recoveries of their runs (all of them, one notebook's, or one
    schedule's)."""

    __tablename__ = "notification_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # webhook | email
    target: Mapped[str] = mapped_column(String(2000), nullable=False)
    # The webhook's HMAC key (shown once, at creation); NULL for e-mail.
    secret: Mapped[str | None] = mapped_column(String(200))
    notebook_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("notebooks.id", ondelete="CASCADE"), index=True
    )
    schedule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("schedules.id", ondelete="CASCADE"), index=True
    )
    on_failure: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    on_success: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    on_recovery: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)


class NotificationDelivery(Base):
    """One notification of one execution's event to one subscription, and its delivery."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "execution_id", "event", name="uq_delivery_once"),
        Index(
            "ix_deliveries_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("notification_subscriptions.id", ondelete="CASCADE"), nullable=False
    )
    execution_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("notebook_executions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    event: Mapped[str] = mapped_column(String(20), nullable=False)  # failure | success | recovery
    # pending | sending | sent | failed (attempts exhausted)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=UTC_NOW
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, server_default=UTC_NOW)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
