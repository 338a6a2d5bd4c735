"""`piqc-slurm nightly`: ingest, analyze, gaps and digest in a row, under a lock (piqc_slurm/nightly.py)."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, when


def register(group: click.Group) -> None:
    from piqc_slurm.nightly import DEFAULT_DIGEST_DIR, DEFAULT_LOCK, STEP_TIMEOUT

    @group.command()
    @click.option("-S", "--since", "--starttime", "since", metavar="TIME",
                  help="Window start for every step (sacct time formats). Default: ingest from its last run; "
                       "analyze and gaps 48 hours before --until; digest 00:00 yesterday.")
    @click.option("-E", "--until", "--endtime", "until", metavar="TIME",
                  help="Window end for every step. Default: now (ingest, analyze, gaps); 00:00 today (digest).")
    @click.option("--digest-dir", metavar="DIR", default=DEFAULT_DIGEST_DIR, show_default=True,
                  help="Where the digest is written, as digest-YYYY-MM-DD.html (the last day it covers).")
    @click.option("--no-digest", is_flag=True, help="Skip the digest step.")
    @click.option("--mail-to", "mail_to", metavar="ADDR", multiple=True,
                  help="Also mail the digest to ADDR (digest --mail-to; repeatable; SMTP: the config's [mail]).")
    @click.option("--lock", "lock_path", metavar="PATH", default=DEFAULT_LOCK, show_default=True,
                  help="Lock file: a second run while one holds it exits 75 at once.")
    @click.option("--step-timeout", type=click.IntRange(min=1), default=STEP_TIMEOUT, show_default=True,
                  metavar="SECONDS", help="A step running longer is stopped and the run fails.")
    @click.option("-q", "--quiet", is_flag=True, help="Only this command's own lines, not the steps' messages.")
    @click.pass_context
    def nightly(ctx, since, until, digest_dir, no_digest, mail_to, lock_path, step_timeout, quiet) -> None:
        """Run ingest, analyze, gaps and digest in that order, for cron or a systemd
        timer (deploy/). Each step is the ordinary command in a subprocess, with this
        command's --config and --db; one line per step goes to stderr and syslog:

        \b
          piqc-slurm nightly: ingest ok in 12.3s
          piqc-slurm nightly: analyze failed (exit 3): piqc-slurm: store ... unreachable

        The first failing step stops the run. Exit codes: 0 all ok, or ingest found
        no new data (no job record, no summary: "no new data since TIME", the later
        steps skipped); 10 ingest failed; 11 analyze; 12 gaps; 13 digest; 75 another
        run holds the lock; 2 bad options, config or lock path; 143 stopped by
        SIGTERM (the running step with it).

        \b
          piqc-slurm nightly                              # what the timer runs
          piqc-slurm nightly --no-digest --lock /tmp/piqc-nightly.lock
          piqc-slurm nightly -S 2026-11-01 -E 2026-11-08  # redo a week, digest of that week
        """
        import sys

        from piqc_slurm import nightly as N

        cfg = load_config(ctx)
        s, e = when(since), when(until)
        try:
            the_plan = N.plan(N.command_prefix(ctx.obj["config_path"], ctx.obj["db"]), since=s, until=e,
                              digest_dir=None if no_digest else digest_dir, since_text=since, mail_to=mail_to)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        echo = None if quiet else (lambda text: click.echo(text, err=True))
        sys.exit(N.run(the_plan, lock=lock_path, timeout=step_timeout, log=N.Log(use_syslog=cfg["syslog"]),
                       echo=echo))
