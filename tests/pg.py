"""PostgreSQL for the tests: the real local server of docker-slurm/postgres.sh.

Store tests run on SQLite and PostgreSQL alike. This module gives them a
PostgreSQL database of their own. Register its fixture once, in
tests/conftest.py: `pytest_plugins = ("pg",)` (or import `pg_database` into
a test module), then parametrize the store URL:

    @pytest.fixture(params=["sqlite", "postgresql"])
    def store_url(request, tmp_path):
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path}/piqc.db"
        return request.getfixturevalue("pg_database")   # skips where no PostgreSQL

The session database is shared by the tests of a session (migrate it once
with open_engine; make rows unique per test, or use fresh_database() where a
test needs an empty store).

Tests that use PostgreSQL need root (postgres.sh starts the server), like the
real-Slurm tests: mark them `pytest.mark.slurm`, so that CI with
PIQC_REQUIRE_SLURM=1 fails instead of skipping them.

API
- postgres_url() -> str: `postgres.sh up` (as root; once per process) and
  the URL of its database piqc_test (role piqc, which has CREATEDB).
  $PIQC_TEST_PG_URL overrides it (any server where that role has CREATEDB;
  then root is not needed, except for superuser_psql).
- fresh_database(prefix="piqc_test") -> context manager yielding the URL of a
  new, empty database `<prefix>_p<pid>_<random>`, owned by piqc, dropped on
  exit. On the local server, databases left by dead test processes are
  dropped when the next one is made.
- pg_database: session-scoped pytest fixture: fresh_database() for the whole
  session; skips (pytest.skip) where PostgreSQL cannot be had.
- create_database(prefix) -> URL and drop_database(url): the two halves.
- superuser_psql(sql, dbname="postgres") -> str: run SQL (psql syntax, from
  stdin, ON_ERROR_STOP) as the cluster's superuser, over the Unix socket with
  peer auth (root only): for what the piqc role may not do (CREATE ROLE...).
- psql(url, sql=None, file=None, variables=None) -> str: run SQL text or a
  file with psql as the role of `url` (password from the URL, over TCP),
  ON_ERROR_STOP, `-v name=value` for each variable: how a site loads sql/*.sql.
- PostgresUnavailable: raised by postgres_url() when there is no PostgreSQL.

URLs are SQLAlchemy's (postgresql+psycopg://...), for piqc_slurm.store.open_engine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
POSTGRES_SH = REPO / "docker-slurm" / "postgres.sh"
URL_ENV = "PIQC_TEST_PG_URL"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL for the tests here (not root, postgres.sh failed, ...)."""


@functools.cache
def postgres_url() -> str:
    """URL of the base database (piqc_test) of the local test PostgreSQL,
    brought up by postgres.sh if needed."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    if os.geteuid() != 0:
        raise PostgresUnavailable(f"postgres.sh needs root (or set ${URL_ENV})")
    up = subprocess.run([str(POSTGRES_SH), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        raise PostgresUnavailable(f"postgres.sh up failed: {up.stderr.strip() or up.stdout.strip()}")
    url = subprocess.run([str(POSTGRES_SH), "url"], capture_output=True, text=True, timeout=60)
    if url.returncode != 0:
        raise PostgresUnavailable(f"postgres.sh url failed: {url.stderr.strip()}")
    return url.stdout.strip()


def _admin_engine():
    """An autocommit engine on the base database, for CREATE/DROP DATABASE."""
    return create_engine(postgres_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)


def _with_database(url: str | URL, dbname: str) -> str:
    return make_url(url).set(database=dbname).render_as_string(hide_password=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def create_database(prefix: str = "piqc_test") -> str:
    """Create an empty database `<prefix>_p<pid>_<random>`; return its URL."""
    if not _NAME.match(prefix):
        raise ValueError(f"bad database prefix {prefix!r}")
    name = f"{prefix}_p{os.getpid()}_{secrets.token_hex(4)}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            if not os.environ.get(URL_ENV):  # pids are only meaningful on our own local server
                _drop_orphans(conn, prefix)
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return _with_database(postgres_url(), name)


def _drop_orphans(conn, prefix: str) -> None:
    """Drop databases of this prefix whose creating process is gone (a killed session)."""
    rows = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                        {"p": prefix.replace("_", r"\_") + r"\_p%"}).scalars()
    for name in rows:
        m = re.fullmatch(re.escape(prefix) + r"_p(\d+)_[0-9a-f]+", name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(Exception):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_database(url: str) -> None:
    """Drop the database of `url` (a create_database URL), closing its sessions."""
    name = make_url(url).database
    if not name or not _NAME.match(name) or name == make_url(postgres_url()).database:
        raise ValueError(f"refusing to drop database {name!r}")
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception:  # noqa: BLE001 - e.g. an autovacuum worker only a superuser may stop
        superuser_psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "postgres")
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_database(prefix: str = "piqc_test") -> Iterator[str]:
    """A new, empty database for the duration of the block; yields its URL."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of an empty PostgreSQL database for this test session (dropped at
    its end). Skips where there is no PostgreSQL (not root, no server)."""
    try:
        postgres_url()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    with fresh_database() as url:
        yield url


def superuser_psql(sql: str, dbname: str = "postgres") -> str:
    """Run `sql` with psql as the superuser `postgres` (peer auth on the Unix
    socket; root only) in `dbname`; return its output (unaligned, tuples only)."""
    if os.geteuid() != 0:
        raise PostgresUnavailable("superuser_psql needs root (runuser -u postgres)")
    port = str(make_url(postgres_url()).port or 5432)
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-p", port, "-d", dbname], input=sql, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"psql as postgres in {dbname} failed: {r.stderr.strip()}")
    return r.stdout


def psql(url: str, sql: str | None = None, file: str | Path | None = None,
         variables: dict[str, str] | None = None) -> str:
    """Run `sql` (or the file `file`) with psql as the role of `url`, over TCP
    with its password; return the output (unaligned, tuples only)."""
    u = make_url(url)
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", u.host or "127.0.0.1",
            "-p", str(u.port or 5432), "-U", u.username or "", "-d", u.database or ""]
    for name, value in (variables or {}).items():
        argv += ["-v", f"{name}={value}"]
    if file is not None:
        argv += ["-f", str(file)]
    env = dict(os.environ, PGPASSWORD=u.password or "", PGCONNECT_TIMEOUT="10")
    r = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"psql as {u.username} in {u.database} failed: {r.stderr.strip()}")
    return r.stdout


def plain(url: str, sql: str, params: dict | None = None) -> list[tuple]:
    """Run one SQL statement on `url` in its own transaction (no pool); its rows, if any."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params or {})
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()
