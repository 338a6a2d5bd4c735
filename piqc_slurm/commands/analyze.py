"""`piqc-slurm analyze`: judge a window's jobs and store the findings."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store, store_url


def register(group: click.Group) -> None:
    @group.command()
    @click.option("-S", "--since", "--starttime", "since", metavar="TIME",
                  help="Window start (sacct time formats). Default: 48 hours before --until.")
    @click.option("-E", "--until", "--endtime", "until", metavar="TIME", help="Window end. Default: now.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress and summary lines.")
    @click.pass_context
    def analyze(ctx, since, until, quiet) -> None:
        """Find the waste in the jobs that ended in a window: idle GPUs, under-batched
        and input-bound jobs, jobs on a costlier GPU tier than they need, failed
        spend, jobs without sampler data, runtime regressions of recurring jobs.

        Idempotent: a window analysed again replaces its jobs' findings. Each
        finding keeps its evidence (figures and a sentence), its dollars and its
        advice; `piqc-slurm sacct -o Findings,WasteUSD,AdviceGPUs,AdviceTier,EstElapsed`
        and `seff` show them. Thresholds: the config's [analyze] table
        (docs/findings.md explains every code and threshold).

        \b
          piqc-slurm analyze                                  # the last 48 hours
          piqc-slurm analyze -S 2026-11-01 -E 2026-12-01
        """
        import time

        from piqc_slurm.analysis import analyze as run
        from piqc_slurm.query.gpu import load_price_book
        from piqc_slurm.query.store import Reader
        from piqc_slurm.timespec import parse_timespec

        cfg = load_config(ctx)
        e = parse_timespec(until) if until else int(time.time())
        s = parse_timespec(since) if since else e - 48 * 3600
        if s >= e:
            raise click.UsageError(f"--since ({since}) must be before --until ({until or 'now'})")
        engine = open_store(ctx, cfg, "write")
        reader = Reader(store_url(ctx, cfg))
        say = None if quiet else (lambda m: click.echo(f"piqc-slurm analyze: {m}", err=True))
        try:
            res = run(reader, engine, s, e, cfg, load_price_book(reader, cfg), progress=say)
        finally:
            reader.close()
            engine.dispose()
        if quiet:
            return
        click.echo(f"piqc-slurm analyze: {res.jobs:,} jobs, {res.findings:,} findings, "
                   f"${res.waste_usd:,.2f} waste, in {res.seconds:.1f} s", err=True)
        for code, (n, w) in sorted(res.by_code.items()):
            click.echo(f"piqc-slurm analyze:   {code:<19} {n:>7,} jobs  ${w:,.2f}", err=True)
        if res.shared:
            click.echo(f"piqc-slurm analyze:   {res.shared:,} GPU jobs on MIG slices, shards or MPS: no per-GPU "
                       "findings (IDLE_GPUS, UNDER_BATCHED, INPUT_BOUND, WRONG_TIER) for them", err=True)
        thin = [(node, a, b) for node, (a, b) in sorted(res.coverage.items()) if b and a / b < 0.9]
        for node, a, b in thin:
            click.echo(f"piqc-slurm analyze:   sampler coverage on {node}: {a} of {b} GPU jobs (check its hooks)",
                       err=True)
