"""How the store is opened (piqc_slurm/store/db.py's modes) and who may read it.

- only `db init`, `ingest --create-store` and `simulate` create a store: a mistyped --db is
  "no store at PATH" (exit 3) everywhere else, and nothing is created;
- a store piqc-slurm creates is 0640 (new directories 0750), group store_group, and SQLite
  gives its -wal/-shm files the same;
- readers and the Epilog's push never migrate (and the push never imports Alembic): a store
  behind head is a StoreError naming `piqc-slurm db upgrade`, left as it was; writers migrate;
- an ordinary user who may read a root-made WAL store runs `seff` and `sacct` on it;
- doctor reads the store's revision without migrating, and warns of a world-readable store;
- who sees whose jobs follows slurm.conf's PrivateData.

Expected revisions come from Alembic's own ScriptDirectory; file modes from os.stat; rows are
read back with sqlite3 or plain SQLAlchemy, never through the code under test."""

from __future__ import annotations

import ast
import grp
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pg import plain
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from piqc_slurm.errors import StoreError
from piqc_slurm.store.db import alembic_config, open_engine

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
SUMMARY = FIX / "summaries" / "4gpu-2idle.summary.json"
TIMELINE = FIX / "summaries" / "4gpu-2idle.timeline.jsonl"
SLURM_CONF = FIX / "slurmconf" / "piqc-cluster.slurm.conf"  # the test cluster's, as cluster.sh wrote it
SACCT_FILE = FIX / "sacct" / "22.05.8" / "completed.ingest.txt"


def alembic_head_and_previous() -> tuple[str, str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_revision(script.get_current_head())
    return head.revision, head.down_revision


HEAD, PREVIOUS = alembic_head_and_previous()


def at_revision(url: str, revision: str) -> None:
    """A store migrated by Alembic itself to `revision` only."""
    from alembic import command

    engine = create_engine(url, poolclass=NullPool)
    cfg = alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()




def revision_of(url: str) -> str:
    return plain(url, "SELECT version_num FROM alembic_version")[0][0]


def env_without_piqc(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    env.update(TZ="UTC", **extra)
    return env


def cli(config: Path, url: str, *args: str, env: dict | None = None, user: str | None = None,
        umask: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "piqc_slurm", "--config", str(config), "--db", url, *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env or env_without_piqc(), cwd=config.parent,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None, timeout=120)


@pytest.fixture
def config(tmp_path) -> Path:
    p = tmp_path / "piqc.toml"
    p.write_text("[prices]\nh100 = 4.0\n")
    return p


# --- the revisions and the callers ---------------------------------------------------------------

def test_revisions_read_from_the_files_are_alembics_own():
    from alembic.script import ScriptDirectory

    from piqc_slurm.store.db import head_revision, revisions

    script = ScriptDirectory.from_config(alembic_config())
    assert list(revisions()) == [s.revision for s in reversed(list(script.walk_revisions()))]
    assert head_revision() == HEAD


def test_every_caller_in_the_package_names_how_it_opens_the_store():
    unnamed = []
    for path in sorted((REPO / "piqc_slurm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "open_engine" and not any(k.arg == "mode" for k in node.keywords):
                unnamed.append(f"{path.relative_to(REPO)}:{node.lineno}: open_engine without mode=")
            if name == "open_store" and len(node.args) + len(node.keywords) < 3:
                unnamed.append(f"{path.relative_to(REPO)}:{node.lineno}: open_store without its mode")
    assert not unnamed, "\n".join(unnamed)


# --- a mistyped --db creates nothing ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["read", "push", "write"])
def test_a_missing_sqlite_store_is_refused_and_nothing_is_made(tmp_path, mode):
    path = tmp_path / "nonexistent" / "x.db"
    with pytest.raises(StoreError) as e:
        open_engine(f"sqlite:///{path}", mode=mode)
    assert str(e.value) == f"no store at {path} (create it with `piqc-slurm db init`)"
    assert not path.parent.exists()


@pytest.mark.parametrize("argv", [
    ["seff", "1"],
    ["ingest", "--sacct-file", str(SACCT_FILE), "--tz", "UTC"],
    ["analyze", "-q", "-S", "2026-11-01", "-E", "2026-11-02"],
    ["notify-users", "-S", "2026-11-01", "-E", "2026-11-02"],
    ["sacct", "-j", "1"],
    ["costs", "-S", "2026-11-01", "-E", "2026-11-02"],
    ["db", "upgrade"],
    ["db", "status"],
], ids=lambda a: a[0] + ("-" + a[1] if a[0] == "db" else ""))
def test_commands_refuse_a_mistyped_db_in_one_line_exit_3(tmp_path, config, argv):
    path = tmp_path / "nonexistent" / "x.db"
    r = cli(config, f"sqlite:///{path}", *argv)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith(f"piqc-slurm: no store at {path} (create it with `piqc-slurm db init`")
    assert r.stderr.count("\n") == 1, r.stderr
    assert not path.parent.exists()
    assert not (tmp_path / "piqc-notes").exists()


def test_doctor_reports_a_missing_store_and_creates_nothing(tmp_path, config):
    path = tmp_path / "nonexistent" / "x.db"
    r = cli(config, f"sqlite:///{path}", "doctor", env=env_without_piqc(SLURM_CONF=str(tmp_path / "none")))
    line = next(ln for ln in r.stdout.splitlines() if " store " in ln)
    assert line.startswith("FAIL") and f"no store at {path}" in line, r.stdout
    assert "fix: create it with `piqc-slurm db init`" in r.stdout
    assert not path.parent.exists()


# --- creating: db init, ingest --create-store, simulate ---------------------------------------------

def other_group() -> grp.struct_group | None:
    """A group this process may give a file that is not its own primary group."""
    mine = os.getegid()
    for g in grp.getgrall():
        if g.gr_gid != mine and (os.geteuid() == 0 or g.gr_gid in os.getgroups()):
            return g
    return None


def test_db_init_makes_the_file_0640_and_its_new_directories_0750_with_store_group(tmp_path):
    g = other_group()
    if g is None:
        pytest.skip("no second group to give the store")
    config = tmp_path / "piqc.toml"
    config.write_text(f'store_group = "{g.gr_name}"\n')
    path = tmp_path / "a" / "b" / "piqc.db"
    r = cli(config, f"sqlite:///{path}", "db", "init", umask=0o077)  # a tight umask must not narrow the modes
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"piqc-slurm db: created the store {path} at revision {HEAD}\n"
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        st = os.stat(d)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o750, g.gr_gid), d
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, g.gr_gid)
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700  # an existing directory is left alone
    assert revision_of(f"sqlite:///{path}") == HEAD
    # SQLite gives the WAL files the database file's mode and group (seen while a writer holds them)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE scratch (x)")
        conn.commit()
        for suffix in ("-wal", "-shm"):
            st = os.stat(f"{path}{suffix}")
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, g.gr_gid), suffix
    finally:
        conn.close()
    again = cli(config, f"sqlite:///{path}", "db", "init")
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"piqc-slurm db: the store {path} exists, at revision {HEAD} (head): nothing to do\n"


def test_an_unknown_store_group_is_a_config_error_and_nothing_is_made(tmp_path):
    config = tmp_path / "piqc.toml"
    config.write_text('store_group = "no-such-group-piqc"\n')
    path = tmp_path / "new" / "piqc.db"
    r = cli(config, f"sqlite:///{path}", "db", "init")
    assert (r.returncode, r.stderr) == (2, "piqc-slurm: store_group: no group 'no-such-group-piqc' on this host\n")
    assert not path.parent.exists()


def test_ingest_creates_a_store_only_when_told(tmp_path, config):
    path = tmp_path / "new" / "piqc.db"
    r = cli(config, f"sqlite:///{path}", "ingest", "--sacct-file", str(SACCT_FILE), "--tz", "UTC", "-q")
    assert r.returncode == 3 and not path.parent.exists()
    r = cli(config, f"sqlite:///{path}", "ingest", "--create-store", "--sacct-file", str(SACCT_FILE), "--tz", "UTC",
            "-q")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert plain(f"sqlite:///{path}", "SELECT count(*) FROM jobs")[0][0] == 1  # the one job of the recorded line
    assert revision_of(f"sqlite:///{path}") == HEAD


def test_simulate_makes_a_new_demo_store(tmp_path, config):
    path = tmp_path / "demo" / "piqc.db"
    r = cli(config, f"sqlite:///{path}", "simulate", "-q", "--scenario",
            str(REPO / "examples" / "eight-asked-three-used" / "scenario.json"))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750


# --- migrating: writers do, readers and the push never -----------------------------------------------

def test_read_mode_refuses_a_store_behind_head_and_leaves_it(store_url):
    at_revision(store_url, PREVIOUS)
    with pytest.raises(StoreError) as e:
        open_engine(store_url, mode="read")
    assert str(e.value).endswith(f"schema is at {PREVIOUS}, this piqc-slurm needs {HEAD}: "
                                 "run `piqc-slurm db upgrade`")
    assert revision_of(store_url) == PREVIOUS


def test_read_mode_never_writes(store_url):
    open_engine(store_url, mode="create").dispose()
    engine = open_engine(store_url, mode="read")
    try:
        with pytest.raises(Exception) as e, engine.begin() as conn:
            conn.execute(text("INSERT INTO watermarks (cluster, source, until) VALUES ('c', 'w', 1)"))
        assert "read" in str(e.value).lower()  # sqlite: readonly database / query_only; PG: read-only transaction
    finally:
        engine.dispose()
    assert plain(store_url, "SELECT count(*) FROM watermarks")[0][0] == 0


def test_write_mode_migrates_an_existing_store_to_head(store_url):
    at_revision(store_url, PREVIOUS)
    open_engine(store_url, mode="write").dispose()
    assert revision_of(store_url) == HEAD


def test_write_mode_refuses_a_database_without_the_schema(store_url):
    if store_url.startswith("sqlite"):
        Path(store_url.split(":///", 1)[1]).touch()  # an empty file: no store
    with pytest.raises(StoreError) as e:
        open_engine(store_url, mode="write")
    assert "has no piqc schema (create it with `piqc-slurm db init`)" in str(e.value)
    assert not plain(store_url, "SELECT 1 FROM information_schema.tables WHERE table_name = 'jobs'"
                     if not store_url.startswith("sqlite") else "SELECT 1 FROM sqlite_master WHERE name = 'jobs'")


def push(url: str, tmp_path: Path) -> None:
    from piqc_slurm.store import push_summary

    push_summary(url, SUMMARY, TIMELINE, connect_timeout=5)


def test_push_refuses_a_store_behind_head_and_does_not_migrate_it(store_url, tmp_path):
    at_revision(store_url, PREVIOUS)
    with pytest.raises(StoreError) as e:
        push(store_url, tmp_path)
    assert str(e.value).endswith(f"schema is at {PREVIOUS}, this piqc-slurm needs {HEAD}: run `piqc-slurm db upgrade`")
    assert revision_of(store_url) == PREVIOUS
    assert plain(store_url, "SELECT count(*) FROM node_summaries")[0][0] == 0


def test_push_into_a_store_at_head_never_imports_alembic(tmp_path):
    url = f"sqlite:///{tmp_path}/piqc.db"
    open_engine(url, mode="create").dispose()
    code = ("import sys; from pathlib import Path; from piqc_slurm.store import push_summary; "
            f"push_summary({url!r}, Path({str(SUMMARY)!r}), Path({str(TIMELINE)!r})); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout == "[]\n"
    doc = json.loads(SUMMARY.read_text())
    assert plain(url, "SELECT job_id_raw, node, gpu_count FROM node_summaries") == [(doc["job_id"], doc["node"],
                                                                                    len(doc["gpus"]))]
    assert plain(url, "SELECT count(*) FROM gpu_usage")[0][0] == len(doc["devices"])
    gpus = {json.loads(line)["gpu"] for line in TIMELINE.read_text().splitlines()}
    assert plain(url, "SELECT count(*) FROM timeline")[0][0] == len(gpus) == 4  # packed: one row per GPU


def test_a_store_newer_than_this_piqc_slurm_takes_pushes_and_refuses_writers(tmp_path):
    url = f"sqlite:///{tmp_path}/piqc.db"
    open_engine(url, mode="create").dispose()
    plain(url, "UPDATE alembic_version SET version_num = 'ffff'")  # a later piqc-slurm's head
    push(url, tmp_path)
    assert plain(url, "SELECT count(*) FROM node_summaries")[0][0] == 1
    with pytest.raises(StoreError) as e:
        open_engine(url, mode="write")
    assert "schema is at ffff, newer than this piqc-slurm knows" in str(e.value)
    assert revision_of(url) == "ffff"


def test_push_to_a_missing_sqlite_store_creates_nothing(tmp_path):
    path = tmp_path / "nonexistent" / "x.db"
    with pytest.raises(StoreError):
        push(f"sqlite:///{path}", tmp_path)
    assert not path.parent.exists()


# --- db upgrade / status -------------------------------------------------------------------------

def test_db_status_and_upgrade_say_from_and_to(store_url, config):
    at_revision(store_url, PREVIOUS)
    r = cli(config, store_url, "db", "status")
    assert r.returncode == 1, r.stderr
    assert f"revision  {PREVIOUS}\nhead      {HEAD} (this piqc-slurm)\nstate     behind" in r.stdout
    r = cli(config, store_url, "db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("piqc-slurm db: upgraded the store ")
    assert r.stdout.endswith(f" from {PREVIOUS} to {HEAD}\n")
    assert revision_of(store_url) == HEAD
    r = cli(config, store_url, "db", "status")
    assert r.returncode == 0 and r.stdout.endswith("state     up to date\n"), r.stdout
    r = cli(config, store_url, "db", "upgrade")
    assert r.returncode == 0 and r.stdout.endswith(f"is at revision {HEAD}, the head: nothing to do\n")


def test_db_upgrade_refuses_a_database_without_a_store(store_url, config):
    if store_url.startswith("sqlite"):
        Path(store_url.split(":///", 1)[1]).touch()
    r = cli(config, store_url, "db", "upgrade")
    assert r.returncode == 3 and "has no piqc schema (create it with `piqc-slurm db init`)" in r.stderr
    r = cli(config, store_url, "db", "init")
    assert r.returncode == 0, r.stderr
    assert revision_of(store_url) == HEAD


# --- doctor ----------------------------------------------------------------------------------------

def test_doctor_store_check_reads_the_revision_and_never_migrates(tmp_path):
    from piqc_slurm.doctor import FAIL, OK, check_store

    url = f"sqlite:///{tmp_path}/piqc.db"
    at_revision(url, PREVIOUS)
    c = check_store(url)
    assert c.status == FAIL and f"schema at {PREVIOUS}, this piqc-slurm needs {HEAD}" in c.what
    assert c.fix.startswith("piqc-slurm db upgrade")
    assert revision_of(url) == PREVIOUS
    at_revision(url, "head")
    c = check_store(url)
    assert (c.status, c.what) == (OK, f"{url} reachable, schema up to date ({HEAD})")


def test_doctor_warns_of_a_store_every_user_may_read(tmp_path):
    from piqc_slurm.doctor import OK, WARN, check_store_access

    d = tmp_path / "store"
    d.mkdir()
    path = d / "piqc.db"
    url = f"sqlite:///{path}"
    open_engine(url, mode="create").dispose()
    os.chmod(d, 0o750)
    c = check_store_access(url)
    assert c.status == OK, c
    os.chmod(path, 0o644)
    c = check_store_access(url)
    assert c.status == WARN and c.fix == f"chmod 640 {path}", c
    os.chmod(path, 0o640)
    os.chmod(d, 0o755)
    c = check_store_access(url)
    assert c.status == WARN and c.fix == f"chmod 750 {d}", c
    assert check_store_access("postgresql+psycopg://u@h/db").what.startswith("skipped: not a SQLite store")


# --- an ordinary user reads a root-made store --------------------------------------------------------

def reader_account() -> tuple[str, str] | None:
    """(user, group) of an ordinary account runuser can become: piqcuser (the test user), else nobody."""
    for name in ("piqcuser", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, grp.getgrgid(pw.pw_gid).gr_name
    return None


@pytest.fixture
def shared_dir():
    """A directory other users may enter (pytest's tmp_path is 0700, root's)."""
    top = Path(tempfile.mkdtemp(prefix="piqc-ro-", dir="/tmp"))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def add_jobs(url: str, user: str) -> int:
    """The recorded 4-GPU summary as `user`'s job, and a job of alice's; returns the summary's job id."""
    from sqlalchemy.orm import Session

    from piqc_slurm.store.jobs import upsert_jobs
    from piqc_slurm.store.summaries import upsert_summary

    s = json.loads(SUMMARY.read_text())
    s["user"] = user
    start, end = int(s["started"]), int(s["ended"])
    engine = open_engine(url, mode="write")
    try:
        with engine.begin() as conn:
            upsert_jobs(conn, [dict(cluster="piqc", job_id_raw=jid, submit=start - 5, job_id=str(jid), name="t",
                                    user=who, account="research", partition="gpu", state="COMPLETED",
                                    exit_code="0:0", start=start, end=end, elapsed=end - start, alloc_gpus=4,
                                    gpu_type="h100")
                               for jid, who in ((s["job_id"], user), (s["job_id"] + 1, "alice"))])
        with Session(engine) as session, session.begin():
            upsert_summary(session, s, [])
    finally:
        engine.dispose()
    return s["job_id"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or reader_account() is None,
                    reason="needs root, runuser and an ordinary account (piqcuser or nobody)")
def test_an_ordinary_user_runs_seff_and_sacct_on_a_root_made_wal_store(shared_dir):
    user, group = reader_account()  # type: ignore[misc]
    config = shared_dir / "piqc.toml"
    config.write_text(f'store_group = "{group}"\n[prices]\nh100 = 4.0\n')
    open_conf = shared_dir / "open.slurm.conf"           # the test cluster's: no PrivateData
    shutil.copy(SLURM_CONF, open_conf)
    private_conf = shared_dir / "private.slurm.conf"     # the same with PrivateData=jobs, written as sites do
    private_conf.write_text(SLURM_CONF.read_text() + "privatedata = Jobs,usage  # users see their own\n")
    for p in (config, open_conf, private_conf):
        os.chmod(p, 0o644)
    path = shared_dir / "store" / "piqc.db"
    url = f"sqlite:///{path}"
    assert cli(config, url, "db", "init").returncode == 0
    mine = add_jobs(url, user)
    theirs = mine + 1
    assert not os.path.exists(f"{path}-wal")  # the writer closed: no WAL index for a reader to use
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640 and os.stat(path).st_uid == 0

    def as_user(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(config, url, *args, user=user, env=env_without_piqc(SLURM_CONF=str(conf), HOME=str(shared_dir)))

    query = ["sacct", "-a", "-j", f"{mine},{theirs}", "-P", "-n", "-o", "JobID,User,CostUSD"]
    r = as_user(open_conf, *query)
    assert (r.returncode, r.stdout) == (0, f"{mine}|{user}|0.18\n{theirs}|alice|0.18\n"), r.stderr
    r = as_user(open_conf, "seff", str(mine))
    assert r.returncode == 0, r.stderr
    assert "GPU cost: $0.18 " in r.stdout  # 4 GPUs x 40 s x $4/h (test_report_summary.py works it out)
    r = as_user(open_conf, "seff", str(theirs))
    assert r.returncode == 0, r.stderr  # no PrivateData: every job, as sacct shows them
    r = as_user(private_conf, *query)
    assert (r.returncode, r.stdout) == (0, f"{mine}|{user}|0.18\n"), r.stderr
    r = as_user(private_conf, "seff", str(theirs))
    assert r.returncode == 2 and "not found in the store" in r.stderr
    assert sorted(os.listdir(path.parent)) == ["piqc.db"]  # the reader made no file

    # a writer holding the WAL open, a committed row not yet checkpointed: the reader sees it
    writer = sqlite3.connect(path)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE jobs SET name = 'renamed' WHERE job_id_raw = ?", (mine,))
        writer.commit()
        assert os.path.getsize(f"{path}-wal") > 0
        r = as_user(open_conf, "sacct", "-j", str(mine), "-P", "-n", "-o", "JobName")
        assert (r.returncode, r.stdout) == (0, "renamed\n"), r.stderr
        r = as_user(open_conf, "seff", str(mine))
        assert r.returncode == 0, r.stderr
    finally:
        writer.close()


# --- PrivateData -----------------------------------------------------------------------------------

def test_slurm_conf_privacy_is_read_as_slurm_reads_it(tmp_path):
    from piqc_slurm.query.access import EVERYTHING, Caller, parse_slurm_conf, slurm_privacy

    recorded = parse_slurm_conf(SLURM_CONF.read_text())
    assert (recorded.private_data, recorded.slurm_user) == (frozenset(), "slurm")  # cluster.sh sets neither
    text_ = ("#PrivateData=nodes\nPrivateData=accounts\nSlurmUser = slurmadm\n"
             "PRIVATEDATA = Jobs,USAGE   # the last one wins\n")
    got = parse_slurm_conf(text_)
    assert (got.private_data, got.slurm_user) == (frozenset({"jobs", "usage"}), "slurmadm")
    conf = tmp_path / "slurm.conf"
    conf.write_text(text_)
    assert slurm_privacy({"SLURM_CONF": str(conf)}).private_data == {"jobs", "usage"}
    assert slurm_privacy({"SLURM_CONF": str(tmp_path / "missing")}).private_data == EVERYTHING
    assert Caller.current({"SLURM_CONF": str(conf)}).privacy.slurm_user == "slurmadm"


def test_who_sees_every_job_follows_private_data(tmp_path):
    from piqc_slurm.query.access import Caller, SlurmPrivacy, is_admin, parse_slurm_conf

    open_ = parse_slurm_conf(SLURM_CONF.read_text())
    jobs = parse_slurm_conf("PrivateData=jobs\nSlurmUser=slurm\n")
    usage = parse_slurm_conf("PrivateData=usage\n")
    bob = lambda p: Caller(1002, "bob", frozenset({"bob"}), p)  # noqa: E731
    assert is_admin(bob(open_), ["root"], [])
    assert not is_admin(bob(jobs), ["root"], [])
    assert is_admin(bob(jobs), ["bob"], [])                                            # [access] overrides
    assert is_admin(Caller(1002, "bob", frozenset({"hpc"}), jobs), ["root"], ["hpc"])
    assert is_admin(Caller(64030, "slurm", frozenset(), jobs), ["root"], [])            # SlurmUser sees all
    assert is_admin(bob(usage), ["root"], []) and not is_admin(bob(usage), ["root"], [], hidden_by=("jobs", "usage"))
    assert not is_admin(bob(SlurmPrivacy()), ["root"], [])                             # unreadable: hidden
    assert is_admin(Caller(0, "root", privacy=jobs), [], [])
