"""One job's GPU inputs to rules.judge, from its per-GPU rows, without pandas (the Epilog's
report and `seff`). analysis.gpu_inputs computes the same for a whole window with pandas;
tests/unit/test_analyze_inputs.py checks the two agree."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from piqc_slurm.usage.numbers import finite
from piqc_slurm.usage.rules import did_work

NAN = math.nan


def _f(x: Any) -> float:
    """A number, NaN where unknown (what rules.judge reads)."""
    v = finite(x)
    return NAN if v is None else v


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else NAN


def _max(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return max(xs) if xs else NAN


def gpu_inputs(rows: Iterable[Mapping[str, Any]], min_share: float) -> dict[str, float]:
    """rows: summary devices or gpu_usage rows (samples, seconds, active_seconds, util_mean,
    mem_used_max_mib, mem_total_mib, power_mean_w, power_limit_w, power_frac_mean, sm_active_mean,
    tensor_active_mean, dram_active_mean, name)."""
    rows = list(rows)
    sampled = [r for r in rows if (_f(r.get("samples")) or 0) > 0]
    used = [r for r in sampled if did_work({"samples": r.get("samples"), "active_seconds": r.get("active_seconds"),
                                             "seconds": r.get("seconds")}, min_share)]

    def power(r: Mapping[str, Any]) -> float:
        p = _f(r.get("power_frac_mean"))
        return p if not math.isnan(p) else _f(r.get("power_mean_w")) / _f(r.get("power_limit_w"))

    def active(r: Mapping[str, Any]) -> float:
        s = _f(r.get("seconds"))
        return min(max(_f(r.get("active_seconds")) / s, 0.0), 1.0) if s > 0 else NAN

    return {
        "sampled_gpus": float(len(sampled)), "used_gpus": float(len(used)),
        "idle_gpus": float(len(sampled) - len(used)),
        "util_used": _mean([_f(r.get("util_mean")) for r in used]),
        "active_used": _mean([active(r) for r in used]),
        "power_used": _mean([power(r) for r in used]),
        "sm_used": _mean([_f(r.get("sm_active_mean")) for r in used]),
        "tensor_used": _mean([_f(r.get("tensor_active_mean")) for r in used]),
        "dram_used": _mean([_f(r.get("dram_active_mean")) for r in used]),
        "mem_peak_gib": _max([_f(r.get("mem_used_max_mib")) for r in rows]) / 1024.0,
        "mem_total_gib": _max([_f(r.get("mem_total_mib")) for r in rows]) / 1024.0,
        "mig": float(any("MIG" in str(r.get("name") or "").upper() for r in rows)),
    }


def mixed_rates(parts) -> tuple[dict[str | None, float], float] | None:
    """parts: (GPUs, type, USD per GPU-hour) of a job (usage.cost.rated_parts). For GPUs of several
    types: the rate of each type and the allocation's rate (the sum over its GPUs); else None (one
    price: the idle GPUs' share of the count is their share of the cost)."""
    parts = [p for p in parts if p[0] and p[0] > 0]
    if len({t for _, t, _ in parts}) < 2:
        return None
    return {t: float(r) for _, t, r in parts}, float(sum(n * r for n, _, r in parts))


def idle_cost_share(rows: Iterable[Mapping[str, Any]], min_share: float,
                    rates: tuple[dict[str | None, float], float] | None) -> float:
    """The idle GPUs' share of a job's cost when its GPUs are of several types, each at its own
    price (mixed_rates): the idle rows' rates over the allocation's rate. NaN (rules.judge then
    takes the idle GPUs' share of the count) for one type, or a row of a type without a rate."""
    if rates is None or not rates[1] > 0:
        return NAN
    by_type, total = rates
    idle = 0.0
    for r in rows:
        if (_f(r.get("samples")) or 0) > 0 and not did_work(
                {"samples": r.get("samples"), "active_seconds": r.get("active_seconds"), "seconds": r.get("seconds")},
                min_share):
            rate = by_type.get(r.get("gpu_type"))
            if rate is None:
                return NAN
            idle += rate
    return min(idle / total, 1.0)


def node_use(rows: Iterable[Mapping[str, Any]], min_share: float) -> dict[str, float]:
    """rows with a "node" key: how many nodes had a working GPU (used_nodes) and the most working GPUs
    on one (used_per_node), for the advice to a job on several nodes (--gres is per node)."""
    per: dict[Any, int] = {}
    for r in rows:
        if (_f(r.get("samples")) or 0) > 0 and did_work(
                {"samples": r.get("samples"), "active_seconds": r.get("active_seconds"), "seconds": r.get("seconds")},
                min_share):
            per[r.get("node")] = per.get(r.get("node"), 0) + 1
    return {"used_nodes": float(len(per)), "used_per_node": float(max(per.values()))} if per else \
        {"used_nodes": NAN, "used_per_node": NAN}


def job_inputs(*, cost: float, elapsed: float, alloc_gpus: int, started: bool, failed: bool,
               gpus: dict[str, float], rate: float, tflops: float, mem_bw: float, cpu_eff: float = NAN,
               shared: bool = False, runs_before: float = NAN, elapsed_median: float = NAN,
               cost_median: float = NAN) -> dict[str, Any]:
    """Everything rules.judge reads, for one job."""
    return {"cost": cost, "elapsed": float(elapsed), "alloc_gpus": alloc_gpus, "started": int(started),
            "failed": int(failed), **gpus, "rate": rate, "tflops": tflops, "mem_bw": mem_bw, "cpu_eff": cpu_eff,
            "shared": int(shared or bool(gpus.get("mig"))), "runs_before": runs_before,
            "elapsed_median": elapsed_median, "cost_median": cost_median}
