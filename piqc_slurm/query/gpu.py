"""The GPU fields of `piqc-slurm sacct`, from the sampler's per-GPU rows.

Every figure is defined once in piqc_slurm/usage/ and only formatted here:

  AllocGPUs   jobs.alloc_gpus (AllocTRES), whatever the sampler saw
  GPUType     jobs.gpu_type (the gres type), else the sampler's one type
  GPUsUsed    GPUs with did_work true (usage.rules)
  GPUUtilAvg  usage.utilization.util_over_allocation: an idle or unsampled
              allocated GPU counts as 0%, a GPU lost half way counts half;
              one decimal
  GPUMemPeak  max mem_used_max_mib / 1024, GiB, two decimals
  GPUEnergy   sum energy_j / 3.6e6, kWh, three decimals
  CostUSD     usage.cost.job_cost with the cluster's prices (usage.prices
              for the lookup order); two decimals, rounded half-up
  WasteUSD, Findings, AdviceGPUs, AdviceTier
              from a FindingsSource. Until `piqc-slurm analyze` keeps
              findings in the store, IdleShareEstimate gives no codes and
              no advice, and WasteUSD = CostUSD x usage.utilization.idle_share.
Without sampler data (no summary, or one with no GPU rows) the sampler
fields print empty (JSON null); AllocGPUs, GPUType and CostUSD do not need
it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from piqc_slurm.query.store import Reader
from piqc_slurm.usage.cost import job_cost, money, money_text, parts_of
from piqc_slurm.usage.prices import PriceBook
from piqc_slurm.usage.utilization import GpuStats, fold, idle_share, util_over_allocation

_STAT_COLUMNS = ("seconds", "util_mean", "did_work", "mem_used_max_mib", "energy_j", "gpu_type")
_GPU_SQL = ('SELECT s."id", {cols}, s."job_ref" FROM node_summaries s JOIN gpu_usage g ON g."summary_id" = s."id" '
            'WHERE s."job_ref" IN ({ids})')


def load_gpu_stats(reader: Reader, job_refs: Sequence[int],
                   columns: Sequence[str] = _STAT_COLUMNS) -> dict[int, GpuStats]:
    """GpuStats per jobs.id for the given ids (absent: no sampler data). `columns`: the gpu_usage
    columns to read (of usage.utilization.ROW_FIELDS); fold sees the others as unset, so a caller
    that prints only some fields reads only their inputs."""
    if not job_refs:
        return {}
    cols = [c for c in _STAT_COLUMNS if c in columns]
    keys = ("node", *cols)  # zip stops there: the row's last value is its job_ref
    params = {f"r{i}": r for i, r in enumerate(job_refs)}
    sql = _GPU_SQL.format(cols=", ".join([f'g."{c}"' for c in cols] or ["1"]),
                          ids=", ".join(f":{k}" for k in params))
    by_job: dict[int, list[dict]] = {}
    for row in reader.all(sql, params):
        ref = row[-1]
        d = dict(zip(keys, row))  # noqa: B905 - shorter on purpose (job_ref left out)
        rows = by_job.get(ref)
        if rows is None:
            by_job[ref] = [d]
        else:
            rows.append(d)
    return {ref: fold(rows) for ref, rows in by_job.items()}


def load_price_book(reader: Reader, cfg) -> PriceBook:
    """The config's prices and catalog plus every cluster's stored overrides."""
    from piqc_slurm.store.overrides import load_overrides
    from piqc_slurm.usage.catalog import load_catalog

    if cfg is None:
        from piqc_slurm.config import Config, defaults

        cfg = Config(defaults())
    return PriceBook(cfg, load_catalog(), load_overrides(lambda query: reader.all(query, {})))


@dataclass(frozen=True)
class JobFindings:
    codes: tuple[str, ...] = ()
    waste_usd: float | None = None
    advice_gpus: int | None = None
    advice_tier: str | None = None
    est_elapsed: int | None = None


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
            share = idle_share(j.stats, j.alloc_gpus)
            if share is not None:
                out[j.ref] = JobFindings(waste_usd=j.cost_usd * share)
        return out


_CODE_ORDER = ("FAILED_SPEND", "IDLE_GPUS", "WRONG_TIER", "INPUT_BOUND", "UNDER_BATCHED", "RUNTIME_REGRESSION",
               "NO_SAMPLES")  # analyze.rules.CODES: the order waste is attributed in


class StoredFindings:
    """Findings from the store (`piqc-slurm analyze`). A job whose End lies in an analysed window and
    has no finding is clean (WasteUSD 0.00); a job never analysed falls back to IdleShareEstimate."""

    _FINDINGS = ('SELECT "job_ref", "code", "waste_usd", "advice_gpus", "advice_tier", "est_elapsed" FROM findings '
                 'WHERE "job_ref" IN ({ids})')
    _JUDGED = ('SELECT j."id" FROM jobs j WHERE j."id" IN ({ids}) AND EXISTS (SELECT 1 FROM analysis_runs r '
               'WHERE j."end" >= r."since" AND j."end" < r."until")')

    def for_jobs(self, reader: Reader, jobs: Sequence[JobGpu]) -> Mapping[int, JobFindings]:
        if not jobs:
            return {}
        params = {f"r{i}": j.ref for i, j in enumerate(jobs)}
        ids = ", ".join(f":{k}" for k in params)
        judged = {r[0] for r in reader.all(self._JUDGED.format(ids=ids), params)}
        rows: dict[int, list[tuple]] = {}
        for ref, code, waste, agpus, tier, est in reader.all(self._FINDINGS.format(ids=ids), params):
            rows.setdefault(ref, []).append((code, waste, agpus, tier, est))
        fallback = IdleShareEstimate().for_jobs(reader, [j for j in jobs if j.ref not in judged and j.ref not in rows])
        out: dict[int, JobFindings] = dict(fallback)
        for j in jobs:
            found = rows.get(j.ref)
            if found is None:
                if j.ref in judged:
                    out[j.ref] = JobFindings(waste_usd=0.0)
                continue
            found.sort(key=lambda f: _CODE_ORDER.index(f[0]) if f[0] in _CODE_ORDER else 99)
            out[j.ref] = JobFindings(
                codes=tuple(f[0] for f in found), waste_usd=sum(float(f[1] or 0) for f in found),
                advice_gpus=next((int(f[2]) for f in found if f[2] is not None), None),
                advice_tier=next((f[3] for f in found if f[3]), None),
                est_elapsed=next((int(f[4]) for f in found if f[4] is not None), None))
        return out


def _elapsed_text(seconds: int) -> str:
    from piqc_slurm.slurm.parse import format_elapsed

    return format_elapsed(max(int(seconds), 0))


def price_type(gpu_type: str | None, stats: GpuStats | None) -> str | None:
    """The job's GPU type: Slurm's gres type, else the one type the sampler saw."""
    if gpu_type:
        return gpu_type
    if stats is not None and len(stats.types) == 1:
        return next(iter(stats.types))
    return None


def job_gpu(ref: int, *, cluster: str, alloc_gpus: int, gpu_type: str | None, alloc_tres: str, elapsed_s: int,
            partition: str, cpus: int, stats: GpuStats | None, book: PriceBook) -> JobGpu:
    """One job's inputs to its GPU fields, priced by usage.cost (the one definition of cost)."""
    gtype = price_type(gpu_type, stats)
    cost = job_cost(parts_of(alloc_gpus, gtype, alloc_tres), elapsed_s, book.for_cluster(cluster),
                    partition=partition, cpus=cpus)
    return JobGpu(ref=ref, alloc_gpus=alloc_gpus, gpu_type=gtype, cost_usd=cost.usd, stats=stats)


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
    est_elapsed: int | None = None

    def typed(self) -> dict[str, Any]:
        return {
            "AllocGPUs": self.alloc_gpus, "GPUType": self.gpu_type, "GPUsUsed": self.gpus_used,
            "GPUUtilAvg": None if self.util_avg is None else round(self.util_avg, 1),
            "GPUMemPeak": None if self.mem_peak_gib is None else round(self.mem_peak_gib, 2),
            "GPUEnergy": None if self.energy_kwh is None else round(self.energy_kwh, 3),
            "CostUSD": money(self.cost_usd),
            "WasteUSD": money(self.waste_usd),
            "Findings": list(self.findings), "AdviceGPUs": self.advice_gpus, "AdviceTier": self.advice_tier,
            "EstElapsed": self.est_elapsed,
        }

    def text(self, only: Collection[str] | None = None) -> dict[str, str]:
        """Each field as a table prints it; `only`: just those fields (a listing renders only what
        it prints: money() per line adds up over 25,000 lines)."""
        return {k: f(self) for k, f in _TEXT.items() if only is None or k in only}


def _num(v: float | None, nd: int) -> str:
    return "" if v is None else f"{v:.{nd}f}"


_TEXT: dict[str, Callable[[GpuValues], str]] = {
    "AllocGPUs": lambda v: str(v.alloc_gpus), "GPUType": lambda v: v.gpu_type or "",
    "GPUsUsed": lambda v: "" if v.gpus_used is None else str(v.gpus_used),
    "GPUUtilAvg": lambda v: _num(v.util_avg, 1), "GPUMemPeak": lambda v: _num(v.mem_peak_gib, 2),
    "GPUEnergy": lambda v: _num(v.energy_kwh, 3), "CostUSD": lambda v: money_text(v.cost_usd),
    "WasteUSD": lambda v: money_text(v.waste_usd), "Findings": lambda v: ",".join(v.findings),
    "AdviceGPUs": lambda v: "" if v.advice_gpus is None else str(v.advice_gpus),
    "AdviceTier": lambda v: v.advice_tier or "",
    "EstElapsed": lambda v: "" if v.est_elapsed is None else _elapsed_text(v.est_elapsed),
}


# What each added field reads: the gpu_usage columns (load_gpu_stats) and whether the findings.
# A listing that prints some of them reads only these (gpu_values leaves the rest unset).
FIELD_STATS: dict[str, tuple[str, ...]] = {
    "AllocGPUs": (), "GPUType": ("gpu_type",), "GPUsUsed": ("did_work",),
    "GPUUtilAvg": ("seconds", "util_mean"), "GPUMemPeak": ("mem_used_max_mib",), "GPUEnergy": ("energy_j",),
    "CostUSD": ("gpu_type",),  # price_type: the one type the sampler saw when Slurm named none
    "WasteUSD": ("did_work",), "Findings": (), "AdviceGPUs": (), "AdviceTier": (), "EstElapsed": (),
}
FINDINGS_FIELDS = frozenset({"WasteUSD", "Findings", "AdviceGPUs", "AdviceTier", "EstElapsed"})


def stats_columns(names: Iterable[str]) -> tuple[str, ...]:
    """The gpu_usage columns the added fields `names` need (GPUType and CostUSD: gpu_type)."""
    wanted = {c for n in names for c in FIELD_STATS.get(n, ())}
    return tuple(c for c in _STAT_COLUMNS if c in wanted)


def gpu_values(job: JobGpu, found: JobFindings | None) -> GpuValues:
    st = job.stats if job.stats is not None and job.stats.gpus > 0 else None
    alloc = job.alloc_gpus
    util = util_over_allocation(st, alloc)
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
        est_elapsed=None if found is None else found.est_elapsed,
    )


def values_for_job(reader: Reader, job: Mapping[str, Any], book: PriceBook, now: int | None = None,
                   findings: FindingsSource | None = None) -> GpuValues:
    """One job's GPU values (job: its `jobs` row as a dict), as `sacct` computes them: seff uses this."""
    ref = job["id"]
    st = load_gpu_stats(reader, [ref]).get(ref)
    elapsed = job["elapsed"] or 0
    if job.get("start") and not job.get("end") and now is not None:
        elapsed = max(now - job["start"], 0)  # still running: so far
    j = job_gpu(ref, cluster=job["cluster"], alloc_gpus=job["alloc_gpus"] or 0, gpu_type=job["gpu_type"],
                alloc_tres=job["alloc_tres"] or "", elapsed_s=elapsed, partition=job["partition"] or "",
                cpus=job["alloc_cpus"] or 0, stats=st, book=book)
    found = (findings or StoredFindings()).for_jobs(reader, [j]).get(ref)
    return gpu_values(j, found)
