"""`piqc-slurm ingest`: sacct records and spooled summaries into the store."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store, when


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--since", metavar="TIME", help="Window start (sacct time format: 2026-11-27, now-2days, "
                  "midnight ...). Default: the last ingest's end less 6 h, or 24 h ago.")
    @click.option("--until", metavar="TIME", help="Window end (default: now).")
    @click.option("--sacct-file", metavar="FILE", help="Read `sacct --parsable2` output WITH its header line "
                  "(any field order; extra fields ignored) instead of running sacct; - for stdin.")
    @click.option("--tz", "file_tz", metavar="ZONE", help="Zone the --sacct-file times were printed in "
                  "(IANA name, e.g. Europe/Berlin). Default: this host's zone.")
    @click.option("--spool", "spools", metavar="DIR", multiple=True, help="Replay sampler summaries from DIR "
                  "(a node outbox, or a shared spool with one subdirectory per node). Repeatable. Default without "
                  "--sacct-file: shared_spool_dir and spool_dir/outbox from the config.")
    @click.option("--strict", is_flag=True, help="Fail on the first malformed sacct line instead of skipping it.")
    @click.option("--slice-hours", type=click.IntRange(1, 24 * 31), default=24, show_default=True,
                  help="Ask sacct for at most this many hours at a time.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
    @click.pass_context
    def ingest(ctx, since, until, sacct_file, file_tz, spools, strict, slice_hours, quiet) -> None:
        """Merge sacct accounting records and spooled sampler summaries into the store.

        Idempotent: ingesting a window again changes nothing that has not changed
        in Slurm. Run it nightly (cron or a systemd timer) on the head node:

        \b
          piqc-slurm ingest                       # since the last run (with overlap)
          piqc-slurm ingest --since 2026-11-01 --until 2026-11-08
          sacct -a -P -o ALL -S 2026-11-01 > nov.txt; piqc-slurm ingest --sacct-file nov.txt --tz UTC
        """
        from pathlib import Path

        from piqc_slurm.errors import SacctError
        from piqc_slurm.ingest import ingest as run_ingest
        from piqc_slurm.ingest import resolve_cluster
        from piqc_slurm.timespec import local_zone

        cfg = load_config(ctx)
        engine = open_store(ctx, cfg)
        if spools:
            dirs = [Path(d) for d in spools]
        elif sacct_file is None:
            dirs = [Path(d) for d in (cfg["shared_spool_dir"], str(Path(cfg["spool_dir"]) / "outbox")) if d]
        else:
            dirs = []
        tz = file_tz or getattr(local_zone(), "key", None) or "UTC"
        say = None if quiet else (lambda m: click.echo(f"piqc-slurm ingest: {m}", err=True))
        if sacct_file is None:
            cluster = resolve_cluster(cfg["cluster"])
        else:  # a file's own Cluster column may name it: Slurm is asked only when needed
            try:
                cluster = resolve_cluster(cfg["cluster"])
            except SacctError:
                cluster = ""
        res = run_ingest(engine, cluster=cluster, since=when(since),
                         until=when(until), sacct_file=sacct_file, file_tz=tz,
                         spool_dirs=[d for d in dirs if d.is_dir()], strict=strict,
                         slice_seconds=slice_hours * 3600, progress=say)
        for err in res.errors[:20]:
            click.echo(f"piqc-slurm ingest: skipped: {err}", err=True)
        if len(res.errors) > 20:
            click.echo(f"piqc-slurm ingest: ... and {len(res.errors) - 20} more malformed lines", err=True)
        for item in res.summaries_newer:
            click.echo(f"piqc-slurm ingest: left for a newer piqc-slurm: {item}", err=True)
        for item in res.summaries_bad:
            click.echo(f"piqc-slurm ingest: bad summary skipped: {item}", err=True)
        if not quiet:
            click.echo(f"piqc-slurm ingest: {res.jobs} job record(s), {res.lines_bad} malformed line(s), "
                       f"{res.summaries_taken} summaries taken in", err=True)

