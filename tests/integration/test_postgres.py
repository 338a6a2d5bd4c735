"""docker-slurm/postgres.sh, and sql/ on the real PostgreSQL it runs: the reference DDL
and the migrations build the same schema; the views run; row-level security
(sql/postgres-rls.sql) shows each user only their own rows, in the tables and
through every view, shows an admin everything, and lets no reader write.

Needs root (postgres.sh starts the server; roles are made as the superuser),
like the real-Slurm tests, hence the `slurm` mark."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pg import POSTGRES_SH, URL_ENV, PostgresUnavailable, fresh_database, postgres_url, psql, superuser_psql
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from piqc_slurm.store import open_engine
from piqc_slurm.store.db import alembic_config
from piqc_slurm.store.models import Base, GpuTimeline, GpuUsage, IdleGap, Job, JobGpu, NodeSummary
from piqc_slurm.store.timeline import pack, unpack

pytestmark = pytest.mark.slurm
SQL = Path(__file__).resolve().parents[2] / "sql"
VIEWS = ("v_job_gpu", "v_idle_gpus", "v_gpu_hours_by_user_day", "v_gpu_hours_by_account_day", "v_job_cost")
TABLES = ("jobs", "node_summaries", "gpu_usage", "timeline")
D0 = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())
H = 3600


@pytest.fixture(scope="module")
def server() -> str:
    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL tests need root (docker-slurm/postgres.sh starts the server)")
    try:
        return postgres_url()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")


def test_postgres_sh_up_is_idempotent_and_fast(server):
    if os.environ.get(URL_ENV):
        pytest.skip(f"${URL_ENV} names another server")
    sh = str(POSTGRES_SH)
    started = time.monotonic()
    subprocess.run([sh, "up"], check=True, capture_output=True, timeout=60)
    assert time.monotonic() - started < 5
    assert subprocess.run([sh, "status"], capture_output=True, text=True).returncode == 0
    url = subprocess.run([sh, "url"], check=True, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"postgresql\+psycopg://piqc:[A-Za-z0-9]{32}@127\.0\.0\.1:\d+/piqc_test", url)
    assert url == server
    pass_file = Path("/var/lib/piqc-postgres/postgres.pass")
    if pass_file.exists():  # the default PIQC_PG_DIR
        assert stat.S_IMODE(pass_file.stat().st_mode) == 0o600 and pass_file.stat().st_uid == 0
        assert stat.S_IMODE(pass_file.parent.stat().st_mode) == 0o700
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "piqc"
    finally:
        engine.dispose()


def engine_for(url: str):
    return create_engine(url, poolclass=NullPool)


def schema_of(engine) -> dict:
    insp = inspect(engine)
    return {t: (
        [(c["name"], str(c["type"]), c["nullable"], c.get("autoincrement")) for c in insp.get_columns(t)],
        insp.get_pk_constraint(t)["constrained_columns"],
        sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
        sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)),
        sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                f["options"].get("ondelete")) for f in insp.get_foreign_keys(t)),
    ) for t in sorted(insp.get_table_names())}


def test_postgresql_ddl_and_migrations_build_the_same_schema(server):
    with fresh_database() as migrated_url, fresh_database() as ddl_url:
        migrated = open_engine(migrated_url)
        psql(ddl_url, file=SQL / "schema.postgresql.sql")
        from_ddl = engine_for(ddl_url)
        try:
            got, want = schema_of(from_ddl), schema_of(migrated)
            assert set(got) == set(Base.metadata.tables) | {"alembic_version"}
            assert got == want
            with migrated.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            with from_ddl.connect() as conn:
                assert MigrationContext.configure(conn).get_current_revision() == head
            open_engine(ddl_url).dispose()  # a store made from the DDL is at head: nothing to migrate
        finally:
            from_ddl.dispose()
            migrated.dispose()


def test_0008_packs_a_0007_timeline_and_its_downgrade_unpacks_it(server):
    """Migration 0008 with rows on PostgreSQL: 0007's bins (GPU 0 at T and T+120, GPU 1 at T+60)
    packed on 60 s slots into bytea, the constraints named as a table made as timeline has them;
    the downgrade gives the bins back as the packed rows hold them (whole numbers, 4 MiB units)."""
    from alembic import command

    from piqc_slurm.store.db import migrate

    t = D0 + 2 * H
    old = [(t, 0, 37.4, 1023.0, 550.7), (t + 120, 0, 0.0, 0.0, None), (t + 60, 1, 99.5, 81559.0, 60.2)]

    def constraints(conn):
        return conn.execute(text("SELECT conname FROM pg_constraint WHERE conrelid = 'timeline'::regclass "
                                 "ORDER BY conname")).scalars().all()

    with fresh_database() as url:
        engine = engine_for(url)
        try:
            migrate(engine, "0007")
            with engine.begin() as c:
                c.execute(text("INSERT INTO node_summaries (id, cluster, job_id_raw, restart_count, node, started_at, "
                               "\"user\", monitor, partial, gpu_count, doc) VALUES (1, 'c', 7, 0, 'vm', :t, 'u', "
                               "'on', false, 2, '{}')"), {"t": t})
                c.execute(text("INSERT INTO timeline (summary_id, t, minor, util, mem_mib, power_w) "
                               "VALUES (1, :t, :m, :u, :mem, :p)"),
                          [dict(zip(("t", "m", "u", "mem", "p"), b, strict=True)) for b in old])
            migrate(engine)
            with engine.connect() as c:
                rows = [dict(r._mapping) for r in c.execute(text(
                    "SELECT minor, t0, step, n, data FROM timeline ORDER BY minor"))]
                assert constraints(c) == ["timeline_pkey", "timeline_summary_id_fkey"]
                assert {"ix_jobs_array_job_id", "ix_jobs_het_job_id"} <= set(c.execute(text(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).scalars().all())
            assert [(r["minor"], r["t0"], r["step"], r["n"]) for r in rows] == [(0, t, 60, 3), (1, t + 60, 60, 1)]
            assert [[(b["t"], b["util"], b["mem_mib"], b["power_w"]) for b in unpack(r)] for r in rows] == [
                [(t, 37, 1024, 551), (t + 60, None, None, None), (t + 120, 0, 0, None)],
                [(t + 60, 100, 81560, 60)]]
            cfg = alembic_config(engine)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0007")
            with engine.connect() as c:
                back = c.execute(text("SELECT t, minor, util, mem_mib, power_w FROM timeline ORDER BY minor, t")).all()
                assert constraints(c) == ["timeline_pkey", "timeline_summary_id_fkey"]
            assert [tuple(r) for r in back] == [(t, 0, 37.0, 1024.0, 551.0), (t + 120, 0, 0.0, 0.0, None),
                                                (t + 60, 1, 100.0, 81560.0, 60.0)]
        finally:
            engine.dispose()


# --- row-level security ---------------------------------------------------------

def sample_rows(alice: str, bob: str) -> list:
    """alice 1001: 4 h100 for 2 h, two idle, with a timeline; alice 1003: 1 h100 whose
    summary lacks the user (joined to her job by job_ref); bob 1002: 2 a10g, FAILED;
    bob 1005: running; dave: a summary not joined to any job."""
    def job(raw, user, account, start, end, gpus, gpu_type, state="COMPLETED", elapsed=None):
        return Job(cluster="sim", job_id_raw=raw, job_id=str(raw), submit=start - 60, user=user, account=account,
                   partition="gpu", state=state, start=start, end=end,
                   elapsed=elapsed if elapsed is not None else end - start, alloc_gpus=gpus, gpu_type=gpu_type)

    def gpus(*utils, seconds=7200.0):
        return [GpuUsage(minor=i, did_work=u > 0, util_mean=u, seconds=seconds) for i, u in enumerate(utils)]

    j1 = job(1001, alice, "nlp", D0 + 2 * H, D0 + 4 * H, 4, "h100")
    j2 = job(1002, bob, "cv", D0 + 10 * H, D0 + 11 * H, 2, "a10g", state="FAILED")
    j3 = job(1003, alice, "nlp", D0 + 24 * H + 1800, D0 + 25 * H, 1, "h100")
    j5 = job(1005, bob, "cv", D0 + 30 * H, None, 1, "h100", state="RUNNING", elapsed=1800)
    s1 = NodeSummary(cluster="sim", job_id_raw=1001, node="gpu01", job=j1, user=alice, gpu_count=4, doc={},
                     gpus=gpus(90.0, 80.0, 0.0, 0.0))
    s2 = NodeSummary(cluster="sim", job_id_raw=1002, node="gpu02", job=j2, user=bob, gpu_count=2, doc={},
                     gpus=gpus(50.0, 70.0, seconds=3600.0))
    s3 = NodeSummary(cluster="sim", job_id_raw=1003, node="gpu01", job=j3, user="", gpu_count=1, doc={},
                     gpus=gpus(95.0, seconds=1800.0))
    s4 = NodeSummary(cluster="sim", job_id_raw=1006, node="gpu03", user="dave", gpu_count=1, doc={},
                     gpus=gpus(0.0, seconds=600.0))
    return [j1, j2, j3, j5, s1, s2, s3, s4]


@pytest.fixture(scope="module")
def rls(server):
    """A migrated database with the views, RLS, sample rows, prices, and login
    roles alice_*, bob_* (piqc_reader) and boss_* (piqc_admin); their URLs."""
    sfx = secrets.token_hex(3)
    names = {"alice": f"alice_{sfx}", "bob": f"bob_{sfx}", "boss": f"boss_{sfx}"}
    password = secrets.token_hex(16)
    with fresh_database() as url:
        dbname = make_url(url).database
        owner = open_engine(url)
        try:
            psql(url, file=SQL / "views.postgresql.sql")
            superuser_psql((SQL / "postgres-rls.sql").read_text(), dbname)
            superuser_psql((SQL / "postgres-rls.sql").read_text(), dbname)  # idempotent
            with Session(owner) as session:
                session.add_all(sample_rows(names["alice"], names["bob"]))
                session.flush()
                s1 = session.query(NodeSummary).filter_by(job_id_raw=1001).one()
                s2 = session.query(NodeSummary).filter_by(job_id_raw=1002).one()
                session.add_all([GpuTimeline(summary_id=s.id, **row) for s, minors in ((s1, 4), (s2, 2))
                                 for row in pack([{"t": D0 + 2 * H + 60 * k, "gpu": m, "util": 50.0}
                                                  for m in range(minors) for k in range(3)])])
                session.add_all([JobGpu(summary_id=s.id, minor=m, node=s.node, source="nvml")
                                 for s, minors in ((s1, 4), (s2, 2)) for m in range(minors)])
                session.add(IdleGap(cluster="sim", node="gpu01", minor=3, gpu_type="h100", partition="gpu",
                                    kind="idle", start=D0, end=D0 + H, gpus=1, demand_gpu_seconds=0,
                                    window_start=D0, window_end=D0 + 24 * H, computed_at=D0 + 24 * H))
                session.execute(text("INSERT INTO gpu_prices VALUES ('h100', 4.0), ('default', 1.0)"))
                session.commit()
            superuser_psql(f"CREATE ROLE {names['alice']} LOGIN PASSWORD '{password}' IN ROLE piqc_reader;\n"
                           f"CREATE ROLE {names['bob']} LOGIN PASSWORD '{password}' IN ROLE piqc_reader;\n"
                           f"CREATE ROLE {names['boss']} LOGIN PASSWORD '{password}' IN ROLE piqc_admin;\n")
            urls = {who: make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
                    for who, role in names.items()}
            yield {"owner": owner, "owner_url": url, "urls": urls, "names": names}
        finally:
            owner.dispose()
    # The database is gone (and with it the roles' privileges): now the roles can go.
    with contextlib.suppress(Exception):
        superuser_psql("DROP ROLE IF EXISTS " + ", ".join(names.values()) + ";")
    # The group roles are cluster-wide: drop them only if no other database uses them.
    with contextlib.suppress(Exception):
        superuser_psql("DROP ROLE IF EXISTS piqc_admin, piqc_reader;")


def query(url: str, sql: str) -> list[dict]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def count(url: str, relation: str) -> int:
    return query(url, f"SELECT COUNT(*) AS n FROM {relation}")[0]["n"]  # noqa: S608 (our own names)


EXPECTED = {  # rows each one sees
    "alice": {"jobs": 2, "node_summaries": 2, "gpu_usage": 5, "timeline": 4, "job_gpus": 4, "v_job_gpu": 2,
              "v_idle_gpus": 2, "v_gpu_hours_by_user_day": 2, "v_gpu_hours_by_account_day": 2, "v_job_cost": 2},
    "bob": {"jobs": 2, "node_summaries": 1, "gpu_usage": 2, "timeline": 2, "job_gpus": 2, "v_job_gpu": 2,
            "v_idle_gpus": 0, "v_gpu_hours_by_user_day": 1, "v_gpu_hours_by_account_day": 1, "v_job_cost": 2},
    "boss": {"jobs": 4, "node_summaries": 4, "gpu_usage": 8, "timeline": 6, "job_gpus": 6, "idle_gaps": 1,
             "node_gpus": 0, "analysis_runs": 0, "user_notices": 0, "v_job_gpu": 4, "v_idle_gpus": 3,
             "v_gpu_hours_by_user_day": 3, "v_gpu_hours_by_account_day": 3, "v_job_cost": 4},
}


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_the_sites_idle_time_is_for_admins_only(rls, who):
    for relation in ("idle_gaps", "node_gpus", "analysis_runs", "price_overrides", "catalog_overrides",
                     "user_notices"):
        with pytest.raises(ProgrammingError, match="permission denied"):
            count(rls["urls"][who], relation)


def test_owner_sees_every_row(rls):
    for relation, n in EXPECTED["boss"].items():
        assert count(rls["owner_url"], relation) == n, relation


def test_views_are_security_invoker(rls):
    rows = query(rls["owner_url"], "SELECT relname, reloptions FROM pg_class WHERE relkind = 'v' "
                                   "AND relnamespace = 'public'::regnamespace ORDER BY relname")
    assert {r["relname"]: r["reloptions"] for r in rows} == {v: ["security_invoker=true"] for v in VIEWS}


@pytest.mark.parametrize("who", ["alice", "bob", "boss"])
def test_each_sees_their_rows_in_tables_and_views(rls, who):
    url = rls["urls"][who]
    for relation, n in EXPECTED[who].items():
        assert count(url, relation) == n, f"{who} in {relation}"
    if who == "boss":
        return
    me = rls["names"][who]
    for relation in ("jobs", "node_summaries", "v_job_gpu", "v_idle_gpus", "v_gpu_hours_by_user_day", "v_job_cost"):
        users = {r["user"] for r in query(url, f'SELECT DISTINCT "user" FROM {relation}')}  # noqa: S608
        assert users <= {me, ""}, f"{who} sees {users} in {relation}"


def test_reader_numbers_are_their_own(rls):
    alice = rls["urls"]["alice"]
    jobs = {r["job_id"]: r for r in query(alice, "SELECT * FROM v_job_gpu")}
    assert set(jobs) == {"1001", "1003"}
    assert (jobs["1001"]["gpus_sampled"], jobs["1001"]["gpus_used"], jobs["1001"]["gpus_idle"]) == (4, 2, 2)
    assert jobs["1001"]["gpu_hours"] == pytest.approx(8.0) and jobs["1001"]["util_avg"] == pytest.approx(42.5)
    assert jobs["1003"]["gpus_used"] == 1  # its summary has no user: seen through the job
    days = query(alice, "SELECT day, account, gpu_hours FROM v_gpu_hours_by_account_day ORDER BY day")
    assert [(str(r["day"]), r["account"], r["gpu_hours"]) for r in days] == [
        ("2026-11-27", "nlp", pytest.approx(8.0)), ("2026-11-28", "nlp", pytest.approx(0.5))]
    cost = query(alice, "SELECT SUM(cost_usd) AS c, SUM(idle_usd) AS i FROM v_job_cost")[0]
    assert (cost["c"], cost["i"]) == (pytest.approx(34.0), pytest.approx(16.0))
    assert query(alice, "SELECT * FROM jobs WHERE job_id = '1002'") == []


def test_a_reader_unpacks_her_packed_timeline(rls):
    """The bytea round trip through row-level security: alice's job 1001, 4 GPUs x 3 bins at 50 %."""
    rows = query(rls["urls"]["alice"], "SELECT minor, t0, step, n, data FROM timeline ORDER BY minor")
    assert [(r["minor"], r["t0"], r["step"], r["n"]) for r in rows] == [(m, D0 + 2 * H, 60, 3) for m in range(4)]
    assert [(b["t"], b["gpu"], b["util"], b["mem_mib"], b["power_w"]) for r in rows for b in unpack(r)] == [
        (D0 + 2 * H + 60 * k, m, 50, None, None) for m in range(4) for k in range(3)]


def test_admin_sees_everyone(rls):
    boss = rls["urls"]["boss"]
    users = {r["user"] for r in query(boss, 'SELECT DISTINCT "user" FROM v_idle_gpus')}
    assert users == {rls["names"]["alice"], "dave"}
    days = query(boss, "SELECT account, SUM(gpu_hours) AS h FROM v_gpu_hours_by_account_day GROUP BY account")
    assert {r["account"]: r["h"] for r in days} == {"nlp": pytest.approx(8.5), "cv": pytest.approx(2.0)}


@pytest.mark.parametrize("who", ["alice", "boss"])
@pytest.mark.parametrize("statement", [
    "INSERT INTO jobs (cluster, job_id_raw, submit, job_id) VALUES ('sim', 9, 9, '9')",  # privileges come first
    "UPDATE jobs SET state = 'COMPLETED'",
    "DELETE FROM jobs",
    "DELETE FROM gpu_usage",
    "UPDATE node_summaries SET \"user\" = current_user",
    "INSERT INTO gpu_prices VALUES ('a100', 0.01)",
    "SELECT * FROM spool_replays",
    "SELECT * FROM watermarks",
])
def test_readers_cannot_write_or_see_bookkeeping(rls, who, statement):
    engine = engine_for(rls["urls"][who])
    try:
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_example_queries_run_per_user(rls):
    window = {"since": str(D0), "until": str(D0 + 2 * 24 * H)}
    owner = psql(rls["owner_url"], file=SQL / "queries.sql", variables=window)
    alice = psql(rls["urls"]["alice"], file=SQL / "queries.sql", variables=window)
    me = rls["names"]["alice"]
    assert alice.splitlines()[0] == f"{me}|2|4.00"  # top idle users: only herself
    assert rls["names"]["bob"] not in alice
    assert rls["names"]["bob"] in owner and f"{me}|2|4.00" in owner
