"""steps and every sacct field: jobs.steps (the step lines, as ingest read them) and jobs.extra
(the job line's fields the typed columns do not reproduce, verbatim), so `piqc-slurm sacct` prints
steps without -X and every field of `sacct -o ALL`

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('steps', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('steps')
        batch_op.drop_column('extra')
