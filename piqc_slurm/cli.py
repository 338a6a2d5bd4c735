"""The `piqc-slurm` command line: click only, no logic.

Every error a person can cause surfaces here as one line, `piqc-slurm:
message`, with the exit code of its PiqcError class (2 usage/config, 3 store,
4 sacct/parse, 5 spool); a broken pipe is quiet and ^C exits 130.

The slurmd hooks call `piqc-slurm prolog` / `piqc-slurm epilog` with nothing
else on the line: that path skips click entirely (the Prolog delays the job,
and importing click alone costs ~30 ms) and always exits 0.
"""

from __future__ import annotations

import sys

HOOK_VERBS = ("prolog", "epilog")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0] in HOOK_VERBS:
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook(argv[0]))
    _run_click(argv)


def _run_click(argv: list[str]) -> None:
    import click

    from piqc_slurm.errors import PiqcError

    try:
        cli.main(args=argv, prog_name="piqc-slurm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except PiqcError as exc:
        print(f"piqc-slurm: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Quiet on `piqc-slurm sacct | head`; keep the interpreter from
        # complaining while flushing a closed stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(0)


def _build_cli():
    import click

    from piqc_slurm import __version__

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(__version__, "-V", "--version", prog_name="piqc-slurm")
    @click.option("--config", "config_path", metavar="PATH", envvar=None,
                  help="Config file (else $PIQC_CONFIG, else /etc/piqc/piqc.toml, else built-in defaults).")
    @click.option("--db", metavar="URL",
                  help="Store URL, e.g. sqlite:////var/lib/piqc/piqc.db or "
                       "postgresql+psycopg://piqc@dbhost/piqc (else $PIQC_DB, else the config's db).")
    @click.pass_context
    def cli(ctx: click.Context, config_path: str | None, db: str | None) -> None:
        """Make the GPU spend of Slurm batch jobs visible.

        \b
        On every GPU node, slurmd's Prolog and Epilog run `piqc-slurm prolog|epilog`
        (see epilog/): a sampler records each job's GPU use through NVML.
        On the head node, nightly:
          piqc-slurm ingest     # sacct records + sampler summaries -> the store
          piqc-slurm analyze    # cost, waste findings, idle gaps
          piqc-slurm digest -o digest.html
        Any time:
          piqc-slurm sacct -u alice -S 2026-11-01 -o JobID,AllocGPUs,GPUUtilAvg,CostUSD
          piqc-slurm seff 1234

        Run `piqc-slurm COMMAND --help` for each command.
        """
        ctx.obj = {"config_path": config_path, "db": db}

    def load_config(ctx: click.Context):
        from piqc_slurm import config

        return config.load(ctx.obj["config_path"], ctx.obj["db"])

    @cli.command()
    def prolog() -> None:
        """Run as slurmd's Prolog: start the job's GPU sampler. Always exits 0."""
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook("prolog"))

    @cli.command()
    def epilog() -> None:
        """Run as slurmd's Epilog: stop the sampler, spool and deliver the summary. Always exits 0."""
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook("epilog"))

    def store_url(ctx: click.Context, cfg) -> str:
        from piqc_slurm import config

        if cfg["db"]:
            return cfg["db"]
        url, note = config.default_db_url()
        if note:
            click.echo(f"piqc-slurm: {note}", err=True)
        return url

    def when(value: str | None) -> int | None:
        from piqc_slurm.timespec import parse_timespec

        return None if value is None else parse_timespec(value)

    def open_store(ctx: click.Context, cfg):
        from piqc_slurm.store import open_engine

        return open_engine(store_url(ctx, cfg))

    @cli.command()
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

    from piqc_slurm.query.command import add_sacct_command

    add_sacct_command(cli, load_config, store_url)

    @cli.command()
    @click.argument("jobid")
    @click.option("-M", "--cluster", metavar="NAME", help="Cluster, where the store holds several.")
    @click.pass_context
    def seff(ctx: click.Context, jobid: str, cluster: str | None) -> None:
        """One job's GPU efficiency report: allocation, elapsed, state, per-GPU
        utilization, memory and energy, cost, and advice (like seff/jobstats).

        JOBID is sacct's JobID (1234, 1234_5) or JobIDRaw. Users see their own
        jobs; [access] admin_users/admin_groups see all.
        """
        import time

        from sqlalchemy.orm import Session

        from piqc_slurm.errors import UsageError
        from piqc_slurm.query.access import Caller, is_admin
        from piqc_slurm.query.gpu import load_price_book, values_for_job
        from piqc_slurm.query.store import Reader
        from piqc_slurm.report.seff import load_job, render

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        engine = open_store(ctx, cfg)
        with Session(engine) as session:
            view = load_job(session, jobid, cluster)
        me = Caller.current()
        allowed = view is not None and (view.job["user"] == me.name
                                        or is_admin(me, cfg["access.admin_users"], cfg["access.admin_groups"]))
        if not allowed:
            raise UsageError(f"job {jobid} not found in the store (ingest first, or it is not yours)")
        j = view.job
        reader = Reader(url)
        try:
            book = load_price_book(reader, cfg)
            values = values_for_job(reader, j, book, now=int(time.time()))
        finally:
            reader.close()
        rate = book.for_cluster(j["cluster"]).gpu_rate(values.gpu_type, j["partition"]).usd
        click.echo(render(view, values, rate), nl=False)

    @cli.command()
    @click.pass_context
    def doctor(ctx: click.Context) -> None:
        """Check NVML, the spool, hook wiring in slurm.conf, the SPANK plugin,
        the store and sacct; say what to fix. Exit 1 if anything FAILs.

        \b
        Run it on a GPU node as root (NVML, spool, hooks) and on the head node
        (store, sacct). SLURM_CONF selects the slurm.conf to inspect.
        """
        from piqc_slurm.doctor import FAIL, run_all

        cfg = load_config(ctx)
        checks = run_all(cfg, store_url(ctx, cfg))
        for c in checks:
            click.echo(f"{c.status:<4}  {c.name:<12} {c.what}")
            if c.fix and c.status != "OK":
                click.echo(f"      {'':<12} fix: {c.fix}")
        sys.exit(1 if any(c.status == FAIL for c in checks) else 0)

    @cli.group("config")
    def config_group() -> None:
        """Inspect the configuration."""

    @config_group.command("show")
    @click.option("--no-origins", is_flag=True, help="Leave out the comments saying where each value came from.")
    @click.pass_context
    def config_show(ctx: click.Context, no_origins: bool) -> None:
        """Print the effective configuration as TOML, with where each value came from."""
        from piqc_slurm import config

        cfg = load_config(ctx)
        where = cfg.path or "built-in defaults (no config file found)"
        click.echo(f"# piqc-slurm effective configuration; file: {where}")
        click.echo(config.to_toml(cfg, with_origins=not no_origins), nl=False)

    return cli


class _LazyCli:
    """Build the click group on first use, so `import piqc_slurm.cli` stays cheap."""

    _cli = None

    def __getattr__(self, name):
        if _LazyCli._cli is None:
            _LazyCli._cli = _build_cli()
        return getattr(_LazyCli._cli, name)

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")(*args, **kwargs)


cli = _LazyCli()
