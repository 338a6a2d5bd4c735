"""Read-only access to the store for the query command, cheaply.

The query path must start fast (<= 0.5 s for a day of one user's jobs in a
million-job store, interpreter start included), and importing SQLAlchemy
alone costs ~0.15 s here. So a plain `sqlite:///PATH` URL is read through
the standard library's sqlite3; every other URL (PostgreSQL, SQLite with
query options) goes through SQLAlchemy. The SQL is the same text for both:
named `:parameters`, which sqlite3 and SQLAlchemy's text() both bind, and
quoted identifiers ("user", "end" are reserved on PostgreSQL).

This path never migrates the schema (a read-only user could not, and the
query must not write) and never creates a store: a missing store is a
StoreError telling to run `piqc-slurm db init`, one without the tables or
older than the columns asked for one telling to run `piqc-slurm db upgrade`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from piqc_slurm.errors import StoreError
from piqc_slurm.errors import first_line as _first_line
from piqc_slurm.errors import redact_url as _redact

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_SCHEMA_HINT = ("run `piqc-slurm db upgrade` on the head node, or check --db / $PIQC_DB")


def _schema_error(url: str, exc: BaseException) -> StoreError:
    return StoreError(f"store {_redact(url)} lacks the piqc schema asked for ({_first_line(exc)}): {_SCHEMA_HINT}")


class Reader:
    """A connection that runs text SQL and yields row tuples in batches."""

    def __init__(self, url: str):
        self.url = url
        self._sqlite = None
        self._conn = None
        self._engine = None
        self._path = ""
        self._flag: str | None = None
        self._readonly = False
        self._pg = None
        self._cursors = 0
        if url.startswith("sqlite:///") and "?" not in url and url != "sqlite:///:memory:":
            self._open_sqlite(url[len("sqlite:///"):])
        elif url.startswith(("postgresql+psycopg://", "postgresql://")) and "?" not in url:
            self._open_psycopg(url)
        else:
            self._open_sqlalchemy(url)

    # --- opening -------------------------------------------------------------------
    def _open_sqlite(self, path: str) -> None:
        """Plain when we may write there; else read-only (URI mode=ro), which needs the WAL index
        files a running writer keeps: without them (no writer), immutable=1 reads the file as is."""
        import sqlite3

        if not path:
            raise StoreError(f"bad store URL {self.url!r}: no file")
        if not os.path.exists(path):
            raise StoreError(f"no store at {path} (create it with `piqc-slurm db init`, or check --db / $PIQC_DB)")
        self._sqlite = sqlite3
        self._path = path
        parent = os.path.dirname(os.path.abspath(path))
        self._readonly = not (os.access(path, os.W_OK) and os.access(parent, os.W_OK))
        self._connect_sqlite("mode=ro" if self._readonly else None)

    def _connect_sqlite(self, flag: str | None) -> None:
        from urllib.parse import quote

        sqlite3 = self._sqlite
        try:
            if flag is None:
                conn = sqlite3.connect(self._path, timeout=30, check_same_thread=False)
            else:
                conn = sqlite3.connect(f"file:{quote(os.path.abspath(self._path))}?{flag}", uri=True, timeout=30,
                                       check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self._path}: {_first_line(exc)}") from None
        if self._conn is not None:
            self._conn.close()
        self._conn = conn
        self._flag = flag

    def _open_psycopg(self, url: str) -> None:
        """psycopg directly: SQLAlchemy's import would cost the query ~0.14 s more."""
        from urllib.parse import unquote, urlsplit

        import psycopg

        u = urlsplit(url)
        try:
            self._conn = psycopg.connect(host=u.hostname or None, port=u.port or None,
                                         user=unquote(u.username) if u.username else None,
                                         password=unquote(u.password) if u.password else None,
                                         dbname=unquote(u.path.lstrip("/")) or None, connect_timeout=10)
            self._conn.read_only = True
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(f"store {_redact(url)} unreachable: {_first_line(exc)}") from None
        self._pg = psycopg

    def _open_sqlalchemy(self, url: str) -> None:
        from piqc_slurm.store.db import open_engine

        self._engine = open_engine(url, connect_timeout=10, mode="read", check_schema=False)
        try:
            self._conn = self._engine.connect()
        except Exception as exc:  # noqa: BLE001 - DBAPI errors differ by driver
            raise StoreError(f"store {_redact(url)} unreachable: {_first_line(exc)}") from None

    @property
    def dialect(self) -> str:
        if self._pg is not None:
            return "postgresql"
        return "sqlite" if self._sqlite is not None else self._engine.dialect.name  # type: ignore[union-attr]

    # --- running -------------------------------------------------------------------
    def batches(self, sql: str, params: Mapping[str, Any], size: int = 1000) -> Iterator[list[tuple]]:
        """Run sql; yield its rows in lists of at most `size` (streamed, not all in memory)."""
        if self._sqlite is not None:
            try:
                try:
                    cur = self._conn.execute(sql, dict(params))  # type: ignore[union-attr]
                except self._sqlite.OperationalError:
                    # read-only and no writer about (no -wal file): the WAL index cannot be made; read as is
                    if self._flag != "mode=ro" or os.path.exists(self._path + "-wal"):
                        raise
                    self._connect_sqlite("immutable=1")
                    cur = self._conn.execute(sql, dict(params))  # type: ignore[union-attr]
            except self._sqlite.OperationalError as exc:
                msg = str(exc)
                if "no such table" in msg or "no such column" in msg:
                    raise _schema_error(self.url, exc) from None
                raise StoreError(f"query failed on {self.url}: {msg}") from None
            except self._sqlite.Error as exc:
                raise StoreError(f"query failed on {self.url}: {_first_line(exc)}") from None
            return self._drain(cur, size)
        if self._pg is not None:
            return self._pg_batches(sql, params, size)
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

        try:
            result = self._conn.execution_options(stream_results=True).execute(  # type: ignore[union-attr]
                text(sql), dict(params))
        except ProgrammingError as exc:
            raise _schema_error(self.url, exc) from None
        except SQLAlchemyError as exc:
            raise StoreError(f"query failed on {_redact(self.url)}: {_first_line(exc)}") from None
        return (list(map(tuple, part)) for part in result.partitions(size))

    def copy_csv(self, sql: str, params: Mapping[str, Any]) -> bytes | None:
        """PostgreSQL through psycopg: the rows of `sql` as CSV (NULL as \\N, no header) through
        `COPY (sql) TO STDOUT`: the server's fastest way out, and pandas parses it in C without a
        Python object per number. None on any other store."""
        if self._pg is None:
            return None
        pg = self._pg
        q = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
        out = bytearray()
        try:
            with self._conn.cursor() as cur, cur.copy(  # type: ignore[union-attr]
                    f"COPY ({q}) TO STDOUT WITH (FORMAT csv, NULL '\\N')", dict(params)) as copy:
                for block in copy:
                    out += block
        except pg.Error as exc:  # type: ignore[union-attr]
            raise self._pg_error(exc) from None
        return bytes(out)

    def _pg_error(self, exc: Exception) -> Exception:
        """What a psycopg error during a query becomes: a missing table or column says the store's
        schema is older than this piqc-slurm; anything else is a one-line StoreError."""
        if isinstance(exc, (self._pg.errors.UndefinedTable, self._pg.errors.UndefinedColumn)):  # type: ignore[union-attr]
            return _schema_error(self.url, exc)
        return StoreError(f"query failed on {_redact(self.url)}: {_first_line(exc)}")

    def _pg_batches(self, sql: str, params: Mapping[str, Any], size: int) -> Iterator[list[tuple]]:
        """The same text SQL through psycopg: `:name` becomes `%(name)s` (a `::` cast is left alone)."""
        pg = self._pg
        sql = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
        try:
            self._cursors += 1
            cur = self._conn.cursor(name=f"piqc_query_{self._cursors}")  # server-side: rows stream
            cur.execute(sql, dict(params))
        except pg.Error as exc:  # type: ignore[union-attr]
            raise self._pg_error(exc) from None

        def rows() -> Iterator[list[tuple]]:
            try:
                while True:
                    part = cur.fetchmany(size)
                    if not part:
                        return
                    yield part
            except pg.Error as exc:  # type: ignore[union-attr]
                raise StoreError(f"query failed on {_redact(self.url)}: {_first_line(exc)}") from None
            finally:
                cur.close()

        return rows()

    def _drain(self, cur, size: int) -> Iterator[list[tuple]]:
        while True:
            try:
                rows = cur.fetchmany(size)
            except self._sqlite.Error as exc:  # type: ignore[union-attr]
                raise StoreError(f"query failed on {self.url}: {_first_line(exc)}") from None
            if not rows:
                return
            yield rows

    def all(self, sql: str, params: Mapping[str, Any]) -> list[tuple]:
        out: list[tuple] = []
        for batch in self.batches(sql, params):
            out.extend(batch)
        return out

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        finally:
            if self._engine is not None:
                self._engine.dispose()
