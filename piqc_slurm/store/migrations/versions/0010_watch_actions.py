"""watch actions: what the sampler's live watch did while a job ran (notices, recoveries, the
cancel policy's warnings and cancels), one row each, from the summary's "watch" list; the digest
lists a window's. On PostgreSQL with per-user access the table is the admins' (sql/postgres-rls.sql).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 02:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('watch_actions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('summary_id', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('job_id_raw', sa.BigInteger(), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('user', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('since', sa.BigInteger(), nullable=False),
    sa.Column('usd', sa.Float(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['summary_id'], ['node_summaries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('watch_actions', schema=None) as batch_op:
        batch_op.create_index('ix_watch_actions_at', ['at'], unique=False)
        batch_op.create_index('ix_watch_actions_summary', ['summary_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('watch_actions', schema=None) as batch_op:
        batch_op.drop_index('ix_watch_actions_summary')
        batch_op.drop_index('ix_watch_actions_at')

    op.drop_table('watch_actions')
