"""findings detail (the sentence a user reads, the advice, the estimate on the advice), analysis runs,
GPM activity and power share per GPU

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

GPU_COLUMNS = ('power_limit_w', 'power_frac_mean', 'sm_active_mean', 'sm_active_p95', 'sm_occupancy_mean',
               'sm_occupancy_p95', 'tensor_active_mean', 'tensor_active_p95', 'dram_active_mean', 'dram_active_p95')


def upgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sentence', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('advice', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('est_elapsed', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('est_cost_usd', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('confidence', sa.String(length=16), nullable=True))
    with op.batch_alter_table('gpu_usage', schema=None) as batch_op:
        for name in GPU_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table('analysis_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('since', sa.BigInteger(), nullable=False),
    sa.Column('until', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('jobs', sa.Integer(), nullable=False),
    sa.Column('findings', sa.Integer(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('analysis_runs')
    with op.batch_alter_table('gpu_usage', schema=None) as batch_op:
        for name in reversed(GPU_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('confidence')
        batch_op.drop_column('est_cost_usd')
        batch_op.drop_column('est_elapsed')
        batch_op.drop_column('advice')
        batch_op.drop_column('sentence')
