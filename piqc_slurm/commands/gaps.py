"""`piqc-slurm gaps`: idle GPU time between jobs, and how much of it waiting work could have used."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, parsable_output, sreport_times, sreport_window, store_url


def register(group: click.Group) -> None:
    @group.command()
    @sreport_window
    @click.option("--by", type=click.Choice(["node", "gpu", "partition", "gputype"]),
                  help="One row per group, then the total (default: one row per node, then the total).")
    @click.option("-M", "--clusters", "clusters", multiple=True, metavar="CLUSTER[,...]",
                  help="Clusters (all: every cluster in the store). Default: the config's cluster, else all.")
    @parsable_output
    @click.option("-o", "--format", "fmt", metavar="FIELDS",
                  help="Comma-separated fields: Cluster, Node, GPU, Partition, GPUType, GPUs, IdleGPUHours, "
                       "IdleUSD, DemandGPUHours, DemandUSD, NoDemandGPUHours, NoDemandUSD, DownGPUHours.")
    @click.option("--grace", type=click.IntRange(min=0), default=60, show_default=True, metavar="SECONDS",
                  help="A job that started within this of becoming eligible waited for the scheduler, "
                       "not for GPUs: it is no demand.")
    @click.option("--no-events", is_flag=True,
                  help="Do not ask sacctmgr for node down/drain events (down time then counts as idle).")
    @click.option("--no-store", is_flag=True, help="Print only; do not keep the gaps in the store for the digest.")
    @click.pass_context
    def gaps(ctx, since, until, by, clusters, mode, noheader, fmt, grace, no_events, no_store) -> None:
        """Idle GPU gaps: GPU time no job held, the part of it that jobs waiting in
        the queue could have used (demand), and the part nobody asked for.

        GPUs are the store's inventory; a job holds its GPUs from Start to End.
        Demand is what jobs able to use those GPUs (same partition and GPU type)
        asked for from Eligible to Start, never more than the idle GPUs. Down and
        drained time (sacctmgr show event) is not idle: it is listed apart. Dollars:
        GPU-hours x the GPU type's price. See docs/gaps.md.

        \b
          piqc-slurm gaps -S 2026-11-27T01:00 -E 2026-11-27T06:00
          piqc-slurm gaps -S now-7days -E now --by partition -P
        """
        import os
        import time

        from piqc_slurm import gaps as G
        from piqc_slurm.errors import StoreError
        from piqc_slurm.query.gpu import load_price_book
        from piqc_slurm.query.store import Reader
        from piqc_slurm.timespec import local_zone

        def warn(msg: str) -> None:
            click.echo(msg, err=True)

        fields = G.parse_fields(fmt, by)
        cfg = load_config(ctx)
        s, e = sreport_times(since, until)
        names = G.cluster_choice(clusters, cfg["cluster"])
        url = store_url(ctx, cfg)
        reader = Reader(url)
        try:
            book = load_price_book(reader, cfg)
            if names is None:
                names = G.store_clusters(reader)
            nodes, held, waiting = G.load(reader, names, s, e, book)
        finally:
            reader.close()
        for name in sorted(set(names) - {n.cluster for n in nodes}):
            warn(f"piqc-slurm: gaps: no GPU inventory for cluster {name} in the store "
                 "(ingest reads it from scontrol show node, simulate from a scenario's nodes)")
        events = [] if no_events else G.load_events(names, s, e, os.environ, warn)
        result = G.A.compute(nodes, held, waiting, events, s, e, grace=grace)
        rows = G.A.table(result, by, book)
        click.echo(G.render(rows, fields, mode or "table", not noheader, result.downs, tz=local_zone()), nl=False)
        for note in result.notes:
            warn(f"piqc-slurm: gaps: {note}")
        if not no_store and names:
            try:
                G.store(url, result, names, int(time.time()))
            except StoreError as exc:
                warn(f"piqc-slurm: gaps: not kept for the digest: {exc}")
