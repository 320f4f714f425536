"""papermill semantics: where a parameter's default comes from, report mode

Revision ID: 0003
Revises: 0002

* notebook_parameters.default_from_notebook: the default was read from the notebook's
  parameters cell (refreshed when the file changes, never injected: the notebook keeps its own
  value); false: a user set it through the API (injected when the caller gives none).
  Rows from before keep false, which is what they did: their default is injected.
* notebooks.detect_parameters: the registration read the parameters cell; names added to the
  cell later are declared at the next run.
* notebook_executions.report_mode: papermill's report mode (inputs hidden in the output).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('notebook_parameters', sa.Column('default_from_notebook', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('notebooks', sa.Column('detect_parameters', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('notebook_executions', sa.Column('report_mode', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    op.drop_column('notebook_executions', 'report_mode')
    op.drop_column('notebooks', 'detect_parameters')
    op.drop_column('notebook_parameters', 'default_from_notebook')
