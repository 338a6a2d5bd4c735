"""`piqc-slurm db init|upgrade|status`: create the store, migrate it, say where it stands."""

from __future__ import annotations

import sys

import click

from piqc_slurm.commands import load_config, store_url


def _where(url: str) -> str:
    from piqc_slurm.errors import redact_url
    from piqc_slurm.store.db import sqlite_path

    return sqlite_path(url) or redact_url(url)


def _revision_before(url: str, allow_missing_file: bool) -> str | None:
    """The store's revision, read-only; None where it has no schema (or, with allow_missing_file,
    where its SQLite file does not exist yet)."""
    import os

    from piqc_slurm.store.db import sqlite_path, store_status

    path = sqlite_path(url)
    if allow_missing_file and path is not None and not os.path.exists(path):
        return None
    return store_status(url)[0]


def register(group: click.Group) -> None:
    @group.group("db")
    def db_group() -> None:
        """Create the store, migrate its schema, show its revision.

        \b
        Only `db init` (and `ingest --create-store`, and `simulate`) create a
        store: every other command refuses a store that does not exist, so a
        mistyped --db creates nothing. The head node's writers (ingest,
        analyze, gaps, notify-users --send) migrate an existing store to this
        piqc-slurm's schema; readers (sacct, seff, costs, digest, doctor) and
        the Epilog's push never do: against an older store they say to run
        `piqc-slurm db upgrade`.
        """

    @db_group.command("init", short_help="Create a store, its schema at head.")
    @click.pass_context
    def db_init(ctx: click.Context) -> None:
        """Create a new store and its schema (an existing one is migrated to head).

        \b
        SQLite: the file and any missing directories are made, the file mode
        0640, directories 0750, group `store_group` from the config (empty: the
        creator's primary group), so only its owner and that group read it;
        SQLite gives its -wal and -shm files the same mode and owner.
        PostgreSQL: the database must exist (createdb); init makes the tables
        as the role of the URL, which becomes their owner.

        \b
          piqc-slurm --db sqlite:////var/lib/piqc/piqc.db db init
          piqc-slurm --db postgresql+psycopg://piqc@dbhost/piqc db init
        """
        from piqc_slurm.store.db import open_engine, store_status

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        before = _revision_before(url, allow_missing_file=True)
        open_engine(url, mode="create", group=cfg["store_group"]).dispose()
        after, head = store_status(url)
        where = _where(url)
        if before is None:
            click.echo(f"piqc-slurm db: created the store {where} at revision {after}")
        elif before == after:
            click.echo(f"piqc-slurm db: the store {where} exists, at revision {after} (head): nothing to do")
        else:
            click.echo(f"piqc-slurm db: the store {where} exists: upgraded {before} -> {after}")
            _after_upgrade()

    @db_group.command("upgrade", short_help="Migrate an existing store to head.")
    @click.pass_context
    def db_upgrade(ctx: click.Context) -> None:
        """Migrate an existing store's schema to this piqc-slurm's head; print from -> to.

        Run it on the head node after upgrading piqc-slurm there, as the store's
        owner (on PostgreSQL the role that owns the tables), before the compute
        nodes: their pushes (delivery = push) refuse a store behind their own
        version, and the summaries stay in the nodes' outboxes until it is
        upgraded. A store that does not exist is an error (`db init` makes one).
        """
        from piqc_slurm.errors import StoreError
        from piqc_slurm.store.db import INIT_HINT, open_engine, schema_state, store_status

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        where = _where(url)
        before = _revision_before(url, allow_missing_file=False)
        if before is None:
            raise StoreError(f"the store {where} has no piqc schema ({INIT_HINT})")
        state = schema_state(before)
        if state == "head":
            click.echo(f"piqc-slurm db: the store {where} is at revision {before}, the head: nothing to do")
            return
        open_engine(url, mode="write").dispose()  # refuses a newer schema; migrates one behind
        after, _head = store_status(url)
        click.echo(f"piqc-slurm db: upgraded the store {where} from {before} to {after}")
        _after_upgrade()

    @db_group.command("status", short_help="The store's revision and the head.")
    @click.pass_context
    def db_status(ctx: click.Context) -> None:
        """The store's schema revision and this piqc-slurm's head, read-only.

        Exit 0 when the store is at the head, 1 when it is behind (run `db
        upgrade`), newer (upgrade piqc-slurm here) or has no schema (`db init`);
        3 when it cannot be reached or does not exist.
        """
        from piqc_slurm.store.db import schema_state, store_status

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        rev, head = store_status(url)
        state = schema_state(rev)
        says = {"head": "up to date",
                "behind": "behind: run `piqc-slurm db upgrade` on the head node",
                "newer": "newer than this piqc-slurm: upgrade piqc-slurm here",
                "missing": "no piqc schema: create it with `piqc-slurm db init`"}[state]
        click.echo(f"store     {_where(url)}\nrevision  {rev or '-'}\nhead      {head} (this piqc-slurm)\n"
                   f"state     {says}")
        sys.exit(0 if state == "head" else 1)


def _after_upgrade() -> None:
    click.echo("piqc-slurm db: reload the views (sql/views.sql, sql/views.postgresql.sql) and, on "
               "PostgreSQL with per-user access, sql/postgres-rls.sql: docs/admin-guide.md, Upgrading", err=True)
