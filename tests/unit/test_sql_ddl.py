"""sql/: the reference DDL is what the migrations produce and matches the
models; the views and example queries give the right numbers (on SQLite;
tests/integration/test_postgres.py runs them on PostgreSQL)."""

from __future__ import annotations

import importlib.util
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from piqc_slurm.store import open_engine
from piqc_slurm.store.db import alembic_config
from piqc_slurm.store.models import Base, GpuUsage, Job, NodeSummary

pytestmark = pytest.mark.unit
SQL = Path(__file__).resolve().parents[2] / "sql"
VIEWS = ("v_job_gpu", "v_idle_gpus", "v_gpu_hours_by_user_day", "v_gpu_hours_by_account_day", "v_job_cost")


def _load_generate():
    spec = importlib.util.spec_from_file_location("piqc_sql_generate", SQL / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generate()


# --- the DDL ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["schema.sqlite.sql", "schema.postgresql.sql", "views.postgresql.sql"])
def test_committed_sql_is_what_generate_makes(name):
    path = SQL / name
    expected = generate.outputs()[path]
    assert path.read_bytes() == expected.encode(), f"{name} is stale: run .venv/bin/python sql/generate.py"


def test_generate_check_mode_passes():
    assert generate.main(["--check"]) == 0


def schema_of(engine) -> dict:
    """Tables, columns, keys, indexes and unique constraints as SQLAlchemy reflects them."""
    insp = inspect(engine)
    out = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                        for c in insp.get_columns(table)],
            "primary_key": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table)),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                                    tuple(f["referred_columns"]), f["options"].get("ondelete"))
                                   for f in insp.get_foreign_keys(table)),
        }
    return out


def memory_engine():
    return create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})


def test_sqlite_ddl_builds_the_schema_of_the_models():
    from_ddl = memory_engine()
    with from_ddl.connect() as conn:
        conn.connection.driver_connection.executescript((SQL / "schema.sqlite.sql").read_text())
    from_models = memory_engine()
    Base.metadata.create_all(from_models)

    got, want = schema_of(from_ddl), schema_of(from_models)
    assert set(got) == set(Base.metadata.tables)
    for table in want:
        assert got[table] == want[table], table
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with from_ddl.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_migrations_leave_nothing_to_autogenerate(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path}/piqc.db")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_postgresql_ddl_quotes_reserved_names():
    ddl = (SQL / "schema.postgresql.sql").read_text()
    assert ddl.count('"user" VARCHAR(64) NOT NULL') == 4  # jobs, node_summaries, user_notices, watch_actions
    assert 'CREATE INDEX ix_jobs_user_end ON jobs ("user", "end");' in ddl
    assert ddl.rstrip().endswith("COMMIT;")


def test_split_statements():
    sql = "-- c\nSELECT 1;\n\nCREATE VIEW v AS\nSELECT 2  -- x;y\n  FROM t;\nSELECT 3"
    assert generate.split_statements(sql) == ["SELECT 1", "CREATE VIEW v AS\nSELECT 2  -- x;y\n  FROM t",
                                              "SELECT 3"]


def test_views_postgresql_rewrites_marked_lines_and_views():
    src = "-- head\n\nCREATE VIEW v AS\nSELECT a AS day,  -- postgresql: SELECT b AS day,\n  FROM t;\n"
    assert generate.render_views_postgresql(src).splitlines()[-3:] == [
        "CREATE VIEW v WITH (security_invoker = true) AS", "SELECT b AS day,", "  FROM t;"]
    pg = (SQL / "views.postgresql.sql").read_text()
    assert pg.count("WITH (security_invoker = true) AS") == len(VIEWS)
    assert "unixepoch" not in pg


# --- the views, on SQLite -------------------------------------------------------

D0 = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())
H = 3600


def gpu(minor: int, util: float | None, did_work: bool | None = None, **kw) -> GpuUsage:
    did = (util or 0) > 0 if did_work is None else did_work
    return GpuUsage(minor=minor, did_work=did, util_mean=util, seconds=kw.pop("seconds", 7200.0),
                    mem_used_max_mib=kw.pop("mem", 70000.0 if did else 0.0), energy_j=kw.pop("energy_j", 0.0), **kw)


def summary(job: Job | None, node: str, gpus: list[GpuUsage], user: str | None = None,
            job_id_raw: int | None = None) -> NodeSummary:
    return NodeSummary(cluster="sim", job_id_raw=job_id_raw or job.job_id_raw, node=node, job=job,
                       user=user or job.user, gpu_count=len(gpus), doc={}, gpus=gpus)


def job(raw: int, user: str, account: str, start: int, end: int | None, gpus: int, gpu_type: str | None,
        state: str = "COMPLETED", elapsed: int | None = None) -> Job:
    return Job(cluster="sim", job_id_raw=raw, job_id=str(raw), submit=start - 60, user=user, account=account,
               partition="gpu", state=state, start=start, end=end,
               elapsed=elapsed if elapsed is not None else end - start, alloc_gpus=gpus, gpu_type=gpu_type)


def sample_rows() -> list:
    """alice 1001: 4 h100 for 2 h, two idle; bob 1002: 2 a10g on two nodes for 1 h, FAILED;
    alice 1003: 1 h100 for 30 min the next day, no sampler data; carol 1004: a CPU job;
    bob 1005: running; dave: a summary not yet joined to its job, one idle GPU for 10 min."""
    j1 = job(1001, "alice", "nlp", D0 + 2 * H, D0 + 4 * H, 4, "h100")
    j2 = job(1002, "bob", "cv", D0 + 10 * H, D0 + 11 * H, 2, "a10g", state="FAILED")
    j3 = job(1003, "alice", "nlp", D0 + 24 * H + 1800, D0 + 25 * H, 1, "h100")
    j4 = job(1004, "carol", "cv", D0 + 4 * H, D0 + 5 * H, 0, None)
    j5 = job(1005, "bob", "cv", D0 + 30 * H, None, 1, "h100", state="RUNNING", elapsed=1800)
    return [
        j1, j2, j3, j4, j5,
        summary(j1, "gpu01", [gpu(0, 90.0, energy_j=3.6e6), gpu(1, 80.0, energy_j=1.8e6), gpu(2, 0.0), gpu(3, 0.0)]),
        summary(j2, "gpu01", [gpu(4, 50.0, seconds=3600.0)]),
        summary(j2, "gpu02", [gpu(0, 70.0, seconds=3600.0, mem=20000.0)]),
        summary(None, "gpu03", [gpu(1, 0.0, seconds=600.0)], user="dave", job_id_raw=1006),
    ]


@pytest.fixture
def views_db(tmp_path) -> sqlite3.Connection:
    """A store built by the migrations, with views.sql (loaded twice: it must
    be re-runnable), the sample rows and prices."""
    path = tmp_path / "piqc.db"
    engine = open_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        session.add_all(sample_rows())
        session.commit()
    engine.dispose()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    conn.executescript((SQL / "views.sql").read_text())
    conn.executescript((SQL / "views.sql").read_text())
    conn.execute("INSERT INTO gpu_prices VALUES ('h100', 4.0), ('default', 1.0)")
    yield conn
    conn.close()


def rows(conn, sql: str, params=()) -> list[dict]:
    return [dict(r) for r in conn.execute(sql, params)]


def test_views_exist(views_db):
    names = {r["name"] for r in rows(views_db, "SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert names == set(VIEWS)


def test_v_job_gpu(views_db):
    got = {r["job_id"]: r for r in rows(views_db, "SELECT * FROM v_job_gpu")}
    assert set(got) == {"1001", "1002", "1003", "1004", "1005"}
    j1 = got["1001"]
    assert (j1["user"], j1["account"], j1["partition"], j1["state"], j1["alloc_gpus"], j1["gpu_type"]) == (
        "alice", "nlp", "gpu", "COMPLETED", 4, "h100")
    assert (j1["start"], j1["end"], j1["elapsed"]) == (D0 + 2 * H, D0 + 4 * H, 2 * H)
    assert j1["gpu_hours"] == pytest.approx(8.0)
    assert (j1["gpus_sampled"], j1["gpus_used"], j1["gpus_idle"]) == (4, 2, 2)
    assert j1["idle_gpu_hours"] == pytest.approx(4.0)
    assert j1["util_avg"] == pytest.approx(42.5)
    assert j1["mem_peak_mib"] == pytest.approx(70000.0)
    assert j1["energy_kwh"] == pytest.approx(1.5)
    j2 = got["1002"]  # two nodes, GPU minors 4 and 0
    assert (j2["gpus_sampled"], j2["gpus_used"], j2["gpus_idle"]) == (2, 2, 0)
    assert j2["gpu_hours"] == pytest.approx(2.0) and j2["idle_gpu_hours"] == 0
    assert j2["util_avg"] == pytest.approx(60.0)
    j3 = got["1003"]  # no sampler data
    assert (j3["gpus_sampled"], j3["gpus_used"], j3["util_avg"]) == (0, 0, None)
    assert j3["gpu_hours"] == pytest.approx(0.5)
    assert got["1004"]["gpu_hours"] == 0
    assert got["1005"]["end"] is None and got["1005"]["gpu_hours"] == pytest.approx(0.5)


def test_v_idle_gpus(views_db):
    got = rows(views_db, 'SELECT job_id, "user", node, minor, idle_gpu_hours FROM v_idle_gpus ORDER BY node, minor')
    assert [(r["job_id"], r["user"], r["node"], r["minor"]) for r in got] == [
        ("1001", "alice", "gpu01", 2), ("1001", "alice", "gpu01", 3), (None, "dave", "gpu03", 1)]
    assert [r["idle_gpu_hours"] for r in got] == pytest.approx([2.0, 2.0, 600 / 3600])
    # the same idle GPU-hours as v_job_gpu counts for the known job
    total = views_db.execute("SELECT SUM(idle_gpu_hours) FROM v_idle_gpus WHERE job_id = '1001'").fetchone()[0]
    assert total == pytest.approx(4.0)


def test_gpu_hours_by_user_day(views_db):
    got = rows(views_db, 'SELECT * FROM v_gpu_hours_by_user_day ORDER BY day, "user"')
    assert [(r["day"], r["cluster"], r["user"], r["gpu_jobs"]) for r in got] == [
        ("2026-11-27", "sim", "alice", 1), ("2026-11-27", "sim", "bob", 1), ("2026-11-28", "sim", "alice", 1)]
    assert [r["gpu_hours"] for r in got] == pytest.approx([8.0, 2.0, 0.5])
    assert [r["idle_gpu_hours"] for r in got] == pytest.approx([4.0, 0.0, 0.0])
    # the day is the UTC day: a job ending at 00:30 UTC counts on that day
    assert rows(views_db, "SELECT day FROM v_gpu_hours_by_user_day WHERE day >= '2026-11-28'")[0]["day"] == \
        "2026-11-28"


def test_gpu_hours_by_account_day(views_db):
    got = rows(views_db, "SELECT * FROM v_gpu_hours_by_account_day ORDER BY day, account")
    assert [(r["day"], r["account"], r["gpu_jobs"]) for r in got] == [
        ("2026-11-27", "cv", 1), ("2026-11-27", "nlp", 1), ("2026-11-28", "nlp", 1)]
    assert [r["gpu_hours"] for r in got] == pytest.approx([2.0, 8.0, 0.5])


def test_v_job_cost(views_db):
    got = {r["job_id"]: r for r in rows(views_db, "SELECT * FROM v_job_cost")}
    assert (got["1001"]["usd_per_gpu_hour"], got["1001"]["cost_usd"], got["1001"]["idle_usd"]) == (
        4.0, pytest.approx(32.0), pytest.approx(16.0))
    assert (got["1002"]["usd_per_gpu_hour"], got["1002"]["cost_usd"]) == (1.0, pytest.approx(2.0))  # default
    assert got["1003"]["cost_usd"] == pytest.approx(2.0)
    views_db.execute("DELETE FROM gpu_prices WHERE gpu_type = 'default'")
    assert views_db.execute("SELECT cost_usd FROM v_job_cost WHERE job_id = '1002'").fetchone()[0] is None


def test_example_queries_run(views_db):
    params = {"since": D0, "until": D0 + 2 * 24 * H}
    results = [rows(views_db, stmt, params if ":since" in stmt else ())
               for stmt in generate.split_statements((SQL / "queries.sql").read_text())]
    assert len(results) == 7
    top_idle, by_account, idle_jobs, failed, unsampled, low_util, daily = results
    assert [(r["user"], r["idle_gpus"], r["idle_gpu_hours"]) for r in top_idle] == [("alice", 2, 4.0)]
    assert [(r["account"], r["gpu_hours"], r["cost_usd"], r["idle_usd"]) for r in by_account] == [
        ("nlp", 8.5, 34.0, 16.0), ("cv", 2.0, 2.0, 0.0)]
    assert [(r["job_id"], r["gpus_idle"]) for r in idle_jobs] == [("1001", 2)]
    assert [(r["user"], r["state"], r["gpu_hours"]) for r in failed] == [("bob", "FAILED", 2.0)]
    assert [r["job_id"] for r in unsampled] == ["1003"]
    assert low_util == []
    assert [(r["day"], r["account"]) for r in daily] == [("2026-11-28", "nlp"), ("2026-11-27", "cv"),
                                                          ("2026-11-27", "nlp")]


def test_views_agree_with_usage(views_db, tmp_path):
    """v_job_gpu.util_avg and v_job_cost.cost_usd are GPUUtilAvg and CostUSD (piqc_slurm/usage/): the same
    jobs through `piqc-slurm sacct` and through the views, with the same prices in both."""
    import io

    from piqc_slurm.config import Config, defaults
    from piqc_slurm.query.access import Caller
    from piqc_slurm.query.command import parse_args
    from piqc_slurm.query.run import Settings, run

    # a GPU that fell off the bus half way (sampled 3600 of 7200 s) on a job of its own: (60 + 40 x 0.5) / 2 = 40
    path = views_db.execute("PRAGMA database_list").fetchone()[2]
    views_db.commit()
    engine = open_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        j6 = job(1007, "erin", "nlp", D0 + 40 * H, D0 + 42 * H, 2, "h100")
        session.add_all([j6, summary(j6, "gpu04", [gpu(0, 60.0), gpu(1, 40.0, seconds=3600.0)])])
        session.commit()
    engine.dispose()
    views_db.execute("INSERT INTO gpu_prices VALUES ('a10g', 1.0)")
    views_db.commit()
    view = {r["job_id"]: r for r in rows(views_db, "SELECT g.job_id, g.util_avg, c.cost_usd FROM v_job_gpu g "
                                                   "JOIN v_job_cost c ON c.job_ref = g.job_ref")}
    assert view["1007"]["util_avg"] == pytest.approx(40.0)
    buf = io.BytesIO()
    cfg = Config({**defaults(), "prices": {"h100": 4.0, "a10g": 1.0, "default": 1.0}})
    run(parse_args(["-M", "all", "-j", "1001,1002,1003,1004,1005,1007", "-P", "-n", "-o",
                    "JobID,GPUUtilAvg,CostUSD"]), url=f"sqlite:///{path}", settings=Settings(config=cfg),
        caller=Caller(0, "root"), out=buf, env={}, now=D0 + 50 * H)
    sacct = {ln.split("|")[0]: ln.split("|")[1:] for ln in buf.getvalue().decode().splitlines()}
    assert set(sacct) == set(view)
    for jid, (util, cost) in sacct.items():
        v = view[jid]
        assert util == ("" if v["util_avg"] is None else f"{v['util_avg']:.1f}"), jid
        if jid not in ("1004", "1005"):  # a CPU job and a running one: the view prices neither the same way
            assert cost == f"{v['cost_usd']:.2f}", jid
