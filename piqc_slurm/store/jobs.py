"""Upserting sacct job records, idempotently and in bulk.

Identity is (cluster, job_id_raw, submit). A record seen again replaces the
stored values (a RUNNING job that has since ended, a CANCELLED whose "by
uid" vanished after a slurmctld restart): sacct records change after the
fact. Rows are written with one INSERT ... ON CONFLICT DO UPDATE per batch,
so re-ingesting a window leaves the store exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.engine import Connection

from piqc_slurm.store.models import Job

KEY = ("cluster", "job_id_raw", "submit")
COLUMNS = tuple(c.name for c in Job.__table__.columns if c.name != "id")
# restarts comes from the sampler's summaries (sacct 22.05 prints no restart count): a record never clears it.
UPDATABLE = tuple(c for c in COLUMNS if c not in KEY and c != "restarts")
BATCH = 5000


# Values for NOT NULL columns a record leaves empty.
_DEFAULTS = {c.name: ("" if c.type.python_type is str else 0) for c in Job.__table__.columns
             if not c.nullable and c.name != "id" and c.name not in KEY}


def _row(record: Any) -> dict[str, Any]:
    if hasattr(record, "to_row"):
        record = record.to_row()
    get = record.get if isinstance(record, dict) else (lambda k: getattr(record, k, None))
    row = {}
    for c in COLUMNS:
        v = get(c)
        row[c] = _DEFAULTS[c] if v is None and c in _DEFAULTS else v
    return row


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Job.__table__)
    return stmt.on_conflict_do_update(index_elements=list(KEY),
                                      set_={c: getattr(stmt.excluded, c) for c in UPDATABLE})


def _q(name: str) -> str:
    return f'"{name}"'  # "user" and "end" are reserved words on PostgreSQL


_COLS_SQL = ", ".join(_q(c) for c in COLUMNS)
# Constant SQL text built from the model's column names, never from data.
_PG_STAGE = f"CREATE TEMP TABLE IF NOT EXISTS piqc_jobs_in AS SELECT {_COLS_SQL} FROM jobs WITH NO DATA"  # noqa: S608
_PG_MERGE = (f"INSERT INTO jobs ({_COLS_SQL}) SELECT {_COLS_SQL} FROM piqc_jobs_in "  # noqa: S608
             f"ON CONFLICT ({', '.join(_q(k) for k in KEY)}) DO UPDATE SET "
             + ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in UPDATABLE))


def _pg_value(v: Any) -> Any:
    if isinstance(v, dict | list):
        from psycopg.types.json import Json

        return Json(v)
    return v


def _pg_copy_upsert(conn: Connection, rows: list[dict]) -> None:
    """PostgreSQL: COPY the batch into a temp table, then one INSERT ... ON
    CONFLICT from it: several times faster than multi-row INSERTs."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(_PG_STAGE)
        cur.execute("TRUNCATE piqc_jobs_in")
        with cur.copy(f"COPY piqc_jobs_in ({_COLS_SQL}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([_pg_value(r[c]) for c in COLUMNS])
        cur.execute(_PG_MERGE)


def upsert_jobs(conn: Connection, records: Iterable[Any], batch: int = BATCH) -> int:
    """Insert or update job records (dataclasses or dicts with the jobs columns)."""
    pg_copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
    stmt = None if pg_copy else _insert(conn.dialect.name)
    n = 0
    for chunk in _batches((_row(r) for r in records), batch):
        # One statement may not touch the same key twice: the last record of a key wins.
        rows = list({tuple(r[k] for k in KEY): r for r in chunk}.values())
        if pg_copy:
            _pg_copy_upsert(conn, rows)
        else:
            conn.execute(stmt, rows)
        n += len(rows)
    return n
