"""fair share: per-user indexes of queued and running executions

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_executions_queued_user', 'notebook_executions', ['username', 'id'], unique=False, postgresql_where=sa.text("status = 'queued'"))
    op.create_index('ix_executions_running_user', 'notebook_executions', ['username'], unique=False, postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index('ix_executions_running_user', table_name='notebook_executions', postgresql_where=sa.text("status = 'running'"))
    op.drop_index('ix_executions_queued_user', table_name='notebook_executions', postgresql_where=sa.text("status = 'queued'"))
