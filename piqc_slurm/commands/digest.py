"""`piqc-slurm digest`: the nightly HTML page for admins (and its mail)."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, sreport_times, sreport_window, store_url


def register(group: click.Group) -> None:
    @group.command()
    @sreport_window
    @click.option("-o", "--output", "output", metavar="FILE", required=True,
                  help="Write the page here (replaced atomically; `-` for stdout).")
    @click.option("--mail-to", "mail_to", metavar="ADDR", multiple=True,
                  help="Also send it as HTML mail with a plain-text part (repeatable); SMTP settings: "
                       "the config's [mail].")
    @click.option("-q", "--quiet", is_flag=True, help="No summary line.")
    @click.pass_context
    def digest(ctx, since, until, output, mail_to, quiet) -> None:
        """One self-contained HTML page of a window's GPU batch spend, for the admins'
        morning: the headline (spend, waste, recoverable per year, cost per completed
        job, each against the window before), what to change (the findings with the
        most dollars, with their advice), spend and waste per account and user,
        GPU-hours allocated, used and idle by GPU type, idle GPUs between jobs (with
        and without demand, a node x hour map), recurring jobs' cost per run, and
        coverage (jobs without sampler data, nodes whose hooks look broken, GPU types
        without a price).

        It reads what `ingest`, `analyze` and `gaps` stored: run them first for the
        window (`piqc-slurm nightly` does all four). The page makes no request of any
        kind (inline CSS and SVG charts, no scripts) and reads the same in a mail client.

        \b
          piqc-slurm digest -o /var/lib/piqc/digests/yesterday.html     # 00:00 yesterday to 00:00 today
          piqc-slurm digest -S 2026-11-23 -E 2026-11-30 -o week.html --mail-to hpc-admins@example.org
        """
        import sys

        from piqc_slurm import digest as D
        from piqc_slurm.fsutil import write_atomic
        from piqc_slurm.query.gpu import load_price_book
        from piqc_slurm.query.store import Reader
        from piqc_slurm.report.digest_page import render_html, render_text, usd

        cfg = load_config(ctx)
        s, e = sreport_times(since, until)
        reader = Reader(store_url(ctx, cfg))
        try:
            data = D.build(reader, s, e, cfg, load_price_book(reader, cfg))
        finally:
            reader.close()
        html = render_html(data)
        if output == "-":
            sys.stdout.write(html)
        else:
            write_atomic(output, html.encode(), mode=0o644)
        if mail_to:
            from piqc_slurm import mail

            h = data["headline"]
            mail.check(cfg)
            msg = mail.compose(f"GPU batch spend: {usd(h['spend'])}, {usd(h['waste'])} waste", html,
                               render_text(data), mail.sender_address(cfg), list(mail_to))
            refused = mail.send(msg, cfg)
            if refused:
                click.echo(f"piqc-slurm digest: the server refused {', '.join(sorted(refused))}", err=True)
        if not quiet:
            h = data["headline"]
            click.echo(f"piqc-slurm digest: {h['jobs']:,} jobs, {usd(h['spend'])} spent, {usd(h['waste'])} "
                       f"waste, {usd(h['recoverable'])} recoverable per year (on {h['recoverable_days']:.1f} days)"
                       + (f" -> {output}" if output != "-" else "")
                       + (f", mailed to {', '.join(mail_to)}" if mail_to else ""), err=True)
