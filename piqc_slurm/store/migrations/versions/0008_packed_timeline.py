"""packed timeline: table timeline holds one row per summary and GPU (t0, step, n and a zlib blob of
util, memory and power arrays: piqc_slurm/store/timeline.py) instead of one per GPU per bin, the old
rows packed into it; indexes on jobs.job_id_raw, array_job_id and het_job_id (`piqc-slurm sacct -j`).
The table is made anew under another name, filled and renamed: on PostgreSQL its grants and
row-level security policies go with the old one (re-run sql/postgres-rls.sql and the push role's
GRANT lines after `db upgrade`). Downgrade unpacks the rows again (readings as whole numbers,
memory in 4 MiB units, as the packed rows hold them; the slots of gaps are not rows).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:00:00
"""

import itertools

import sqlalchemy as sa
from alembic import context, op

from piqc_slurm.store.timeline import pack, unpack

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BATCH_ROWS = 100_000  # bins converted per statement batch, whole summaries (at least one)
BATCH_SUMMARIES = 1_000  # summaries weighed per look ahead
READINGS = ('util', 'mem_mib', 'power_w')
PG_RENAMES = {  # PostgreSQL named the constraints after the table they were made in
    'timeline_packed': (
        'ALTER TABLE timeline RENAME CONSTRAINT timeline_packed_pkey TO timeline_pkey',
        'ALTER TABLE timeline RENAME CONSTRAINT timeline_packed_summary_id_fkey TO timeline_summary_id_fkey'),
    'timeline_bins': (
        'ALTER TABLE timeline RENAME CONSTRAINT timeline_bins_pkey TO timeline_pkey',
        'ALTER TABLE timeline RENAME CONSTRAINT timeline_bins_summary_id_fkey TO timeline_summary_id_fkey'),
}


def _bins(name):
    return sa.table(name, sa.column('summary_id', sa.Integer()), sa.column('t', sa.BigInteger()),
                    sa.column('minor', sa.Integer()), *(sa.column(k, sa.Float()) for k in READINGS))


def _packed(name):
    return sa.table(name, sa.column('summary_id', sa.Integer()), sa.column('minor', sa.Integer()),
                    sa.column('t0', sa.BigInteger()), sa.column('step', sa.Integer()),
                    sa.column('n', sa.Integer()), sa.column('data', sa.LargeBinary()))


def _create_packed(name):
    op.create_table(name,
    sa.Column('summary_id', sa.Integer(), nullable=False),
    sa.Column('minor', sa.Integer(), nullable=False),
    sa.Column('t0', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['summary_id'], ['node_summaries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('summary_id', 'minor')
    )


def _create_bins(name):  # 0001's timeline
    op.create_table(name,
    sa.Column('summary_id', sa.Integer(), nullable=False),
    sa.Column('t', sa.BigInteger(), nullable=False),
    sa.Column('minor', sa.Integer(), nullable=False),
    sa.Column('util', sa.Float(), nullable=True),
    sa.Column('mem_mib', sa.Float(), nullable=True),
    sa.Column('power_w', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['summary_id'], ['node_summaries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('summary_id', 't', 'minor')
    )


def _replace_timeline(new):
    """Drop timeline, rename `new` to it; on PostgreSQL its key and foreign key get the names a
    table made as timeline has (timeline_pkey, timeline_summary_id_fkey)."""
    op.drop_table('timeline')
    op.rename_table(new, 'timeline')
    if op.get_context().dialect.name == 'postgresql':
        for statement in PG_RENAMES[new]:
            op.execute(statement)


def _ranges(conn, sid, weight):
    """(after, upto): summary_id ranges (after, upto] of whole summaries, about BATCH_ROWS bins each."""
    after = None
    while True:
        q = sa.select(sid, weight).group_by(sid).order_by(sid).limit(BATCH_SUMMARIES)
        if after is not None:
            q = q.where(sid > after)
        weights = conn.execute(q).all()
        if not weights:
            return
        upto, rows = weights[0][0], 0
        for s, k in weights:
            if rows and rows + int(k) > BATCH_ROWS:
                break
            upto, rows = s, rows + int(k)
        yield after, upto
        after = upto


def _in(col, after, upto):
    return sa.and_(col <= upto, sa.true() if after is None else col > after)


def _pack_rows(conn, old, new):
    for after, upto in _ranges(conn, old.c.summary_id, sa.func.count()):
        q = (sa.select(old).where(_in(old.c.summary_id, after, upto))
             .order_by(old.c.summary_id, old.c.minor, old.c.t))
        out = []
        for sid, group in itertools.groupby(conn.execute(q).mappings(), key=lambda r: r['summary_id']):
            bins = [{'t': r['t'], 'gpu': r['minor'], **{k: r[k] for k in READINGS}} for r in group]
            out += [{'summary_id': sid, **row} for row in pack(bins)]
        if out:
            conn.execute(new.insert(), out)


def _unpack_rows(conn, packed, bins):
    for after, upto in _ranges(conn, packed.c.summary_id, sa.func.sum(packed.c.n)):
        q = sa.select(packed).where(_in(packed.c.summary_id, after, upto))
        out = [{'summary_id': r['summary_id'], 't': b['t'], 'minor': b['gpu'], **{k: b[k] for k in READINGS}}
               for r in conn.execute(q).mappings() for b in unpack(r)
               if any(b[k] is not None for k in READINGS)]
        if out:
            conn.execute(bins.insert(), out)


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_job_id_raw', ['job_id_raw'], unique=False)
        batch_op.create_index('ix_jobs_array_job_id', ['array_job_id'], unique=False)
        batch_op.create_index('ix_jobs_het_job_id', ['het_job_id'], unique=False)

    _create_packed('timeline_packed')
    if not context.is_offline_mode():
        _pack_rows(op.get_bind(), _bins('timeline'), _packed('timeline_packed'))
    _replace_timeline('timeline_packed')


def downgrade() -> None:
    _create_bins('timeline_bins')
    if not context.is_offline_mode():
        _unpack_rows(op.get_bind(), _packed('timeline'), _bins('timeline_bins'))
    _replace_timeline('timeline_bins')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_het_job_id')
        batch_op.drop_index('ix_jobs_array_job_id')
        batch_op.drop_index('ix_jobs_job_id_raw')
