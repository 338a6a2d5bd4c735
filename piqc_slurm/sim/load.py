"""`piqc-slurm simulate`: a scenario into the store through the same code as real data.

- Each sampled GPU job's `gpu_load` becomes per-GPU aggregates through the
  sampler's own streaming aggregation (sampler.aggregate.GpuAggregate): a
  constant stretch is ONE span (`add_span`), not a sample per second, so a
  week costs the same as a minute; no sleeping, no files, no fsync. The
  aggregates become a summary through the Epilog's own builder
  (summary.build), and the summary goes into the store through the same
  upsert ingest uses for spooled summaries.
- Job records go through ingest's own upsert (store.jobs.upsert_jobs), as
  sacct records would, with AllocTRES written as sacct prints it.
- Nodes go into the GPU inventory (source `scenario`); the scenario's
  prices and catalog overrides are stored for its cluster, where every later
  command's price lookup finds them first (usage/prices.py).

Synthetic readings: utilization is `util` (phases as spans), memory used
`mem_gib`, memory utilization `mem_util` (else 0), power `power_frac` x the
type's power limit, else what the fake driver draws (60 W idle plus util%
of the range up to the limit), the GPM-style activities when given. GPUs
of the job not named in a load are idle: util 0, no memory, no process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from piqc_slurm.sampler.aggregate import GpuAggregate, Sample
from piqc_slurm.sim.scenario import Job, Load, Node, Scenario, iter_spans
from piqc_slurm.store.inventory import note_gpus
from piqc_slurm.store.jobs import upsert_jobs
from piqc_slurm.store.overrides import replace_overrides
from piqc_slurm.store.summaries import link_summaries, upsert_summary
from piqc_slurm.summary import build
from piqc_slurm.usage.catalog import Catalog

IDLE_W = 60.0          # the fake driver's idle draw (docker-slurm/fakenvml), for power without power_frac
INTERVAL = 1.0         # the nominal sampling interval a simulated job stands for
BATCH = 500


def _power(load: Load | None, util: float, limit_w: float | None) -> float | None:
    if limit_w is None:
        return None
    if load is not None and load.power_frac is not None:
        return load.power_frac * limit_w
    idle = min(IDLE_W, limit_w)
    return idle + (limit_w - idle) * util / 100.0


def _gpu_aggregate(job: Job, load: Load | None, limit_w: float | None, active_util: float) -> GpuAggregate:
    agg = GpuAggregate(INTERVAL, process_interval=10.0, active_util=active_util, power_limit_w=limit_w)
    start, end = int(job.start or 0), int(job.end or 0)
    if load is None:
        agg.add_span(end - start, Sample(util=0.0, mem_util=0.0, mem_used_mib=0.0, power_w=_power(None, 0.0, limit_w)))
        agg.add_process_span(end - start, False, False)
        return agg
    for seconds, util in iter_spans(load, start, end):
        agg.add_span(seconds, Sample(util=util, mem_util=load.mem_util if load.mem_util is not None else 0.0,
                                     mem_used_mib=load.mem_gib * 1024.0, power_w=_power(load, util, limit_w),
                                     sm_active=load.sm_active, tensor_active=load.tensor_active,
                                     dram_active=load.dram_active))
    agg.add_process_span(end - start, load.process, load.process)
    return agg


def summary_for(job: Job, node: Node, cluster: str, catalog: Catalog, *, active_util: float,
                min_share: float) -> dict:
    """The Epilog summary this job's node would have spooled."""
    gpu_type = catalog.canonical(node.gpu_type) or node.gpu_type
    spec = catalog.spec(gpu_type)
    limit = float(spec.power_w) if spec is not None and spec.power_w else None
    mem_total = float(spec.mem_gib) * 1024.0 if spec is not None and spec.mem_gib else None
    by_gpu = {g: load for load in job.gpu_load for g in load.gpus}
    gpus = []
    for g in job.gpu_indices:
        agg = _gpu_aggregate(job, by_gpu.get(g), limit, active_util)
        gpus.append({"minor": g, "index": g, "uuid": f"GPU-sim-{cluster}-{node.name}-{g}",
                     "name": f"simulated {spec.name if spec is not None else gpu_type}",
                     "mem_total_mib": mem_total, "power_limit_w": limit, "lost": False, "agg": agg.to_dict()})
    checkpoint = {"nvml": {"ok": True, "driver": "simulated"}, "started": float(job.start), "gpus": gpus,
                  "final": True, "exit_reason": "job ended", "timeline_bins": 0}
    doc = {"cluster": cluster, "job_id": job.job_id, "restart_count": job.restarts, "node": node.name,
           "uid": None, "user": job.user, "account": job.account, "partition": job.partition,
           "gpus": list(job.gpu_indices), "exit_code": job.exit_code, "prolog_time": float(job.start)}
    s = build(doc, checkpoint, ended=float(job.end), partial=False, partial_reason=None, monitor="on",
              interval=INTERVAL, catalog=catalog, min_share=min_share)
    for d in s["devices"]:  # a simulated device's name is not NVML's: its type comes from the node
        d["gpu_type"] = gpu_type
    return s


def _tres(job: Job, node: Node | None) -> str:
    if job.start is None or node is None:
        return ""
    parts = [f"billing={job.cpus}", f"cpu={job.cpus}"]
    n = len(job.gpu_indices)
    if n:
        parts += [f"gres/gpu:{node.gpu_type}={n}", f"gres/gpu={n}"]
    parts.append("node=1")
    return ",".join(parts)


def job_row(job: Job, node: Node | None, cluster: str) -> dict:
    """The `jobs` row a sacct record of this job would give."""
    started = job.start is not None and node is not None
    elapsed = (job.end - job.start) if started and job.end is not None else 0
    return {
        "cluster": cluster, "job_id_raw": job.job_id, "submit": job.submit, "job_id": str(job.job_id),
        "name": job.name, "user": job.user, "account": job.account, "partition": job.partition,
        "state": job.state, "exit_code": job.exit_code, "derived_exit_code": "0:0", "eligible": job.eligible,
        "start": job.start, "end": job.end, "elapsed": elapsed, "timelimit": job.timelimit,
        "alloc_cpus": job.cpus if started else 0, "alloc_nodes": 1 if started else 0,
        "alloc_gpus": len(job.gpu_indices) if started else 0,
        "gpu_type": node.gpu_type if started and job.gpu_indices else None,
        "alloc_tres": _tres(job, node), "nodelist": node.name if started else "", "comment": job.comment,
        "exit_signal": job.exit_signal if job.exit_signal is not None else _signal(job.exit_code),
        "restarts": job.restarts, "req_gpus": job.req_gpus or len(job.gpu_indices),
        "total_cpu_s": (job.cpus * elapsed * job.cpu_util) if job.cpu_util is not None and started else None,
    }


def _signal(exit_code: str) -> int:
    return int(exit_code.split(":", 1)[1]) if ":" in exit_code else 0


class SimResult:
    __slots__ = ("jobs", "summaries", "nodes", "gpus", "seconds")

    def __init__(self) -> None:
        self.jobs = self.summaries = self.nodes = self.gpus = 0
        self.seconds = 0.0


def simulate(engine: Engine, sc: Scenario, catalog: Catalog, *, active_util: float, min_share: float,
             progress: Callable[[str], None] | None = None) -> SimResult:
    """Load a parsed scenario into the store. Idempotent: loading it again replaces its rows."""
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    res = SimResult()
    cat = catalog.with_overrides(sc.catalog) if sc.catalog else catalog
    nodes = {n.name: n for n in sc.nodes}
    now = int(time.time())
    with Session(engine) as s, s.begin():
        replace_overrides(s, sc.cluster, types=sc.prices, partitions=sc.partition_prices, catalog=sc.catalog)
        for n in sc.nodes:
            gtype = cat.canonical(n.gpu_type) or n.gpu_type
            note_gpus(s, sc.cluster, n.name, [(i, gtype, None, None) for i in range(n.gpus)], "scenario", now)
            res.nodes += 1
            res.gpus += n.gpus
    rows = [job_row(j, nodes.get(j.node) if j.node else None, sc.cluster) for j in sc.jobs]
    with engine.begin() as conn:
        res.jobs = upsert_jobs(conn, rows)
    say(f"{res.jobs:,} job records")
    todo = [j for j in sc.jobs if j.sampled and j.gpu_indices and j.start is not None and j.end is not None
            and j.node]
    for i in range(0, len(todo), BATCH):
        with Session(engine) as s, s.begin():
            for j in todo[i:i + BATCH]:
                upsert_summary(s, summary_for(j, nodes[j.node], sc.cluster, cat, active_util=active_util,
                                              min_share=min_share))
                res.summaries += 1
        if len(todo) > BATCH:
            say(f"{res.summaries:,} of {len(todo):,} summaries")
    with Session(engine) as s, s.begin():
        link_summaries(s)
    res.seconds = time.monotonic() - t0
    return res
