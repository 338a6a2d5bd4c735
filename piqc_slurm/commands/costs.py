"""`piqc-slurm costs`: spend and cost per completed job, per group (sreport style)."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, parsable_output, sreport_times, sreport_window, store_url


def register(group: click.Group) -> None:
    @group.command()
    @sreport_window
    @click.option("--by", type=click.Choice(["user", "account", "partition", "gputype", "job"]),
                  help="One row per group, then the total. job = a recurring job: same name + user + account.")
    @parsable_output
    @click.option("-o", "--format", "fmt", metavar="FIELDS",
                  help="Comma-separated fields (default: all): Group, Jobs, Completed, GPUHours, SpendUSD, "
                       "FailedSpendUSD, CostPerCompletedUSD, WasteUSD, RecoverablePerYearUSD.")
    @click.pass_context
    def costs(ctx, since, until, by, mode, noheader, fmt) -> None:
        """GPU spend per group: jobs, completed jobs, GPU-hours, spend, spend on
        failed runs, cost per completed job, waste, and the waste recoverable per year.

        Waste comes from `piqc-slurm analyze`'s findings (-o adds it by code:
        IdleGPUsUSD, WrongTierUSD, InputBoundUSD, UnderBatchedUSD, FailedWasteUSD,
        RegressionUSD; RecoverableDays says how many days the annualised figure
        rests on).

        A job counts in the window that holds its End. Cost per completed job
        divides ALL spend (failed attempts included) by the completed runs: the
        number that says what one result costs.

        \b
          piqc-slurm costs -S 2026-11-01 -E 2026-12-01 --by account
          piqc-slurm costs -S now-7days -E now --by job -P -o Group,Completed,CostPerCompletedUSD
        """
        from piqc_slurm import costs as C
        from piqc_slurm.query.access import Caller, is_admin
        from piqc_slurm.query.gpu import load_price_book
        from piqc_slurm.query.store import Reader

        fields = C.parse_fields(fmt)
        cfg = load_config(ctx)
        s, e = sreport_times(since, until)
        me = Caller.current()
        users = None if is_admin(me, cfg["access.admin_users"], cfg["access.admin_groups"],
                                 hidden_by=("jobs", "usage")) else [me.name]
        reader = Reader(store_url(ctx, cfg))
        try:
            book = load_price_book(reader, cfg)
            jobs = C.priced(C.load_jobs(reader, s, e, users), book)
            t0 = C.trailing_start(reader, e, cfg["analyze.recoverable_days"])
            trailing = C.priced(C.load_jobs(reader, t0, e, users), book) if t0 < e else []
        finally:
            reader.close()
        days = (e - t0) / 86400
        rows = C.table(jobs, by, trailing, days)
        click.echo(C.render(rows, fields, mode or "table", not noheader), nl=False)
        if days < C.THIN_DAYS and "RecoverablePerYearUSD" in fields:
            click.echo(f"piqc-slurm costs: RecoverablePerYearUSD rests on {days:.1f} days of data "
                       f"(thin: under {C.THIN_DAYS})", err=True)
