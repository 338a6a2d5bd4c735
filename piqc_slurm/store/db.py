"""Engines and migrations: how each kind of caller opens the store.

open_engine's `mode` says what the caller may do to the store:

  read    `seff`, `doctor`, notify-users' dry run, the query paths: the store must
          exist; SQLite is opened read-only (URI mode=ro, so an ordinary user who
          may read the file can; `immutable` where no writer's -wal file is about
          and the WAL index cannot be made) with query_only on; PostgreSQL sessions
          are read-only. Never migrates, never imports Alembic.
  push    the Epilog's push from a GPU node: the store must exist; never migrates,
          never imports Alembic (one SELECT of alembic_version), so the node's role
          needs no DDL rights and a wave of Epilogs runs no DDL.
  write   the head node's writers (ingest, analyze, gaps, notify-users --send): the
          store must exist; a schema behind this piqc-slurm's head is migrated to it
          (Alembic is imported only then).
  create  `db init`, `ingest --create-store`, `simulate`: as write, and a missing
          SQLite file is created, mode 0640 (its new directories 0750), group
          `store_group` where one is given (SQLite gives the -wal and -shm files
          the database file's mode and owner).

In read and push mode a schema behind head is a StoreError that names
`piqc-slurm db upgrade`; a schema newer than this piqc-slurm knows (the head
node upgraded first) is read and pushed to as it is: a push that no longer fits
fails, and the Epilog keeps the summary spooled. Writers refuse a newer schema.

The revision ids come from the migration files' `revision =` lines (read as
text, not imported), so checking a store's version costs no Alembic import.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from piqc_slurm.errors import ConfigError, StoreError, first_line, redact_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MODES = ("read", "push", "write", "create")
FILE_MODE, DIR_MODE = 0o640, 0o750
INIT_HINT = "create it with `piqc-slurm db init`"
UPGRADE_HINT = "run `piqc-slurm db upgrade`"
_REVISION = re.compile(r"^revision\s*(?::\s*\w+\s*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.M)


@functools.cache
def revisions() -> tuple[str, ...]:
    """This piqc-slurm's migration revisions, base first, head last (from the files' text)."""
    parent: dict[str, str | None] = {}
    for f in sorted((MIGRATIONS / "versions").glob("*.py")):
        text = f.read_text(encoding="utf-8")
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if rev is None or down is None:
            raise StoreError(f"piqc-slurm's migration {f.name} has no revision line: reinstall piqc-slurm")
        parent[rev.group(1)] = down.group(1)
    child = {p: r for r, p in parent.items()}
    chain: list[str] = []
    cur: str | None = None
    while cur in child:
        cur = child[cur]
        chain.append(cur)
    if len(chain) != len(parent):
        raise StoreError("piqc-slurm's migrations do not form one line of revisions: reinstall piqc-slurm")
    return tuple(chain)


def head_revision() -> str:
    return revisions()[-1]


def schema_revision(conn: Connection) -> str | None:
    """The store's revision (alembic_version), None where it has no piqc schema."""
    name = conn.dialect.name
    if name == "sqlite":
        found = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").first()
    elif name == "postgresql":
        found = conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
    else:
        found = True
    if not found:
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() or None


def schema_state(revision: str | None) -> str:
    """missing (no piqc schema), behind, head, or newer (a revision this piqc-slurm does not know)."""
    if revision is None:
        return "missing"
    known = revisions()
    if revision not in known:
        return "newer"
    return "head" if revision == known[-1] else "behind"


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (`sqlite:///PATH`, or a `file:` URI with uri=true); None for
    another backend or an in-memory database."""
    u = _parse(url)
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database or ""
    if str(u.query.get("uri", "")).lower() in ("true", "1") and db.startswith("file:"):
        from urllib.parse import unquote

        db = unquote(db[len("file:"):].split("?", 1)[0])
        if db.startswith("//"):  # file://localhost/PATH or file:///PATH
            db = "/" + db[2:].split("/", 1)[-1]
    if not db or db == ":memory:":
        return None
    return db


def _parse(url: str):
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"bad store URL {redact_url(url)}: {exc}") from None


def open_engine(url: str, connect_timeout: float | None = None, mode: str = "create",
                group: str = "", check_schema: bool = True) -> Engine:
    """An engine for `url` opened for `mode` (see the module's doc). StoreError if the store is
    unreachable, missing (except in create mode), or at a schema revision the mode cannot use.
    `group`: store_group, for a SQLite file create mode makes. check_schema=False (read mode
    only): the caller reads the revision itself (`db status`, doctor).

    The default mode, create, is for tests and scripts; every caller in piqc_slurm names its
    mode (a unit test checks)."""
    if mode not in MODES:
        raise ValueError(f"open_engine: mode {mode!r} is not one of {', '.join(MODES)}")
    if not url:
        raise StoreError("no store configured (set db in the config, $PIQC_DB or --db)")
    u = _parse(url)
    where = redact_url(url)
    connect_args: dict = {}
    kwargs: dict = {}
    path = sqlite_path(url)
    if u.get_backend_name() == "sqlite":
        timeout = float(u.query.get("timeout") or connect_timeout or 30)
        if path is not None:
            if mode == "create":
                _create_sqlite_file(path, group)
            elif not os.path.exists(path):
                raise StoreError(f"no store at {path} ({INIT_HINT})")
            elif not os.access(path, os.R_OK):
                raise StoreError(f"cannot read the store {path}: permission denied (its group, "
                                 "store_group in the config, may read it)")
            kwargs["creator"] = _sqlite_creator(path, mode, timeout, u.query)
            u = u.set(database=path, query={})  # the creator connects; SQLAlchemy picks the file pool
            where = path
        else:
            connect_args["timeout"] = timeout
    elif u.get_backend_name() == "postgresql":
        if connect_timeout:
            connect_args["connect_timeout"] = max(int(connect_timeout), 1)
        if mode == "read":  # BEGIN READ ONLY (not a startup option: a pooler may refuse those)
            kwargs["execution_options"] = {"postgresql_readonly": True}
    try:
        engine = create_engine(u, connect_args=connect_args, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"bad store URL {redact_url(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine, read=mode == "read")
    if not check_schema and mode == "read":
        return engine
    try:
        _check_schema(engine, where, mode)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _check_schema(engine: Engine, where: str, mode: str) -> None:
    try:
        with engine.connect() as conn:
            rev = schema_revision(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"store {where} unreachable: {first_line(exc)}") from None
    state, head = schema_state(rev), head_revision()
    if state == "head":
        return
    if state == "missing" and mode != "create":
        raise StoreError(f"the store {where} has no piqc schema ({INIT_HINT})")
    if state == "newer":
        if mode in ("read", "push"):
            return
        raise StoreError(f"store {where}: schema is at {rev}, newer than this piqc-slurm knows (its head is "
                         f"{head}): upgrade piqc-slurm here")
    if mode in ("read", "push"):
        raise StoreError(f"store {where}: schema is at {rev}, this piqc-slurm needs {head}: {UPGRADE_HINT}")
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"store {where}: migrating the schema from {rev or 'nothing'} to {head} failed: "
                         f"{first_line(exc)}") from None


def _sqlite_creator(path: str, mode: str, timeout: float, query):
    """sqlite3 connections by URI: mode=ro (read), rw (the file must exist), rwc (create)."""
    import sqlite3
    from urllib.parse import quote

    flag = {"read": "ro", "create": "rwc"}.get(mode, "rw")
    uri = f"file:{quote(os.path.abspath(path))}"
    keep = "&".join(f"{k}={quote(str(v))}" for k, v in query.items()
                    if k not in ("uri", "mode", "immutable", "timeout") and not isinstance(v, tuple))
    base = f"{uri}?{keep + '&' if keep else ''}mode={flag}"

    def connect():
        conn = sqlite3.connect(base, uri=True, timeout=timeout, check_same_thread=False)
        if mode != "read":
            return conn
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # a WAL database, read-only, nobody writing (no -wal file): its WAL index cannot
            # be made (no write access to the directory); read the file as it is
            conn.close()
            if os.path.exists(path + "-wal"):
                raise
            conn = sqlite3.connect(f"{base}&immutable=1", uri=True, timeout=timeout, check_same_thread=False)
        return conn

    return connect


def _sqlite_pragmas(engine: Engine, read: bool) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        if read:  # a read-only connection cannot set journal_mode; nor does it need to
            cur.execute("PRAGMA query_only = 1")
        else:  # WAL: readers don't block the nightly ingest
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def group_id(group: str) -> int | None:
    """The gid of store_group; None for "" (the creator's own group)."""
    if not group:
        return None
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ConfigError(f"store_group: no group {group!r} on this host") from None


def _create_sqlite_file(path: str, group: str) -> None:
    """The store's file (0640) and any missing directories above it (0750), with the group."""
    gid = group_id(group)
    target = Path(os.path.abspath(path))
    missing = []
    d = target.parent
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    try:
        for d in reversed(missing):
            try:
                d.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(d, DIR_MODE)  # mkdir's mode is cut by the umask
            if gid is not None:
                os.chown(d, -1, gid)
    except OSError as exc:
        raise StoreError(f"cannot create the store's directory {d}: {exc.strerror}") from None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return  # there already: its mode and group are the admin's
    except OSError as exc:
        raise StoreError(f"cannot create the store {target}: {exc.strerror}") from None
    try:
        os.fchmod(fd, FILE_MODE)
        if gid is not None:
            os.fchown(fd, -1, gid)
    except OSError as exc:
        raise StoreError(f"cannot give the store {target} group {group}: {exc.strerror}") from None
    finally:
        os.close(fd)


def alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def store_status(url: str, connect_timeout: float | None = None) -> tuple[str | None, str]:
    """(the store's revision or None, this piqc-slurm's head), read-only; StoreError as open_engine's
    read mode for an unreachable or missing store, but not for one behind head."""
    engine = open_engine(url, connect_timeout, mode="read", check_schema=False)
    try:
        with engine.connect() as conn:
            return schema_revision(conn), head_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"store {redact_url(url)} unreachable: {first_line(exc)}") from None
    finally:
        engine.dispose()
