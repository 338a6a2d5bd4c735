"""`piqc-slurm notify-users`: a note to each user whose jobs' waste passed [notify] threshold_usd."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store, sreport_window


def _window(f):
    """sreport_window's -S/-E, with notify-users' own default window in the help."""
    f = sreport_window(f)
    for p in getattr(f, "__click_params__", []):
        if p.name == "since":
            p.help = ("Window start (jobs by End), sacct time formats (2026-11-01, now-7days, midnight). "
                      "Default: [notify] period_days (7) days before --until.")
    return f


def register(group: click.Group) -> None:
    @group.command("notify-users")
    @_window
    @click.option("--send", is_flag=True, help="Mail the notes (via [mail]) and record them in the store. "
                  "Without it: a dry run that writes them to --out and records nothing.")
    @click.option("--out", "out_dir", metavar="DIR", default=None,
                  help="Directory the notes are written to as USER.txt and USER.html "
                       "(default for a dry run: ./piqc-notes; with --send: none unless given).")
    @click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
    @click.pass_context
    def notify_users(ctx, since, until, send, out_dir, quiet) -> None:
        """Tell each user whose GPU jobs wasted the most: a short note (text and HTML)
        with their costliest jobs and the one change that saves most.

        A user's waste is the sum of the findings of `piqc-slurm analyze` on their jobs
        whose End is in the window (run analyze over it first); a failure on the
        site's side and NO_SAMPLES are not counted. A note goes to each user whose
        waste reaches [notify] threshold_usd ($50), who is not in [notify] opt_out
        and who was not sent one in the last [notify] period_days (7) days.

        The default window is the [notify] period_days days up to 00:00 today.
        Without --send nothing is mailed or recorded: the notes are written to --out
        to read first. --send mails each to USER@[notify] domain through the [mail]
        server and records it in the store (user_notices).

        \b
          piqc-slurm notify-users                        # dry run: ./piqc-notes/USER.txt, USER.html
          piqc-slurm notify-users --out /tmp/notes -S now-14days -E now
          piqc-slurm notify-users --send                 # mail them, at most once per period
          piqc-slurm notify-users --send -q              # from cron, after the nightly analyze
        """
        import time

        from piqc_slurm import notify as N
        from piqc_slurm.timespec import local_zone, parse_timespec, start_of_today

        cfg = load_config(ctx)
        e = parse_timespec(until) if until else start_of_today()
        s = parse_timespec(since) if since else e - int(cfg["notify.period_days"]) * N.DAY
        if s >= e:
            raise click.UsageError(f"--since ({since}) must be before --until ({until or 'today 00:00'})")
        now = int(time.time())
        tz = local_zone()
        engine = open_store(ctx, cfg, "write" if send else "read")
        try:
            plan = N.plan(engine, cfg, s, e, now, tz=tz)

            def say(msg: str) -> None:
                if not quiet:
                    click.echo(msg)

            for user, why in plan.skipped:
                if not quiet:
                    click.echo(f"piqc-slurm notify-users: {user}: no note: {why}", err=True)
            target = out_dir if out_dir is not None else (None if send else "piqc-notes")
            if target is not None:
                for note in plan.notes:
                    txt, html = N.write_note(target, note)
                    say(f"{note.user}: ${N.money_text(note.waste_usd)} on {note.jobs} "
                        f"job{'s' * (note.jobs != 1)}: wrote {txt} and {html}")
            if send:
                n = N.send(engine, cfg, plan.notes, s, e, now,
                           echo=lambda note, to: say(f"{note.user}: ${N.money_text(note.waste_usd)} on "
                                                     f"{note.jobs} job{'s' * (note.jobs != 1)}: sent to {to}"))
                say(f"notify-users: {n} note{'s' * (n != 1)} sent; {plan.below} user{'s' * (plan.below != 1)} "
                    f"below the ${N.money_text(cfg['notify.threshold_usd'])} threshold")
            else:
                n = len(plan.notes)
                say(f"notify-users: dry run: {n} note{'s' * (n != 1)} written to {target}, nothing sent "
                    f"(--send mails them); {plan.below} user{'s' * (plan.below != 1)} below the "
                    f"${N.money_text(cfg['notify.threshold_usd'])} threshold")
        finally:
            engine.dispose()
