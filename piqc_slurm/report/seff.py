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


def stored_findings(session: Session, job: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The job's findings as `analyze` stored them, in the order waste is attributed; None if no
    analysed window holds the job (an empty list: analysed, clean)."""
    from piqc_slurm.analyze.rules import CODES
    from piqc_slurm.store.models import AnalysisRun, Finding

    if job.get("end") is None:
        return None
    judged = session.execute(select(AnalysisRun.id).where(AnalysisRun.since <= job["end"],
                                                          AnalysisRun.until > job["end"]).limit(1)).first()
    rows = session.execute(select(Finding).where(Finding.job_ref == job["id"])).scalars().all()
    if judged is None and not rows:
        return None
    out = [{"code": r.code, "sentence": r.sentence, "advice": r.advice, "waste_usd": r.waste_usd} for r in rows]
    return sorted(out, key=lambda f: CODES.index(f["code"]) if f["code"] in CODES else 99)


def judge_job(view: JobView, cost: float, rate: float, prices, cfg) -> list[dict[str, Any]]:
    """The analysis's rules on this one job, from its stored GPU rows (before `analyze` has run)."""
    import math

    from piqc_slurm.analyze.explain import findings
    from piqc_slurm.analyze.inputs import gpu_inputs, job_inputs
    from piqc_slurm.analyze.rules import Thresholds, judge
    from piqc_slurm.usage.outcome import failed, side

    j = view.job
    spec = prices.catalog.spec(j["gpu_type"]) if j.get("gpu_type") else None
    cpus, elapsed = j.get("alloc_cpus") or 0, j.get("elapsed") or 0
    cpu_eff = (j["total_cpu_s"] / (elapsed * cpus)) if j.get("total_cpu_s") is not None and elapsed and cpus \
        else math.nan
    started = j.get("start") is not None
    inp = job_inputs(cost=cost, elapsed=elapsed, alloc_gpus=j.get("alloc_gpus") or 0, started=started,
                     failed=failed(j.get("state"), started), gpus=gpu_inputs(view.gpus, cfg["usage.min_active_share"]),
                     rate=rate, tflops=float(spec.bf16_tflops) if spec and spec.bf16_tflops else math.nan,
                     mem_bw=float(spec.mem_bw_gbs) if spec and spec.mem_bw_gbs else math.nan, cpu_eff=cpu_eff)
    v = judge(inp, Thresholds.from_config(cfg), [])
    return findings({**j, **inp, "side": side(j.get("state")), "node": (j.get("nodelist") or "").split(",")[0]},
                    v, cfg["usage.min_active_share"], cfg["sampler.active_util"])


def _hms(seconds: int | float | None) -> str:
    return "-" if seconds is None else format_elapsed(int(seconds))


def _when(t: int | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def render(view: JobView, values: GpuValues, rate: float, found: list[dict] | None = None,
           stored: bool = False) -> str:
    """values: the job's GPU fields as `piqc-slurm sacct` computes them (query.gpu.values_for_job);
    rate: its USD per GPU-hour (usage.prices); found: its findings (stored by analyze, else
    `judge_job`'s), each with code, sentence and advice."""
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
        used = values.gpus_used or 0
        lines.append("")
        lines.append(f"GPU utilization over the allocation: {values.util_avg or 0:.1f}%   "
                     f"GPUs that did work: {used} of {ngpu}")
    if found:
        lines.append("")
        source = ("from `piqc-slurm analyze`" if stored
                  else "the analysis rules on this job; `piqc-slurm analyze` adds tiers and regressions")
        lines.append(f"Findings ({source}):")
        for f in found:
            lines.append(f"{f['code']}: {f['sentence']}")
            lines.append(f"  Advice: {f['advice']}")
    return "\n".join(lines) + "\n"
