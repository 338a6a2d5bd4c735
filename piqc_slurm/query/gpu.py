"""The GPU fields of `piqc-slurm sacct`, from the sampler's per-GPU rows.

A job's GPUs are the gpu_usage rows of every node summary joined to it
(node_summaries.job_ref = jobs.id): one row per GPU per node.

  AllocGPUs   jobs.alloc_gpus (AllocTRES), whatever the sampler saw
  GPUType     jobs.gpu_type (the gres type), else the sampler's one type
  GPUsUsed    GPUs with did_work true
  GPUUtilAvg  sum over sampled GPUs of util_mean x (its sampled seconds /
              the longest sampled GPU of its node), divided by the
              ALLOCATED GPU count (at least the sampled count): an idle or
              unsampled allocated GPU counts as 0%, a GPU lost half way
              counts half; one decimal
  GPUMemPeak  max mem_used_max_mib / 1024, GiB, two decimals
  GPUEnergy   sum energy_j / 3.6e6, kWh, three decimals
  CostUSD     AllocGPUs x Elapsed hours x price (config [prices], then the
              catalog, then prices.default); two decimals
  WasteUSD, Findings, AdviceGPUs, AdviceTier
              from a FindingsSource. Until `piqc-slurm analyze` keeps
              findings in the store, IdleShareEstimate gives no codes and
              no advice, and WasteUSD = CostUSD x (GPUs that did no work /
              AllocGPUs). A findings-table source replaces it by
              implementing FindingsSource.for_jobs.
Without sampler data (no summary, or one with no GPU rows) the sampler
fields print empty (JSON null); AllocGPUs, GPUType and CostUSD do not need
it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from piqc_slurm.query.store import Reader


@dataclass
class GpuStats:
    gpus: int = 0                 # sampled GPU rows
    used: int = 0                 # did_work true
    idle: int = 0                 # did_work false
    util_sum: float = 0.0         # sum of time-weighted util_mean
    mem_peak_mib: float | None = None
    energy_j: float | None = None
    types: set[str] = field(default_factory=set)


_GPU_SQL = ('SELECT s."job_ref", s."id", g."seconds", g."util_mean", g."did_work", g."mem_used_max_mib", '
            'g."energy_j", g."gpu_type" FROM node_summaries s JOIN gpu_usage g ON g."summary_id" = s."id" '
            'WHERE s."job_ref" IN ({ids})')


def load_gpu_stats(reader: Reader, job_refs: Sequence[int]) -> dict[int, GpuStats]:
    """GpuStats per jobs.id for the given ids (absent: no sampler data)."""
    if not job_refs:
        return {}
    params = {f"r{i}": r for i, r in enumerate(job_refs)}
    rows = reader.all(_GPU_SQL.format(ids=", ".join(f":{k}" for k in params)), params)
    longest: dict[int, float] = {}
    for _ref, sid, seconds, *_rest in rows:
        longest[sid] = max(longest.get(sid, 0.0), float(seconds or 0.0))
    out: dict[int, GpuStats] = {}
    for ref, sid, seconds, util, did_work, mem_max, energy, gtype in rows:
        st = out.setdefault(ref, GpuStats())
        st.gpus += 1
        if did_work is not None:
            if bool(did_work):
                st.used += 1
            else:
                st.idle += 1
        if util is not None:
            span = longest.get(sid, 0.0)
            weight = min(1.0, float(seconds or 0.0) / span) if span > 0 else 1.0
            st.util_sum += float(util) * weight
        if mem_max is not None:
            st.mem_peak_mib = max(st.mem_peak_mib or 0.0, float(mem_max))
        if energy is not None:
            st.energy_j = (st.energy_j or 0.0) + float(energy)
        if gtype:
            st.types.add(gtype)
    return out


@dataclass(frozen=True)
class JobFindings:
    codes: tuple[str, ...] = ()
    waste_usd: float | None = None
    advice_gpus: int | None = None
    advice_tier: str | None = None


@dataclass
class JobGpu:
    """What the findings source is given for one job."""

    ref: int
    alloc_gpus: int
    gpu_type: str | None
    cost_usd: float
    stats: GpuStats | None


class FindingsSource(Protocol):
    def for_jobs(self, reader: Reader, jobs: Sequence[JobGpu]) -> Mapping[int, JobFindings]:
        """Findings per jobs.id; a job left out has none (and no known waste)."""
        ...


class IdleShareEstimate:
    """The stand-in until findings are stored: WasteUSD from the GPUs that did no work."""

    def for_jobs(self, reader: Reader, jobs: Sequence[JobGpu]) -> Mapping[int, JobFindings]:
        out = {}
        for j in jobs:
            if j.stats is None or j.stats.gpus == 0:
                continue
            alloc = max(j.alloc_gpus, j.stats.gpus)
            share = min(j.stats.idle, alloc) / alloc if alloc else 0.0
            out[j.ref] = JobFindings(waste_usd=j.cost_usd * share)
        return out


def price_type(gpu_type: str | None, stats: GpuStats | None) -> str | None:
    if gpu_type:
        return gpu_type
    if stats is not None and len(stats.types) == 1:
        return next(iter(stats.types))
    return None


def cost_usd(alloc_gpus: int, elapsed_s: int, gpu_type: str | None, prices: Mapping[str, float]) -> float:
    if alloc_gpus <= 0 or elapsed_s <= 0:
        return 0.0
    from piqc_slurm.catalog import price

    return alloc_gpus * (elapsed_s / 3600.0) * price(gpu_type, dict(prices))


@dataclass(frozen=True)
class GpuValues:
    """A job's added fields, typed (JSON) — text() gives what a table prints."""

    alloc_gpus: int
    gpu_type: str | None
    gpus_used: int | None
    util_avg: float | None
    mem_peak_gib: float | None
    energy_kwh: float | None
    cost_usd: float
    waste_usd: float | None
    findings: tuple[str, ...]
    advice_gpus: int | None
    advice_tier: str | None

    def typed(self) -> dict[str, Any]:
        return {
            "AllocGPUs": self.alloc_gpus, "GPUType": self.gpu_type, "GPUsUsed": self.gpus_used,
            "GPUUtilAvg": None if self.util_avg is None else round(self.util_avg, 1),
            "GPUMemPeak": None if self.mem_peak_gib is None else round(self.mem_peak_gib, 2),
            "GPUEnergy": None if self.energy_kwh is None else round(self.energy_kwh, 3),
            "CostUSD": round(self.cost_usd, 2),
            "WasteUSD": None if self.waste_usd is None else round(self.waste_usd, 2),
            "Findings": list(self.findings), "AdviceGPUs": self.advice_gpus, "AdviceTier": self.advice_tier,
        }

    def text(self) -> dict[str, str]:
        def num(v: float | None, nd: int) -> str:
            return "" if v is None else f"{v:.{nd}f}"
        return {
            "AllocGPUs": str(self.alloc_gpus), "GPUType": self.gpu_type or "",
            "GPUsUsed": "" if self.gpus_used is None else str(self.gpus_used),
            "GPUUtilAvg": num(self.util_avg, 1), "GPUMemPeak": num(self.mem_peak_gib, 2),
            "GPUEnergy": num(self.energy_kwh, 3), "CostUSD": num(self.cost_usd, 2),
            "WasteUSD": num(self.waste_usd, 2), "Findings": ",".join(self.findings),
            "AdviceGPUs": "" if self.advice_gpus is None else str(self.advice_gpus),
            "AdviceTier": self.advice_tier or "",
        }


def gpu_values(job: JobGpu, found: JobFindings | None) -> GpuValues:
    st = job.stats if job.stats is not None and job.stats.gpus > 0 else None
    alloc = job.alloc_gpus
    util = None
    if st is not None:
        util = st.util_sum / max(alloc, st.gpus)
    return GpuValues(
        alloc_gpus=alloc,
        gpu_type=price_type(job.gpu_type, st),
        gpus_used=None if st is None else st.used,
        util_avg=util,
        mem_peak_gib=None if st is None or st.mem_peak_mib is None else st.mem_peak_mib / 1024.0,
        energy_kwh=None if st is None or st.energy_j is None else st.energy_j / 3.6e6,
        cost_usd=job.cost_usd,
        waste_usd=None if found is None else found.waste_usd,
        findings=() if found is None else found.codes,
        advice_gpus=None if found is None else found.advice_gpus,
        advice_tier=None if found is None else found.advice_tier,
    )


def values_for_job(reader: Reader, ref: int, alloc_gpus: int, elapsed_s: int, gpu_type: str | None,
                   prices: Mapping[str, float], findings: FindingsSource | None = None) -> GpuValues:
    """One job's GPU values, as `sacct` computes them (seff uses this, so the two agree)."""
    st = load_gpu_stats(reader, [ref]).get(ref)
    gtype = price_type(gpu_type, st)
    job = JobGpu(ref=ref, alloc_gpus=alloc_gpus, gpu_type=gtype, stats=st,
                 cost_usd=cost_usd(alloc_gpus, elapsed_s, gtype, prices))
    found = (findings or IdleShareEstimate()).for_jobs(reader, [job]).get(ref)
    return gpu_values(job, found)
