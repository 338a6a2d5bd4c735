"""What a finding says: its evidence as figures (JSON) and as one sentence a user
understands, and the advice. Pure: one judged job in (rules.judge's columns as
scalars plus the job's inputs), finding dicts out."""

from __future__ import annotations

import math
from typing import Any

from piqc_slurm.analyze.rules import CODES
from piqc_slurm.usage.numbers import finite


def _pct(x: float | None) -> str:
    return "?" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def _a(word: str | None) -> str:
    """'an a10g', 'an h100', 'an l40s', 'a t4' (as the letters are read)."""
    w = word or "GPU"
    return ("an " if w[:1].lower() in "aefhilmnorsx" else "a ") + w


_num = finite  # usage.numbers


def _int(x: Any) -> int | None:
    v = _num(x)
    return None if v is None else int(v)


# What findings() reads of a job (j) and of its verdict (v): the analyzer hands it only these.
JOB_INPUTS = ("id", "alloc_gpus", "used_gpus", "idle_gpus", "cost", "elapsed", "side", "state", "exit_code",
              "exit_signal", "derived_exit_code", "restarts", "node", "gpu_type", "mem_peak_gib", "util_used",
              "cpu_eff", "active_used", "power_used", "sm_used", "tensor_used", "elapsed_median", "cost_median",
              "runs_before", "nodes", "used_nodes", "used_per_node")
VERDICT_FIELDS = CODES + tuple(f"w_{c}" for c in CODES) + (
    "est_factor", "advice_tier", "tier_confidence", "demand_tflops", "demand_bw", "tier_saving", "ib_evidence",
    "ub_evidence", "mem_free")


def _json(v: Any) -> Any:
    """A value JSON (and PostgreSQL's json type) accepts: NaN and infinities are unknown (None),
    numpy scalars become Python numbers."""
    t = type(v)
    if t is str or v is None or t is bool or t is int:
        return v
    if t is float:
        return v if math.isfinite(v) else None
    n = _num(v)
    if n is None:
        return None
    return int(n) if isinstance(v, int) or (hasattr(v, "dtype") and "int" in str(v.dtype)) else n


def _r(x: Any, nd: int = 3) -> float | None:
    v = _num(x)
    return None if v is None else round(v, nd)


def idle_advice(used: int, alloc: int, nodes: int, used_nodes: int | None = None,
                used_per_node: int | None = None) -> str:
    """IDLE_GPUS's advice: the GPUs that worked, asked for as Slurm takes them (--gres=gpu:N is per
    node: a job on several nodes is told how many per node, and on how many nodes). used_nodes /
    used_per_node: the nodes that had a working GPU and the most on one, where known; else the
    working GPUs are taken as spread over the job's nodes."""
    if nodes <= 1:
        return f"Request --gres=gpu:{used}."
    if used_nodes and used_per_node:
        per, need = used_per_node, used_nodes
    else:
        per = -(-used // nodes)  # ceil: the working GPUs spread over the job's nodes
        need = -(-used // per)
    return (f"Request {used} GPU{'s' * (used != 1)} in all, not {alloc} on {nodes} nodes: "
            f"--gres=gpu:{per} on {'each of ' if need > 1 else ''}{need} node{'s' * (need != 1)} (-N{need}).")


def findings(j: dict[str, Any], v: dict[str, Any], min_share: float, active_util: float) -> list[dict[str, Any]]:
    """j: the job's inputs and identity (alloc_gpus, used_gpus, gpu_type, state, exit_code ...);
    v: rules.judge's columns for it. One dict per code found, in CODES order."""
    out = []
    alloc, used = int(j["alloc_gpus"] or 0), int(_num(j.get("used_gpus")) or 0)
    cost = float(j["cost"] or 0.0)
    elapsed = int(j["elapsed"] or 0)
    factor = _num(v.get("est_factor")) or 1.0
    for code in CODES:
        if not bool(v.get(code)):
            continue
        waste = float(v[f"w_{code}"] or 0.0)
        f: dict[str, Any] = {"code": code, "waste_usd": waste, "advice_gpus": None, "advice_tier": None,
                             "est_elapsed": None, "est_cost_usd": None, "confidence": None}
        if code == "FAILED_SPEND":
            side = j.get("side") or "user"
            signal = _int(j.get("exit_signal"))
            ev = {"state": j.get("state"), "exit_code": j.get("exit_code"), "exit_signal": signal,
                  "derived_exit_code": j.get("derived_exit_code"), "restarts": _int(j.get("restarts")), "side": side}
            f["sentence"] = (f"The run ended {j.get('state')} (exit code {j.get('exit_code')}"
                             + (f", signal {signal}" if signal else "")
                             + f") after {elapsed // 60} min on {alloc} GPU{'s' * (alloc != 1)}: "
                             f"${waste:,.2f} bought no result"
                             + (" (the site's side: node failure or preemption)." if side == "site" else "."))
            f["advice"] = ("Nothing for the user to change; ask the admins about the node or preemption."
                           if side == "site" else "Check the job's log for the failure; test with a short run "
                           "(or a checkpoint) before the long one.")
            f["confidence"] = "high"
        elif code == "NO_SAMPLES":
            ev = {"alloc_gpus": alloc, "node": j.get("node")}
            f["sentence"] = (f"No GPU sampler data for this {alloc}-GPU job on {j.get('node') or 'its node'}: "
                             "its use is unknown.")
            f["advice"] = "Check the piqc hooks on the node (piqc-slurm doctor)."
        elif code == "IDLE_GPUS":
            idle = int(_num(j.get("idle_gpus")) or 0)
            ev = {"alloc_gpus": alloc, "idle_gpus": idle, "used_gpus": used, "min_active_share": min_share,
                  "active_util": active_util}
            if used == 0:
                f["sentence"] = (f"This job used no GPU: none of its {alloc} allocated GPU{'s' * (alloc != 1)} was "
                                 f"active ({active_util:g}%+ utilization) for {_pct(min_share)} of the job; "
                                 f"${waste:,.2f} bought idle GPUs.")
                f["advice"] = ("Check that the program uses the GPU (device placement, CUDA_VISIBLE_DEVICES); "
                               "if it needs none, run it in a CPU partition.")
            else:
                f["sentence"] = (f"{idle} of {alloc} allocated GPUs did no work (active less than "
                                 f"{_pct(min_share)} of the job); ${waste:,.2f} of ${cost:,.2f} bought idle GPUs.")
                f["advice"] = idle_advice(used, alloc, _int(j.get("nodes")) or 1, _int(j.get("used_nodes")),
                                          _int(j.get("used_per_node")))
                f["advice_gpus"] = used
            f["confidence"] = "high"
        elif code == "WRONG_TIER":
            tier = v.get("advice_tier") or None
            conf = v.get("tier_confidence") or "low"
            ev = {"gpu_type": j.get("gpu_type"), "advice_tier": tier, "mem_peak_gib": _r(j.get("mem_peak_gib"), 2),
                  "demand_tflops": _r(v.get("demand_tflops"), 1), "demand_bw_gbs": _r(v.get("demand_bw"), 0),
                  "saving_share": _r(v.get("tier_saving")), "evidence": "gpm" if conf == "high" else "utilization"}
            basis = ("GPM tensor and DRAM activity" if conf == "high"
                     else "utilization counted at the card's peak (no GPM: conservative)")
            f["sentence"] = (f"Peak memory {ev['mem_peak_gib']} GiB and a demand of about {ev['demand_tflops']} "
                             f"TFLOPS and {ev['demand_bw_gbs']:g} GB/s ({basis}) fit {_a(tier)}: "
                             f"{_pct(_num(v.get('tier_saving')))} cheaper, ${waste:,.2f} on this run.")
            f["advice"] = f"Run it on {_a(tier)} (e.g. --gres=gpu:{tier}:{max(used, 1)})."
            f["advice_tier"] = tier
            f["confidence"] = conf
        elif code == "INPUT_BOUND":
            by = v.get("ib_evidence")
            ev = {"util_used": _r(j.get("util_used"), 1), "cpu_eff": _r(j.get("cpu_eff")),
                  "active_used": _r(j.get("active_used")), "evidence": by}
            why = (f"its CPUs were {_pct(_num(j.get('cpu_eff')))} busy" if by == "cpu"
                   else f"its GPUs sat idle {_pct(1 - (_num(j.get('active_used')) or 0))} of the time between "
                        "bursts")
            f["sentence"] = (f"The GPUs that worked averaged {ev['util_used']}% utilization while {why}: "
                             f"they waited for input; ${waste:,.2f} of GPU time went to waiting.")
            f["advice"] = ("Feed the GPU faster: more data-loader workers and --cpus-per-task, faster or local "
                           "storage, prefetching; not a bigger batch.")
            f["confidence"] = "medium"
        elif code == "UNDER_BATCHED":
            by = v.get("ub_evidence")
            ev = {"evidence": by, "util_used": _r(j.get("util_used"), 1), "power_frac": _r(j.get("power_used")),
                  "sm_active": _r(j.get("sm_used")), "tensor_active": _r(j.get("tensor_used")),
                  "mem_free": _r(v.get("mem_free"))}
            if by == "gpm":
                what = (f"the SMs were active {_pct(_num(j.get('sm_used')))} and the tensor cores "
                        f"{_pct(_num(j.get('tensor_used')))} of the time (NVML GPM)")
                f["confidence"] = "high"
            elif by == "power":
                what = (f"kernels ran {ev['util_used']}% of the time but the GPUs drew "
                        f"{_pct(_num(j.get('power_used')))} of their power limit")
                f["confidence"] = "medium"
            else:
                what = (f"utilization was {ev['util_used']}% with {_pct(_num(v.get('mem_free')))} of GPU memory "
                        "free")
                f["confidence"] = "low"
            f["sentence"] = (f"The GPUs were in use but doing a fraction of what they could: {what}. At the "
                             f"target it would have cost ${max(cost - waste, 0):,.2f}, ${waste:,.2f} less.")
            f["advice"] = ("Raise the batch size (for inference: batch requests, e.g. continuous batching); "
                           "memory reserved by vLLM or TensorFlow is not a sign of a large batch.")
        else:  # RUNTIME_REGRESSION
            ev = {"elapsed": elapsed, "elapsed_median": _r(j.get("elapsed_median"), 0),
                  "cost_median": _r(j.get("cost_median"), 2), "runs_before": int(_num(j.get("runs_before")) or 0)}
            f["sentence"] = (f"This run took {elapsed // 60} min and ${cost:,.2f}, against a median of "
                             f"{int((_num(j.get('elapsed_median')) or 0) // 60)} min and "
                             f"${_num(j.get('cost_median')) or 0:,.2f} over its {ev['runs_before']} earlier "
                             "completed runs.")
            f["advice"] = "Compare with an earlier run: input size, code or library changes, a slower node."
            f["confidence"] = "medium"
        f["evidence"] = {k: _json(v) for k, v in ev.items()}
        out.append(f)
    est = _estimate(j, v, out, factor)
    for f in out:
        if f["code"] in ("IDLE_GPUS", "WRONG_TIER", "UNDER_BATCHED", "INPUT_BOUND"):
            f["est_elapsed"], f["est_cost_usd"] = est
    return out


def _estimate(j: dict[str, Any], v: dict[str, Any], found: list[dict],
              factor: float) -> tuple[int | None, float | None]:
    """EstElapsed and its cost on the advice: fewer GPUs take the same time; at the target activity the
    time scales by activity / target; another tier at the same time (its compute covers the demand)."""
    codes = {f["code"] for f in found}
    if not codes & {"IDLE_GPUS", "WRONG_TIER", "UNDER_BATCHED", "INPUT_BOUND"}:
        return None, None
    elapsed = int(j["elapsed"] or 0)
    est = int(round(elapsed * factor))
    cost = float(j["cost"] or 0.0)
    waste = sum(f["waste_usd"] for f in found if f["code"] in ("IDLE_GPUS", "WRONG_TIER", "UNDER_BATCHED",
                                                                 "INPUT_BOUND"))
    return est, max(cost - waste, 0.0)
