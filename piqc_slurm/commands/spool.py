"""`piqc-slurm spool prune`: delete spool files the store has taken in, once old."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store


def register(group: click.Group) -> None:
    @group.group("spool")
    def spool_group() -> None:
        """Look after the summary spools (spool_dir on a node, shared_spool_dir on the head node)."""

    @spool_group.command("prune")
    @click.option("--older-than", "days", type=click.IntRange(min=1), metavar="DAYS",
                  help="Delete only files older than DAYS days (modification time). Default: spool.retention_days "
                       "from the config (30; 0 there: never prune).")
    @click.option("-n", "--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
    @click.pass_context
    def prune(ctx: click.Context, days: int | None, dry_run: bool) -> None:
        """Delete old spool files the store already has; never one it lacks.

        \b
        Deleted, once older than the retention:
          shared_spool_dir/<node>/*.summary.json (and .timeline.jsonl) that the
            store recorded taking in: spool_replays, same name and SHA-256
            (a file rewritten since is kept until ingest takes it in again);
          spool_dir/delivered/ summaries a push moved there, whose run
            (cluster, job, restart, node, start) is in the store;
          files in quarantine/ directories (summaries ingest or a push could
            not read, with their .reason);
          spool_dir/outbox/*.reported markers of runs no longer in the outbox;
          spool_dir/orphaned/<key>/ run dirs of runs that ended without an
            Epilog, once the sampler had spooled their summary (`spooled`).
        Summaries waiting in the outbox are never touched. Symlinks are never
        followed. The store is opened read-only, and only if something is old
        enough to check. Only this store is asked: where a second store reads
        the same shared spool, keep the retention well above its ingest interval.

        \b
        Run it as root where the files are: on the head node for the shared
        spool, on a node (delivery = push) for its delivered/ directory.
          piqc-slurm spool prune --dry-run
          piqc-slurm spool prune --older-than 90
        Prints each file deleted (or, with --dry-run, to delete) and each old
        one kept with why, then the counts.
        """
        from pathlib import Path

        from sqlalchemy.exc import SQLAlchemyError

        from piqc_slurm.errors import StoreError, first_line
        from piqc_slurm.spoolreplay import prune as run_prune

        cfg = load_config(ctx)
        if days is None:
            days = cfg["spool.retention_days"]
            if days == 0:
                click.echo("piqc-slurm spool prune: spool.retention_days = 0: nothing is pruned "
                           "(--older-than DAYS prunes anyway)")
                return
        shared = cfg["shared_spool_dir"]
        try:
            res = run_prune(spool_dir=Path(cfg["spool_dir"]) if cfg["spool_dir"] else None,
                            shared_spool_dir=Path(shared) if shared else None, older_than=days * 86400,
                            open_store=lambda: open_store(ctx, cfg, "read"), dry_run=dry_run)
        except SQLAlchemyError as exc:
            raise StoreError(f"spool prune: reading the store failed: {first_line(exc)}") from None
        verb = "would remove" if dry_run else "removed"
        for path in res.removed:
            click.echo(f"{verb} {path}")
        for item in res.kept:
            click.echo(f"kept {item}")
        click.echo(f"piqc-slurm spool prune: {len(res.removed)} file(s) {'to remove' if dry_run else 'removed'}, "
                   f"{len(res.kept)} older than "
                   f"{days} day(s) kept, {res.recent} newer kept{' (dry run: nothing deleted)' if dry_run else ''}")
