"""`piqc-slurm ingest`: sacct records and spooled summaries into the store."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store, when
from piqc_slurm.slurm.fields import INGEST_FIELDS


def _sacct_file_recipe(width: int = 90) -> str:
    """The shell lines that make a --sacct-file the way ingest asks sacct (bash; the field list
    in pieces, as a help line cannot wrap a command)."""
    pieces: list[str] = []
    for name in INGEST_FIELDS:
        if pieces and len(pieces[-1]) + len(name) + 1 <= width:
            pieces[-1] += "," + name
        else:
            pieces.append(("F=$F," if pieces else "F=") + name)
    return "\n".join(["  " + p for p in pieces] + [
        "  SLURM_TIME_FORMAT=%s sacct -a -P -D --delimiter=$'\\x1f' --format=$F \\",
        "    -S 2026-11-01 -E 2026-12-01 > nov.txt",
        "  piqc-slurm ingest --sacct-file nov.txt"])


INGEST_HELP = f"""Merge sacct accounting records and spooled sampler summaries into the store.

Idempotent: ingesting a window again changes nothing that has not changed
in Slurm. Run it nightly (cron or a systemd timer) on the head node:

\b
  piqc-slurm ingest                       # since the last run (with overlap)
  piqc-slurm ingest --since 2026-11-01 --until 2026-11-08
  piqc-slurm ingest --spool-only          # summaries only: no sacct, no Slurm needed

The watermark (how far sacct has been read) moves only over what was read: to
the end of each slice completely written, and only when the window starts at
or before it. A later --since leaves a hole: ingest warns and names the command
that reads it (the next run without --since reads it too).

A file for --sacct-file, made the way ingest itself asks sacct (bash): epoch
times and the \\x1f delimiter, so a `|` in a job name is kept. (In other
`sacct -P` output a `|` in a name is recovered when JobName is the only
free-text field; `-o ALL` prints many, and such a job may be skipped.)

\b
{_sacct_file_recipe()}
"""


def _host_zone() -> str:
    """This host's zone as an IANA name, for --sacct-file times without --tz: $TZ, else what
    /etc/localtime links to, else /etc/timezone; UTC when none is an IANA name (the progress
    line says which zone was used)."""
    import os
    from zoneinfo import ZoneInfo

    tz = os.environ.get("TZ")
    if tz is not None:
        names = [tz.removeprefix(":")]
    else:
        real = os.path.realpath("/etc/localtime")
        names = [real.split("/zoneinfo/", 1)[1]] if "/zoneinfo/" in real else []
        try:
            with open("/etc/timezone") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    for name in names:
        try:
            ZoneInfo(name)
            return name
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; a POSIX TZ string
            continue
    return "UTC"


def register(group: click.Group) -> None:
    @group.command(help=INGEST_HELP)
    @click.option("--since", metavar="TIME", help="Window start (sacct time format: 2026-11-27, now-2days, "
                  "midnight ...). Default: the last ingest's end (the watermark) less 6 h, or 24 h ago. "
                  "A start after the watermark leaves it where it is and warns about the hole.")
    @click.option("--until", metavar="TIME", help="Window end (default: now). Must be after --since.")
    @click.option("--sacct-file", metavar="FILE", help="Read sacct output instead of running sacct; - for stdin: "
                  "`sacct -P` output WITH its header line (any field order; extra fields ignored), best made as "
                  "shown above. Never moves the watermark. An empty, binary or header-less file, or one where no "
                  "line parses, is an error (exit 4); a few malformed lines are reported and skipped.")
    @click.option("--tz", "file_tz", metavar="ZONE", help="Zone the --sacct-file times were printed in "
                  "(IANA name, e.g. Europe/Berlin). Default: this host's zone.")
    @click.option("--spool", "spools", metavar="DIR", multiple=True, help="Replay sampler summaries from DIR "
                  "(a node outbox, or a shared spool with one subdirectory per node). Repeatable. Default without "
                  "--sacct-file: shared_spool_dir and spool_dir/outbox from the config.")
    @click.option("--spool-only", is_flag=True, help="Only replay the spooled summaries (--spool, else the "
                  "config's spool directories): sacct is not run (no Slurm needed), the watermark stays.")
    @click.option("--strict", is_flag=True, help="Fail on the first malformed sacct line instead of skipping it.")
    @click.option("--slice-hours", type=click.IntRange(1, 24 * 31), default=24, show_default=True,
                  help="Ask sacct for at most this many hours at a time.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
    @click.option("--create-store", is_flag=True, help="Create the store if it does not exist (as `piqc-slurm "
                  "db init`). Without it a missing store is an error, so a mistyped --db creates nothing.")
    @click.pass_context
    def ingest(ctx, since, until, sacct_file, file_tz, spools, strict, slice_hours, quiet, create_store,
               spool_only) -> None:
        import time
        from pathlib import Path

        from piqc_slurm.errors import ParseError, SacctError, UsageError
        from piqc_slurm.ingest import ingest as run_ingest
        from piqc_slurm.ingest import resolve_cluster
        from piqc_slurm.slurm.parse import resolve_tz

        if spool_only and (sacct_file is not None or since is not None or until is not None):
            raise click.UsageError("--spool-only reads no sacct records: it takes no --sacct-file, --since "
                                   "or --until")
        if file_tz is not None:
            try:
                resolve_tz(file_tz)
            except ParseError:
                raise UsageError(f"--tz: unknown time zone {file_tz!r}") from None
        since_t, until_t = when(since), when(until)
        if since_t is not None and since_t >= (until_t if until_t is not None else int(time.time())):
            raise click.UsageError(f"--since ({since}) must be before --until ({until or 'now'})")
        cfg = load_config(ctx)
        engine = open_store(ctx, cfg, "create" if create_store else "write")
        if spools:
            dirs = [Path(d) for d in spools]
        elif sacct_file is None:
            dirs = [Path(d) for d in (cfg["shared_spool_dir"], str(Path(cfg["spool_dir"]) / "outbox")) if d]
        else:
            dirs = []
        tz = file_tz or _host_zone()
        say = None if quiet else (lambda m: click.echo(f"piqc-slurm ingest: {m}", err=True))
        if spool_only:  # summaries carry their own cluster: Slurm is not asked
            cluster = cfg["cluster"]
        elif sacct_file is None:
            cluster = resolve_cluster(cfg["cluster"])
        else:  # a file's own Cluster column may name it: Slurm is asked only when needed
            try:
                cluster = resolve_cluster(cfg["cluster"])
            except SacctError:
                cluster = ""
        existing = [d for d in dirs if d.is_dir()]
        if spool_only and not existing:
            raise UsageError("--spool-only: no spool directory to read ("
                             + (", ".join(map(str, dirs)) + ": not found" if dirs else
                                "give --spool DIR, or set shared_spool_dir or spool_dir in the config") + ")")
        res = run_ingest(engine, cluster=cluster, since=since_t,
                         until=until_t, sacct_file=sacct_file, file_tz=tz,
                         spool_dirs=existing, strict=strict,
                         slice_seconds=slice_hours * 3600, progress=say, spool_only=spool_only,
                         warn=lambda m: click.echo(f"piqc-slurm ingest: warning: {m}", err=True))
        for err in res.errors[:20]:
            click.echo(f"piqc-slurm ingest: skipped: {err}", err=True)
        if len(res.errors) > 20:
            click.echo(f"piqc-slurm ingest: ... and {len(res.errors) - 20} more malformed lines", err=True)
        for item in res.summaries_newer:
            click.echo(f"piqc-slurm ingest: left for a newer piqc-slurm: {item}", err=True)
        for item in res.summaries_bad:
            click.echo(f"piqc-slurm ingest: bad summary skipped: {item}", err=True)
        for item in res.summaries_quarantined:
            click.echo(f"piqc-slurm ingest: bad summary moved to quarantine/: {item}", err=True)
        if not quiet:
            click.echo(f"piqc-slurm ingest: {res.jobs} job record(s), {res.lines_bad} malformed line(s), "
                       f"{res.summaries_taken} summaries taken in", err=True)

