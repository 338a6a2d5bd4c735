"""`piqc-slurm seff JOBID`: one job's GPU efficiency report for a person, in
the spirit of seff and jobstats. Pure rendering; the store query is in
`load_job`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from piqc_slurm.query.gpu import GpuValues
from piqc_slurm.slurm.parse import format_elapsed
from piqc_slurm.store.models import GpuUsage, Job, NodeSummary
from piqc_slurm.usage.cost import money


@dataclass
class JobView:
    job: dict[str, Any]
    summaries: list[dict[str, Any]] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)


def _cols(row) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}


def load_job(session: Session, job_id: str, cluster: str | None = None) -> JobView | None:
    """The newest allocation whose JobID (1234, 1234_5) or JobIDRaw matches."""
    q = select(Job)
    conds = [Job.job_id == job_id]
    if job_id.isascii() and job_id.isdigit():
        conds.append(Job.job_id_raw == int(job_id))
    q = q.where(or_(*conds))
    if cluster:
        q = q.where(Job.cluster == cluster)
    job = session.execute(q.order_by(Job.submit.desc()).limit(1)).scalar_one_or_none()
    if job is None:
        return None
    view = JobView(job=_cols(job))
    for s in session.execute(select(NodeSummary).where(NodeSummary.job_ref == job.id)
                             .order_by(NodeSummary.node)).scalars():
        view.summaries.append({k: v for k, v in _cols(s).items() if k != "doc"})
        for g in session.execute(select(GpuUsage).where(GpuUsage.summary_id == s.id)
                                 .order_by(GpuUsage.minor)).scalars():
            view.gpus.append({**_cols(g), "node": s.node})
    return view


def _hms(seconds: int | float | None) -> str:
    return "-" if seconds is None else format_elapsed(int(seconds))


def _when(t: int | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def render(view: JobView, values: GpuValues, rate: float) -> str:
    """values: the job's GPU fields as `piqc-slurm sacct` computes them (query.gpu.values_for_job);
    rate: its USD per GPU-hour (usage.prices)."""
    j = view.job
    state = j["state"] + (f" by {j['state_by']}" if j.get("state_by") is not None else "")
    ngpu = j["alloc_gpus"] or 0
    cost = money(values.cost_usd)
    lines = [
        f"Job ID: {j['job_id']}   Cluster: {j['cluster']}",
        f"User/Account: {j['user']}/{j['account']}   Partition: {j['partition']}",
        f"Name: {j['name']}",
        f"State: {state} (exit code {j['exit_code']})",
        f"Submit: {_when(j['submit'])}   Start: {_when(j['start'])}   End: {_when(j['end'])}",
        f"Elapsed: {_hms(j['elapsed'])}   Nodes: {j['nodelist'] or '-'}   CPUs: {j['alloc_cpus']}",
        f"GPUs allocated: {ngpu}" + (f" x {j['gpu_type']}" if j.get("gpu_type") else ""),
    ]
    if not ngpu:
        lines.append(f"CPU-only job: no GPU data. Cost: ${cost:,.2f}")
        return "\n".join(lines) + "\n"
    lines.append(f"GPU cost: ${cost:,.2f} ({ngpu} GPU x {_hms(j['elapsed'])} at ${rate:.2f}/GPU-hour)")
    if not view.summaries:
        lines.append("No sampler data for this job (hooks not wired on its nodes, or not ingested yet).")
        return "\n".join(lines) + "\n"
    for s in view.summaries:
        if s["monitor"] == "off":
            lines.append(f"{s['node']}: GPU monitoring switched off by the user.")
        elif not s["nvml_ok"]:
            lines.append(f"{s['node']}: no GPU data: {s['nvml_error'] or s['partial_reason'] or 'unknown'}.")
        elif s["partial"]:
            lines.append(f"{s['node']}: partial data: {s['partial_reason']}.")
    if view.gpus:
        lines.append("")
        lines.append(f"{'node':<12} {'GPU':>3} {'util avg':>9} {'util p95':>9} {'mem peak':>10} {'energy':>10}  note")
        for g in view.gpus:
            note = "lost" if g["lost"] else ("did no work" if g["did_work"] is False else "")
            mem = None if g["mem_used_max_mib"] is None else g["mem_used_max_mib"] / 1024
            kwh = None if g["energy_j"] is None else g["energy_j"] / 3.6e6
            lines.append(f"{g['node']:<12} {g['minor']:>3} {_f(g['util_mean'], '8.1f', '%'):>9} "
                         f"{_f(g['util_p95'], '8.1f', '%'):>9} {_f(mem, '6.1f', ' GiB'):>10} "
                         f"{_f(kwh, '6.3f', ' kWh'):>10}  {note}".rstrip())
        idle = [g for g in view.gpus if g["did_work"] is False]
        used = values.gpus_used or 0
        lines.append("")
        lines.append(f"GPU utilization over the allocation: {values.util_avg or 0:.1f}%   "
                     f"GPUs that did work: {used} of {ngpu}")
        if idle and used == 0:
            lines.append(f"Advice: this job used no GPU ({ngpu} allocated, none did work): "
                         f"${money(values.waste_usd) or 0:,.2f} of its cost bought idle GPUs.")
        elif idle:
            lines.append(f"Advice: {len(idle)} of {ngpu} GPUs did no work: request --gres=gpu:{used} "
                         f"(${money(values.waste_usd) or 0:,.2f} of this job's cost bought idle GPUs).")
    return "\n".join(lines) + "\n"
