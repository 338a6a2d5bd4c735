"""user notices: which user was mailed a note by notify-users, when, for which window

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_notices',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('user', sa.String(length=64), nullable=False),
    sa.Column('sent_at', sa.BigInteger(), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('window_end', sa.BigInteger(), nullable=False),
    sa.Column('waste_usd', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('user_notices', schema=None) as batch_op:
        batch_op.create_index('ix_user_notices_user_sent', ['user', 'sent_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('user_notices', schema=None) as batch_op:
        batch_op.drop_index('ix_user_notices_user_sent')

    op.drop_table('user_notices')
