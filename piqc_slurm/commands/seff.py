"""`piqc-slurm seff JOBID`: one job's report for a person."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store, store_url


def register(group: click.Group) -> None:
    @group.command()
    @click.argument("jobid")
    @click.option("-M", "--cluster", metavar="NAME", help="Cluster, where the store holds several.")
    @click.pass_context
    def seff(ctx: click.Context, jobid: str, cluster: str | None) -> None:
        """One job's GPU efficiency report: allocation, elapsed, state, per-GPU
        utilization, memory and energy, cost, and advice (like seff/jobstats).

        JOBID is sacct's JobID (1234, 1234_5) or JobIDRaw. With PrivateData=jobs
        in slurm.conf users see their own jobs ([access] admin_users/admin_groups
        see all); without it, every job, as sacct shows them. It only reads the
        store (a user who may read a SQLite store's file can run it).
        """
        import time

        from sqlalchemy.orm import Session

        from piqc_slurm.errors import UsageError
        from piqc_slurm.query.access import Caller, is_admin
        from piqc_slurm.query.gpu import load_price_book, values_for_job
        from piqc_slurm.query.store import Reader
        from piqc_slurm.report.seff import judge_job, load_job, render, stored_findings

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        engine = open_store(ctx, cfg, "read")
        with Session(engine) as session:
            view = load_job(session, jobid, cluster)
            stored = stored_findings(session, view.job) if view is not None else None
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
        prices = book.for_cluster(j["cluster"])
        rate = prices.gpu_rate(values.gpu_type, j["partition"]).usd
        found = stored if stored is not None else judge_job(view, values.cost_usd, rate, prices, cfg)
        click.echo(render(view, values, rate, found, stored is not None), nl=False)

