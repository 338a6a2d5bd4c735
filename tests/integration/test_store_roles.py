"""A GPU node's push role on the real PostgreSQL (docker-slurm/postgres.sh): the grants
docs/admin-guide.md ("PostgreSQL roles") lists, run as written there, let push_summary
deliver a real recorded summary (new, and again as a replacement) into a store at head;
each grant is needed (without any one, a push fails); the role can create, alter or drop
nothing, so a push that tried to migrate would fail; and a store behind head is refused
with the clear StoreError and left as it was.

Needs root (postgres.sh starts the server; roles are made as the superuser), like the
real-Slurm tests, hence the `slurm` mark."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import pytest
from pg import PostgresUnavailable, fresh_database, plain, postgres_url, superuser_psql
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from piqc_slurm.errors import StoreError
from piqc_slurm.store import push_summary
from piqc_slurm.store.db import alembic_config, open_engine

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "admin-guide.md"
SQL = REPO / "sql"
SUMMARIES = REPO / "tests" / "fixtures" / "summaries"
SUMMARY, TIMELINE = SUMMARIES / "4gpu-2idle.summary.json", SUMMARIES / "4gpu-2idle.timeline.jsonl"


@pytest.fixture(scope="module")
def server() -> str:
    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL role tests need root (docker-slurm/postgres.sh starts the server)")
    try:
        return postgres_url()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")


def guide_block() -> list[str]:
    """The statements of the ```sql block under "PostgreSQL roles" in the admin guide."""
    doc = GUIDE.read_text()
    section = doc[doc.index("#### PostgreSQL roles"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    return [s.split("--")[0].strip() for s in block.splitlines() if s.split("--")[0].strip()]


def grant_units(statements: list[str]) -> list[tuple[str, str]]:
    """Each GRANT split into (privilege, object) units: `GRANT SELECT, INSERT ON t TO r` -> two."""
    units = []
    for s in statements:
        m = re.fullmatch(r"GRANT (.+?) ON (.+?) TO piqc_push;", s)
        if m is None:
            continue
        privs, objs = m.groups()
        kind = ""
        for prefix in ("DATABASE ", "SCHEMA ", "SEQUENCE "):
            if objs.startswith(prefix):
                kind, objs = prefix, objs[len(prefix):]
        for p in (x.strip() for x in re.split(r",(?![^(]*\))", privs)):
            for o in (x.strip() for x in objs.split(",")):
                units.append((p, kind + o))
    return units




class PushRole:
    """A login role on a fresh database at head, owned by piqc; grants from the guide."""

    def __init__(self, url: str):
        self.owner_url = url
        self.db = make_url(url).database
        self.name = f"piqc_push_{secrets.token_hex(4)}"
        self.password = secrets.token_hex(16)
        superuser_psql(f"CREATE ROLE {self.name} LOGIN PASSWORD '{self.password}'")
        # a locked-down site: PUBLIC may not connect nor use the schema, so the grants are what count
        superuser_psql(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{self.db}" FROM PUBLIC;'
                       "REVOKE ALL ON SCHEMA public FROM PUBLIC;", self.db)
        self.url = make_url(url).set(username=self.name, password=self.password).render_as_string(
            hide_password=False)

    def grant(self, units: list[tuple[str, str]]) -> None:
        sql = [f'REVOKE ALL ON DATABASE "{self.db}" FROM {self.name}',
               f"REVOKE ALL ON SCHEMA public FROM {self.name}",
               f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {self.name}",
               f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {self.name}"]
        for priv, obj in units:
            if obj.startswith("DATABASE "):
                obj = f'DATABASE "{self.db}"'
            sql.append(f"GRANT {priv} ON {obj} TO {self.name}")
        superuser_psql(";\n".join(sql) + ";", self.db)

    def drop(self) -> None:
        superuser_psql(f"DROP OWNED BY {self.name}; ", self.db)
        superuser_psql(f"DROP ROLE IF EXISTS {self.name}")


@pytest.fixture
def store(server):
    """(owner URL, PushRole) on a fresh database migrated to head, with the summary's job."""
    with fresh_database("piqc_roles") as url:
        open_engine(url, mode="create").dispose()
        doc = json.loads(SUMMARY.read_text())
        start, end = int(doc["started"]), int(doc["ended"])
        from piqc_slurm.store.jobs import upsert_jobs

        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            upsert_jobs(conn, [dict(cluster=doc["cluster"], job_id_raw=doc["job_id"], job_id=str(doc["job_id"]),
                                    submit=start - 5, name="t", user="piqcuser", state="COMPLETED",
                                    exit_code="0:0", start=start, end=end, elapsed=end - start, alloc_gpus=4,
                                    gpu_type="h100")])
        engine.dispose()
        role = PushRole(url)
        try:
            yield url, role
        finally:
            role.drop()


def arrived(url: str) -> dict[str, int]:
    q = {"node_summaries": "SELECT count(*) FROM node_summaries", "gpu_usage": "SELECT count(*) FROM gpu_usage",
         "timeline": "SELECT count(*) FROM timeline", "job_gpus": "SELECT count(*) FROM job_gpus",
         "node_gpus": "SELECT count(*) FROM node_gpus", "watch_actions": "SELECT count(*) FROM watch_actions"}
    got = {t: plain(url, sql)[0][0] for t, sql in q.items()}
    got["linked"] = plain(url, "SELECT count(*) FROM node_summaries s JOIN jobs j ON j.id = s.job_ref")[0][0]
    got["restarts"] = plain(url, "SELECT restarts FROM jobs")[0][0]
    return got


def push(url: str, summary: Path = SUMMARY) -> None:
    push_summary(url, summary, TIMELINE, connect_timeout=5)


def variants(tmp_path: Path) -> tuple[Path, Path]:
    """The recorded summary as a later job on the same node (its GPUs seen later: the inventory
    rows are updated), and as a changed copy of itself (partial: the summary row is updated and
    its GPU rows replaced; it carries one live-watch action, so its watch_actions row is inserted, and
    replaced when it comes again)."""
    doc = json.loads(SUMMARY.read_text())
    later = dict(doc, job_id=doc["job_id"] + 1, started=doc["started"] + 600, ended=doc["ended"] + 600)
    changed = dict(doc, partial=True, partial_reason="flush timeout", watch=[
        {"rule": "IDLE_GPUS", "at": doc["started"] + 1800, "since": doc["started"], "gpus": [0], "evidence": "e",
         "action": "notice", "usd": 1.5, "notice": "ok"}])
    paths = tmp_path / "later.summary.json", tmp_path / "changed.summary.json"
    for path, d in zip(paths, (later, changed), strict=True):
        path.write_text(json.dumps(d))
    return paths


def expected() -> dict[str, int]:
    """From the recorded files themselves: 4 devices and GPUs, a packed timeline row for each GPU of
    the timeline, restart count 0."""
    doc = json.loads(SUMMARY.read_text())
    gpus = {b["gpu"] for b in map(json.loads, TIMELINE.read_text().splitlines())}
    return {"node_summaries": 1, "gpu_usage": len(doc["devices"]), "timeline": len(gpus),
            "job_gpus": len(doc["gpus"]), "node_gpus": len(doc["devices"]), "linked": 1,
            "restarts": doc["restart_count"], "watch_actions": 0}


def test_the_guides_push_role_delivers_a_summary_and_can_change_no_schema(store, tmp_path):
    owner, role = store
    statements = guide_block()
    assert statements[0] == "CREATE ROLE piqc_push LOGIN;"
    role.grant(grant_units(statements))
    push(role.url)
    assert arrived(owner) == expected()
    push(role.url)  # the same summary again (a replayed outbox): replaced, not doubled
    assert arrived(owner) == expected()
    push(role.url, variants(tmp_path)[1])  # a changed copy: the row is updated, its GPU rows replaced
    assert arrived(owner) == {**expected(), "watch_actions": 1}
    push(role.url, variants(tmp_path)[1])  # again: its watch action replaced, not doubled
    assert arrived(owner) == {**expected(), "watch_actions": 1}
    assert plain(owner, "SELECT partial, partial_reason FROM node_summaries") == [(True, "flush timeout")]
    for ddl in ("CREATE TABLE piqc_push_probe (x int)", "ALTER TABLE jobs ADD COLUMN probe int",
                "CREATE INDEX probe_ix ON jobs (name)", "DROP TABLE timeline",
                "UPDATE alembic_version SET version_num = 'x'"):
        with pytest.raises(SQLAlchemyError, match="permission denied|must be owner"):
            plain(role.url, ddl)
    # a push that migrated would need exactly these rights: a writer's open as the push role fails
    from alembic import command

    engine = create_engine(owner, poolclass=NullPool)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    engine.dispose()
    behind = plain(owner, "SELECT version_num FROM alembic_version")[0][0]
    with pytest.raises(StoreError, match="permission denied|must be owner"):
        open_engine(role.url, mode="write")
    assert plain(owner, "SELECT version_num FROM alembic_version")[0][0] == behind


def test_each_of_the_guides_grants_is_needed(store, tmp_path):
    owner, role = store
    units = grant_units(guide_block())
    assert len(units) == len(set(units)) >= 10
    later, changed = variants(tmp_path)
    role.grant(units)
    for summary in (SUMMARY, later, changed):
        push(role.url, summary)  # all of them: the three pushes succeed
    needless = []
    for unit in units:
        plain(owner, "DELETE FROM node_summaries; DELETE FROM node_gpus; UPDATE jobs SET restarts = NULL")
        role.grant([u for u in units if u != unit])
        try:
            for summary in (SUMMARY, later, changed, changed):  # new, a later job, a replacement, again
                push(role.url, summary)
        except StoreError:
            continue
        needless.append(unit)
    assert not needless, f"grants a push does without: {needless}"


def test_a_store_behind_head_is_refused_to_the_push_role_and_left_as_it_was(store):
    from alembic import command

    owner, role = store
    role.grant(grant_units(guide_block()))
    engine = create_engine(owner, poolclass=NullPool)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    engine.dispose()
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    previous = script.get_revision(head).down_revision
    with pytest.raises(StoreError) as e:
        push(role.url)
    assert str(e.value).endswith(f"schema is at {previous}, this piqc-slurm needs {head}: run `piqc-slurm db upgrade`")
    assert plain(owner, "SELECT version_num FROM alembic_version")[0][0] == previous
    assert plain(owner, "SELECT count(*) FROM node_summaries")[0][0] == 0


def test_with_row_level_security_the_push_role_needs_bypassrls(store):
    owner, role = store
    role.grant(grant_units(guide_block()))
    from pg import psql

    psql(owner, file=SQL / "views.postgresql.sql")
    superuser_psql((SQL / "postgres-rls.sql").read_text(), role.db)
    with pytest.raises(StoreError, match="row-level security"):
        push(role.url)
    assert plain(owner, "SELECT count(*) FROM node_summaries")[0][0] == 0
    superuser_psql(f"ALTER ROLE {role.name} BYPASSRLS")
    push(role.url)
    assert arrived(owner) == expected()
