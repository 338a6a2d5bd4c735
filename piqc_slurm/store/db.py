"""Engines and migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from piqc_slurm.errors import StoreError, first_line, redact_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def open_engine(url: str, connect_timeout: float | None = None, migrate_schema: bool = True) -> Engine:
    """An engine for `url`, its schema migrated to head. StoreError if unreachable."""
    if not url:
        raise StoreError("no store configured (set db in the config, $PIQC_DB or --db)")
    connect_args: dict = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store's directory {Path(path).parent}: {exc.strerror}") from None
        connect_args["timeout"] = connect_timeout or 30
    elif url.startswith("postgresql") and connect_timeout:
        connect_args["connect_timeout"] = max(int(connect_timeout), 1)
    try:
        engine = create_engine(url, connect_args=connect_args, future=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"bad store URL {redact_url(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers don't block the nightly ingest
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    if migrate_schema:
        try:
            migrate(engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"store {redact_url(url)} unreachable: {first_line(exc)}") from None
    return engine


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
