"""The findings' rules: one definition, for the nightly analyzer (pandas Series,
one element per job) and for one job at a time (plain floats: the Epilog's
report and `seff`). Every expression below is written with operators and
the helpers `where`, `lo`, `hi` and `isnum`, which work on both, so the
vectorised analysis and the per-job report cannot disagree.

Inputs per job (NaN where unknown; see docs/findings.md for each):
  cost, elapsed, alloc_gpus, started (0/1), failed (0/1), sampled_gpus, used_gpus,
  idle_gpus, util_used (mean utilization.gpu of the GPUs that worked, %),
  active_used (share of time they were active), power_used (mean power / limit),
  sm_used, tensor_used, dram_used (GPM activity 0..1), mem_peak_gib, mem_total_gib,
  cpu_eff (TotalCPU / (Elapsed x AllocCPUS)), shared (1: MIG, shard or MPS),
  tflops, mem_bw (the job's GPU type), runs_before, elapsed_median, cost_median.

Waste is attributed once, in this order, each code taking from what the ones
before left (docs/findings.md "Order"):
  FAILED_SPEND   the whole cost of a run that started and did not complete
  IDLE_GPUS      the idle GPUs' share of the cost (of its price, idle_cost_share, when the
                 job's GPUs are of several types)
  WRONG_TIER     on the working GPUs' cost: what the cheaper type saves
  INPUT_BOUND    else, on the working GPUs' cost: the share the GPUs waited
  UNDER_BATCHED  else (never with INPUT_BOUND): cost minus the cost at the target
  RUNTIME_REGRESSION  what the run cost above its recurring job's median, from what is left
NO_SAMPLES carries no dollars: nothing is known about the use.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

NAN = float("nan")


# --- scalar-or-Series helpers -------------------------------------------------------
def _series(x: Any) -> bool:
    return hasattr(x, "where") and hasattr(x, "index")


def where(cond: Any, a: Any, b: Any) -> Any:
    """a where cond else b, elementwise for Series, plainly for scalars."""
    for v in (cond, a, b):
        if _series(v):
            import pandas as pd

            idx = v.index
            c = cond if _series(cond) else pd.Series(cond, index=idx)
            av = a if _series(a) else pd.Series(a, index=idx, dtype="float64" if isinstance(a, float) else None)
            bv = b if _series(b) else pd.Series(b, index=idx, dtype="float64" if isinstance(b, float) else None)
            return av.where(c.fillna(False).astype(bool), bv)
    return a if bool(cond) else b


def isnum(x: Any) -> Any:
    if _series(x):
        return x.notna()
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def lo(x: Any, floor: float) -> Any:
    return x.clip(lower=floor) if _series(x) else (x if isnum(x) and x >= floor else (floor if isnum(x) else x))


def hi(x: Any, ceil: float) -> Any:
    return x.clip(upper=ceil) if _series(x) else (x if isnum(x) and x <= ceil else (ceil if isnum(x) else x))


def no(x: Any) -> Any:
    """Logical not (`~` on a Python bool is bitwise: ~True == -2)."""
    return ~x if _series(x) else not x


def nz(x: Any, default: float = 0.0) -> Any:
    return x.fillna(default) if _series(x) else (x if isnum(x) else default)


# --- thresholds -----------------------------------------------------------------------
class Thresholds(NamedTuple):
    """The config's [analyze] table: config.py holds the defaults and documents each key;
    docs/findings.md explains how each is used."""

    min_elapsed: float
    ub_sm_max: float
    ub_power_max: float
    ub_power_util_min: float
    ub_util_max: float
    ub_mem_free_min: float
    target_sm: float
    target_power: float
    target_util: float
    ib_cpu_eff_min: float
    ib_util_max: float
    ib_idle_share_min: float
    wt_min_saving: float
    wt_mem_headroom: float
    wt_demand_headroom: float
    wt_sm_max: float
    regression_ratio: float
    regression_min_runs: int

    @classmethod
    def from_config(cls, cfg) -> Thresholds:
        return cls(**{k: cfg[f"analyze.{k}"] for k in cls._fields})


CODES = ("FAILED_SPEND", "IDLE_GPUS", "WRONG_TIER", "INPUT_BOUND", "UNDER_BATCHED", "RUNTIME_REGRESSION",
         "NO_SAMPLES")


# --- the rules ------------------------------------------------------------------------
def judge(j: Any, t: Thresholds, tiers: list[dict] | None = None) -> dict[str, Any]:
    """j: a mapping of the inputs (Series or scalars). tiers: cheaper candidate types, each
    {"type", "rate", "mem_gib", "tflops", "mem_bw"} (usage.prices' rate, catalog figures).
    Returns columns: for each code a flag and its waste, plus advice and the evidence figures."""
    cost, elapsed, alloc = j["cost"], j["elapsed"], j["alloc_gpus"]
    gpu_job = (alloc > 0) & (j["started"] > 0)
    long_enough = elapsed >= t.min_elapsed
    sampled = nz(j["sampled_gpus"]) > 0
    per_gpu = gpu_job & sampled & long_enough & (nz(j["shared"]) < 1)

    # FAILED_SPEND: the run bought no result
    failed = gpu_job & (j["failed"] > 0)
    w_failed = where(failed, cost, 0.0)
    left = cost - w_failed

    # NO_SAMPLES: a GPU job long enough to be sampled, with no sampler data
    no_samples = gpu_job & no(sampled) & long_enough

    # IDLE_GPUS: allocated GPUs that did no work over the job (usage.rules.did_work)
    idle_n = nz(j["idle_gpus"])
    used_n = nz(j["used_gpus"])
    alloc_seen = where(alloc > j["sampled_gpus"], alloc, nz(j["sampled_gpus"]))
    idle = per_gpu & (idle_n > 0)
    idle_share = where(alloc_seen > 0, hi(idle_n / lo(alloc_seen, 1), 1.0), 0.0)
    # GPUs of several types (a job across an h100 and an l40s node): the idle ones' share of the price
    cost_share = j.get("idle_cost_share")
    if cost_share is not None:
        idle_share = where(isnum(cost_share), cost_share, idle_share)
    w_idle = where(idle, left * idle_share, 0.0)
    left = left - w_idle
    working = per_gpu & (used_n > 0) & no(failed)

    # the working GPUs' activity, from the strongest evidence there is
    has_gpm = isnum(j["sm_used"])
    has_power = isnum(j["power_used"])
    util, power, sm, tensor, dram = j["util_used"], j["power_used"], j["sm_used"], j["tensor_used"], j["dram_used"]
    mem_free = where(isnum(j["mem_total_gib"]) & (nz(j["mem_total_gib"]) > 0),
                     1 - nz(j["mem_peak_gib"]) / lo(nz(j["mem_total_gib"], 1.0), 1e-9), NAN)

    # WRONG_TIER: the cheapest type whose memory holds the peak with headroom and whose compute and
    # bandwidth cover the demand; demand from GPM (tensor activity x peak, DRAM activity x bandwidth,
    # confidence high) else utilization x peak (conservative, confidence low)
    demand_tflops = where(has_gpm, nz(tensor) * j["tflops"], nz(util) / 100.0 * j["tflops"])
    demand_bw = where(has_gpm, nz(dram) * j["mem_bw"], nz(util) / 100.0 * j["mem_bw"])
    sm_ok = where(has_gpm, nz(sm) < t.wt_sm_max, True)
    best_rate, best_type, best_save = NAN, "", 0.0
    wt_base = working & sm_ok & isnum(j["mem_peak_gib"]) & isnum(j["rate"])
    for c in tiers or ():
        fits = (wt_base & (c["mem_gib"] >= nz(j["mem_peak_gib"]) * (1 + t.wt_mem_headroom))
                & (c["tflops"] >= demand_tflops * (1 + t.wt_demand_headroom))
                & (c["mem_bw"] >= demand_bw * (1 + t.wt_demand_headroom)) & (c["rate"] < nz(j["rate"], 0.0)))
        save = where(fits, 1 - c["rate"] / lo(nz(j["rate"], 1.0), 1e-9), 0.0)
        better = save > best_save
        best_save = where(better, save, best_save)
        best_type = where(better, c["type"], best_type)
        best_rate = where(better, c["rate"], best_rate)
    wrong_tier = working & (best_save >= t.wt_min_saving)
    w_tier = where(wrong_tier, left * best_save, 0.0)

    # INPUT_BOUND: low activity while the CPUs are saturated, or long idle stretches between bursts
    cpu_bound = nz(j["cpu_eff"]) >= t.ib_cpu_eff_min
    waits = (1 - nz(j["active_used"], 1.0)) >= t.ib_idle_share_min
    input_bound = working & no(wrong_tier) & (nz(util, 100.0) < t.ib_util_max) & (cpu_bound | waits)
    ib_eff = hi(nz(util) / t.target_util, 1.0)
    w_input = where(input_bound, left * (1 - ib_eff), 0.0)

    # UNDER_BATCHED: GPUs in use doing a fraction of the work they could; the evidence ladder
    by_sm = has_gpm & (nz(sm, 1.0) < t.ub_sm_max)
    by_power = no(has_gpm) & has_power & (nz(util) >= t.ub_power_util_min) & (nz(power, 1.0) < t.ub_power_max)
    by_util = (no(has_gpm) & no(by_power) & (nz(util, 100.0) < t.ub_util_max)
               & (nz(mem_free, 0.0) >= t.ub_mem_free_min))
    # below ib_util_max a job may be waiting for its CPUs: without CPU time (the Epilog has none) it
    # cannot be told from INPUT_BOUND, so it is left to `analyze`, which reads sacct's TotalCPU
    knowable = (nz(util, 100.0) >= t.ib_util_max) | isnum(j["cpu_eff"])
    under = working & no(wrong_tier) & no(input_bound) & knowable & (by_sm | by_power | by_util)
    ub_eff = where(by_sm, nz(sm) / t.target_sm,
                   where(by_power, nz(power) / t.target_power, nz(util) / t.target_util))
    ub_eff = hi(lo(ub_eff, 0.0), 1.0)
    w_under = where(under, left * (1 - ub_eff), 0.0)
    left = left - w_tier - w_input - w_under

    # RUNTIME_REGRESSION: a completed run of a recurring job far slower or costlier than its median
    history = nz(j["runs_before"]) >= t.regression_min_runs
    slow = nz(elapsed) >= t.regression_ratio * nz(j["elapsed_median"], math.inf)
    dear = nz(cost) >= t.regression_ratio * nz(j["cost_median"], math.inf)
    regression = gpu_job & no(failed) & history & (slow | dear)
    w_reg = where(regression, hi(lo(cost - nz(j["cost_median"]), 0.0), 1e18), 0.0)
    w_reg = where(w_reg > left, left, w_reg)

    advice_gpus = where(idle & (used_n > 0), used_n, NAN)
    factor = where(under, ub_eff, where(input_bound, ib_eff, 1.0))   # EstElapsed = elapsed x factor
    return {
        "FAILED_SPEND": failed, "w_FAILED_SPEND": w_failed,
        "IDLE_GPUS": idle, "w_IDLE_GPUS": w_idle,
        "WRONG_TIER": wrong_tier, "w_WRONG_TIER": w_tier,
        "INPUT_BOUND": input_bound, "w_INPUT_BOUND": w_input,
        "UNDER_BATCHED": under, "w_UNDER_BATCHED": w_under,
        "RUNTIME_REGRESSION": regression, "w_RUNTIME_REGRESSION": w_reg,
        "NO_SAMPLES": no_samples, "w_NO_SAMPLES": where(no_samples, 0.0, 0.0),
        "advice_gpus": advice_gpus, "advice_tier": where(wrong_tier, best_type, ""), "tier_rate": best_rate,
        "tier_saving": best_save,
        "est_factor": factor, "ub_evidence": where(by_sm, "gpm", where(by_power, "power", "util")),
        "ib_evidence": where(cpu_bound, "cpu", "waits"), "tier_confidence": where(has_gpm, "high", "low"),
        "demand_tflops": demand_tflops, "demand_bw": demand_bw, "mem_free": mem_free,
    }
