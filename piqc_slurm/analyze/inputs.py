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


def job_inputs(*, cost: float, elapsed: float, alloc_gpus: int, started: bool, failed: bool,
               gpus: dict[str, float], rate: float, tflops: float, mem_bw: float, cpu_eff: float = NAN,
               shared: bool = False, runs_before: float = NAN, elapsed_median: float = NAN,
               cost_median: float = NAN) -> dict[str, Any]:
    """Everything rules.judge reads, for one job."""
    return {"cost": cost, "elapsed": float(elapsed), "alloc_gpus": alloc_gpus, "started": int(started),
            "failed": int(failed), **gpus, "rate": rate, "tflops": tflops, "mem_bw": mem_bw, "cpu_eff": cpu_eff,
            "shared": int(shared or bool(gpus.get("mig"))), "runs_before": runs_before,
            "elapsed_median": elapsed_median, "cost_median": cost_median}
