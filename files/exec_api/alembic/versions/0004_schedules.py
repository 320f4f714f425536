"""schedules, retries, resource accounting, notifications

Revision ID: 0004
Revises: 0003

* schedules: a user's notebook run with stored parameters at the instants a cron expression
  plans in a time zone (exec_api.services.cron), with overlap, catch-up and retry policies.
* notebook_executions: the schedule and planned instant a run is for (one first try per
  schedule and instant: uq_executions_schedule_planned), retries as their own rows linked to the
  first try (retry_of, try_number, max_tries, retry_backoff_seconds), and not_before (a retry
  waits for its backoff). Rows from before are first tries of one try.
* notebook_executions: what a run used (cpu_seconds, peak_memory_bytes, output_bytes); NULL for
  rows from before and where the runner cannot tell.
* notification_subscriptions, notification_deliveries: a user's webhooks and e-mail addresses
  for the failures, successes and recoveries of their runs, and each delivery (once per
  subscription, execution and event).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

UTC_NOW = sa.text("timezone('utc', now())")


def upgrade() -> None:
    op.create_table(
        'schedules',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('username', sa.String(length=100), nullable=False),
        sa.Column('notebook_id', sa.Integer(), sa.ForeignKey('notebooks.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=True),
        sa.Column('cron', sa.String(length=200), nullable=False),
        sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
        sa.Column('parameters', sa.JSON(), nullable=True),
        sa.Column('timeout_seconds', sa.Integer(), nullable=True),
        sa.Column('report_mode', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('ends_at', sa.DateTime(), nullable=True),
        sa.Column('paused', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('overlap_policy', sa.String(length=20), server_default='skip', nullable=False),
        sa.Column('catchup_policy', sa.String(length=20), server_default='latest', nullable=False),
        sa.Column('catchup_max', sa.Integer(), server_default=sa.text('10'), nullable=False),
        sa.Column('retry_attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.Column('retry_backoff_seconds', sa.Integer(), server_default=sa.text('60'), nullable=False),
        sa.Column('next_run_at', sa.DateTime(), nullable=True),
        sa.Column('last_planned_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), server_default=UTC_NOW, nullable=False),
        sa.Column('updated_at', sa.DateTime(), server_default=UTC_NOW, nullable=False),
    )
    op.create_index('ix_schedules_username', 'schedules', ['username'])
    op.create_index('ix_schedules_notebook_id', 'schedules', ['notebook_id'])
    op.create_index('ix_schedules_due', 'schedules', ['next_run_at'], postgresql_where=sa.text('NOT paused'))

    op.add_column('notebook_executions', sa.Column('schedule_id', sa.Integer(), sa.ForeignKey('schedules.id', ondelete='SET NULL'), nullable=True))
    op.add_column('notebook_executions', sa.Column('planned_for', sa.DateTime(), nullable=True))
    op.add_column('notebook_executions', sa.Column('retry_of', sa.Integer(), sa.ForeignKey('notebook_executions.id', ondelete='SET NULL'), nullable=True))
    op.add_column('notebook_executions', sa.Column('try_number', sa.Integer(), server_default=sa.text('1'), nullable=False))
    op.add_column('notebook_executions', sa.Column('max_tries', sa.Integer(), server_default=sa.text('1'), nullable=False))
    op.add_column('notebook_executions', sa.Column('retry_backoff_seconds', sa.Integer(), server_default=sa.text('60'), nullable=False))
    op.add_column('notebook_executions', sa.Column('not_before', sa.DateTime(), nullable=True))
    op.add_column('notebook_executions', sa.Column('cpu_seconds', sa.Float(), nullable=True))
    op.add_column('notebook_executions', sa.Column('peak_memory_bytes', sa.BigInteger(), nullable=True))
    op.add_column('notebook_executions', sa.Column('output_bytes', sa.BigInteger(), nullable=True))
    op.create_index('ix_notebook_executions_schedule_id', 'notebook_executions', ['schedule_id'])
    op.create_index('ix_notebook_executions_retry_of', 'notebook_executions', ['retry_of'])
    op.create_index('uq_executions_schedule_planned', 'notebook_executions', ['schedule_id', 'planned_for'],
                    unique=True, postgresql_where=sa.text('try_number = 1 AND planned_for IS NOT NULL'))


    op.create_table(
        'notification_subscriptions',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('username', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('target', sa.String(length=2000), nullable=False),
        sa.Column('secret', sa.String(length=200), nullable=True),
        sa.Column('notebook_id', sa.Integer(), sa.ForeignKey('notebooks.id', ondelete='CASCADE'), nullable=True),
        sa.Column('schedule_id', sa.Integer(), sa.ForeignKey('schedules.id', ondelete='CASCADE'), nullable=True),
        sa.Column('on_failure', sa.Boolean(), server_default=sa.text('true'), nullable=False),
        sa.Column('on_success', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('on_recovery', sa.Boolean(), server_default=sa.text('true'), nullable=False),
        sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
        sa.Column('created_at', sa.DateTime(), server_default=UTC_NOW, nullable=False),
    )
    op.create_index('ix_notification_subscriptions_username', 'notification_subscriptions', ['username'])
    op.create_index('ix_notification_subscriptions_notebook_id', 'notification_subscriptions', ['notebook_id'])
    op.create_index('ix_notification_subscriptions_schedule_id', 'notification_subscriptions', ['schedule_id'])
    op.create_table(
        'notification_deliveries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('subscription_id', sa.Integer(), sa.ForeignKey('notification_subscriptions.id', ondelete='CASCADE'), nullable=False),
        sa.Column('execution_id', sa.Integer(), sa.ForeignKey('notebook_executions.id', ondelete='CASCADE'), nullable=False),
        sa.Column('event', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
        sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), server_default=UTC_NOW, nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), server_default=UTC_NOW, nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.UniqueConstraint('subscription_id', 'execution_id', 'event', name='uq_delivery_once'),
    )
    op.create_index('ix_notification_deliveries_execution_id', 'notification_deliveries', ['execution_id'])
    op.create_index('ix_deliveries_pending', 'notification_deliveries', ['next_attempt_at'],
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_table('notification_deliveries')
    op.drop_table('notification_subscriptions')
    op.drop_index('uq_executions_schedule_planned', table_name='notebook_executions')
    op.drop_index('ix_notebook_executions_retry_of', table_name='notebook_executions')
    op.drop_index('ix_notebook_executions_schedule_id', table_name='notebook_executions')
    for column in ('output_bytes', 'peak_memory_bytes', 'cpu_seconds', 'not_before', 'retry_backoff_seconds', 'max_tries', 'try_number', 'retry_of', 'planned_for', 'schedule_id'):
        op.drop_column('notebook_executions', column)
    op.drop_index('ix_schedules_due', table_name='schedules')
    op.drop_index('ix_schedules_notebook_id', table_name='schedules')
    op.drop_index('ix_schedules_username', table_name='schedules')
    op.drop_table('schedules')
