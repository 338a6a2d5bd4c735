"""usage data model: job evidence, GPU histograms, job GPUs, node inventory, price and catalog overrides

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exit_signal', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('restarts', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('total_cpu_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('req_gpus', sa.Integer(), nullable=True))
    with op.batch_alter_table('gpu_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('util_hist', sa.JSON(), nullable=True))
    op.create_table('job_gpus',
    sa.Column('summary_id', sa.Integer(), nullable=False),
    sa.Column('minor', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('uuid', sa.String(length=96), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['summary_id'], ['node_summaries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('summary_id', 'minor')
    )
    op.create_table('node_gpus',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('minor', sa.Integer(), nullable=False),
    sa.Column('gpu_type', sa.String(length=32), nullable=True),
    sa.Column('uuid', sa.String(length=96), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('seen_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('cluster', 'node', 'minor')
    )
    op.create_table('price_overrides',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('usd', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('cluster', 'kind', 'key')
    )
    op.create_table('catalog_overrides',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('gpu_type', sa.String(length=32), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('cluster', 'gpu_type')
    )


def downgrade() -> None:
    op.drop_table('catalog_overrides')
    op.drop_table('price_overrides')
    op.drop_table('node_gpus')
    op.drop_table('job_gpus')
    with op.batch_alter_table('gpu_usage', schema=None) as batch_op:
        batch_op.drop_column('util_hist')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('req_gpus')
        batch_op.drop_column('total_cpu_s')
        batch_op.drop_column('restarts')
        batch_op.drop_column('exit_signal')
