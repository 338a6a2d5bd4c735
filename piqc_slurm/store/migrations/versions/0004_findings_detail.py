"""findings detail: the sentence a user reads, the advice, the estimate on the advice

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sentence', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('advice', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('est_elapsed', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('est_cost_usd', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('confidence', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('confidence')
        batch_op.drop_column('est_cost_usd')
        batch_op.drop_column('est_elapsed')
        batch_op.drop_column('advice')
        batch_op.drop_column('sentence')
