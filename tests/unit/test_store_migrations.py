"""Stores made by an older piqc-slurm are migrated forward when opened."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from piqc_slurm.store import open_engine
from piqc_slurm.store.db import alembic_config, migrate

pytestmark = pytest.mark.unit


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_head_is_the_newest_migration():
    from piqc_slurm.store.db import MIGRATIONS

    newest = max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("0*.py"))
    assert head() == newest


def test_a_0001_store_keeps_its_rows_and_gains_findings(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    migrate(old, "0001")
    with old.begin() as c:
        c.execute(text("INSERT INTO jobs (cluster, job_id_raw, submit, job_id, name, user, account, partition, qos, "
                       "state, exit_code, derived_exit_code, elapsed, alloc_cpus, alloc_nodes, alloc_gpus, "
                       "alloc_tres, nodelist, work_dir, comment) VALUES ('c', 1, 100, '1', 'n', 'u', '', '', '', "
                       "'COMPLETED', '0:0', '', 10, 1, 1, 2, '', 'vm', '', '')"))
    assert "findings" not in inspect(old).get_table_names()
    old.dispose()
    new = open_engine(url)
    assert "findings" in inspect(new).get_table_names()
    with new.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head()
        assert c.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    new.dispose()


def test_a_0002_store_keeps_its_rows_and_gains_the_usage_model(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    migrate(old, "0002")
    with old.begin() as c:
        c.execute(text("INSERT INTO jobs (cluster, job_id_raw, submit, job_id, name, user, account, partition, qos, "
                       "state, exit_code, derived_exit_code, elapsed, alloc_cpus, alloc_nodes, alloc_gpus, "
                       "alloc_tres, nodelist, work_dir, comment) VALUES ('c', 7, 100, '7', 'n', 'u', '', '', '', "
                       "'FAILED', '3:0', '', 10, 1, 1, 2, '', 'vm', '', '')"))
        c.execute(text("INSERT INTO node_summaries (cluster, job_id_raw, restart_count, node, started_at, job_ref, "
                       "user, monitor, partial, gpu_count, doc) VALUES ('c', 7, 0, 'vm', 100, 1, 'u', 'on', 0, 1, "
                       "'{}')"))
        c.execute(text("INSERT INTO gpu_usage (summary_id, minor, lost, samples, seconds, util_mean) "
                       "VALUES (1, 0, 0, 10, 10.0, 55.5)"))
    old.dispose()
    new = open_engine(url)
    tables = set(inspect(new).get_table_names())
    assert {"job_gpus", "node_gpus", "price_overrides", "catalog_overrides"} <= tables
    with new.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head()
        assert c.execute(text("SELECT job_id, state, exit_code, exit_signal, restarts, total_cpu_s, req_gpus "
                              "FROM jobs")).one() == ("7", "FAILED", "3:0", None, None, None, None)
        assert c.execute(text("SELECT util_mean, util_hist FROM gpu_usage")).one() == (55.5, None)
    new.dispose()


def test_0009_sacct_by_account_reads_the_account_end_index(tmp_path):
    """sacct -A matches lower(account) (sacct is case-blind), so only an index on that expression
    serves it: SQLite's own planner names the index for the query `sacct -A X -S -E` builds."""
    import sqlite3

    from piqc_slurm.query.select import Selection, build_query

    db = tmp_path / "piqc.db"
    engine = open_engine(f"sqlite:///{db}")
    try:
        assert "ix_jobs_account" not in {i["name"] for i in inspect(engine).get_indexes("jobs")}
    finally:
        engine.dispose()
    sql, params = build_query(Selection(start=1_793_491_200, end=1_796_083_200, accounts=["Physics"]))
    with sqlite3.connect(db) as conn:
        plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH j USING INDEX ix_jobs_account_end (<expr>=?" in plan, plan


def test_0009_replaces_the_plain_account_index_and_its_downgrade_gives_it_back(tmp_path):
    from alembic import command

    engine = create_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        migrate(engine, "0008")
        assert {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("jobs")}["ix_jobs_account"] == [
            "account"]
        migrate(engine, "0009")
        with engine.connect() as c:
            ddl = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_account_end'").scalar()
        assert ddl == 'CREATE INDEX ix_jobs_account_end ON jobs (lower(account), "end")'
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        names = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("jobs")}
        assert names["ix_jobs_account"] == ["account"] and "ix_jobs_account_end" not in names
    finally:
        engine.dispose()
