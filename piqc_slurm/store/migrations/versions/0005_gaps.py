"""idle gaps: stretches of GPU time no job held, with the demand waiting for them, for the digest

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idle_gaps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('minor', sa.Integer(), nullable=True),
    sa.Column('gpu_type', sa.String(length=32), nullable=True),
    sa.Column('partition', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('start', sa.BigInteger(), nullable=False),
    sa.Column('end', sa.BigInteger(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('demand_gpu_seconds', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('window_end', sa.BigInteger(), nullable=False),
    sa.Column('computed_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('idle_gaps', schema=None) as batch_op:
        batch_op.create_index('ix_idle_gaps_start', ['start'], unique=False)
        batch_op.create_index('ix_idle_gaps_window', ['cluster', 'window_start', 'window_end'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idle_gaps', schema=None) as batch_op:
        batch_op.drop_index('ix_idle_gaps_window')
        batch_op.drop_index('ix_idle_gaps_start')

    op.drop_table('idle_gaps')
