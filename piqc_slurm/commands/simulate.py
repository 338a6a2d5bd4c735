"""`piqc-slurm simulate --scenario FILE`: a scenario into the store, as real data would arrive."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, open_store


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--scenario", "path", required=True, metavar="FILE",
                  help="Scenario JSON (DESIGN.md's format; examples/ has several). - for stdin.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
    @click.pass_context
    def simulate(ctx, path, quiet) -> None:
        """Load a scenario's nodes, jobs and GPU loads into the store through the
        sampler's own aggregation, the Epilog's summary builder and ingest's own
        upserts; its prices and catalog overrides are kept for its cluster.

        Loading the same scenario again replaces its rows (idempotent). Unlike
        the other commands, simulate creates the store when the --db file does not
        exist yet (a SQLite demo store, 0640, group store_group; see `db init`),
        and migrates an existing one. Then ask as for real data:

        \b
          piqc-slurm simulate --scenario examples/eight-asked-three-used/scenario.json
          piqc-slurm sacct -M ex-eight -S 2026-11-01 -o JobID,AllocGPUs,GPUsUsed,CostUSD
          piqc-slurm costs -S 2026-11-01 -E 2026-12-01 --by account
        """
        import sys

        from piqc_slurm.errors import UsageError
        from piqc_slurm.sim.load import simulate as run
        from piqc_slurm.sim.scenario import ScenarioError, load_scenario
        from piqc_slurm.usage.catalog import load_catalog

        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        try:
            sc = load_scenario(text)
        except ScenarioError as exc:
            raise UsageError(f"{path}: {exc}") from None
        cfg = load_config(ctx)
        catalog = load_catalog()
        if sc.catalog:
            try:
                catalog.with_overrides(sc.catalog)
            except ValueError as exc:
                raise UsageError(f"{path}: {exc}") from None
        engine = open_store(ctx, cfg, "create")
        say = None if quiet else (lambda m: click.echo(f"piqc-slurm simulate: {m}", err=True))
        res = run(engine, sc, catalog, active_util=cfg["sampler.active_util"], min_share=cfg["usage.min_active_share"],
                  progress=say)
        if not quiet:
            click.echo(f"piqc-slurm simulate: cluster {sc.cluster}: {res.nodes} node(s), {res.gpus} GPU(s), "
                       f"{res.jobs} job(s), {res.summaries} summaries in {res.seconds:.1f} s", err=True)
