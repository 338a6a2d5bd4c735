"""The per-job, per-node summary the Epilog spools (format piqc-summary/1).
Pure: the Prolog's job document and the sampler's last checkpoint in, one
JSON-ready dict out. It is built from the fixed-size checkpoint alone, never
from the timeline, so its cost does not grow with the job's length.
"""

from __future__ import annotations

from typing import Any

from piqc_slurm import catalog

SUMMARY_FORMAT = "piqc-summary/1"
BARE_CONTEXT_MIB = 1024  # a CUDA context on an unused device; more than this is real memory use


def gpu_did_work(agg: dict[str, Any], active_util: float = 5.0) -> bool | None:
    """True if the GPU did work; None if there is no evidence either way.

    Idle means utilization ~0 for the whole job AND no memory beyond a bare
    CUDA context. A listed process alone is not use: frameworks open a context
    on every visible device.
    """
    if agg.get("samples", 0) == 0:
        return None
    util_max = agg.get("util_max")
    mem_max = agg.get("mem_used_max_mib")
    if util_max is None and mem_max is None:
        return None
    return (util_max or 0) >= active_util or (mem_max or 0) > BARE_CONTEXT_MIB


def build(job: dict[str, Any], checkpoint: dict[str, Any] | None, *, ended: float, partial: bool,
          partial_reason: str | None, monitor: str, interval: float | None) -> dict[str, Any]:
    """job: the Prolog's JobContext dict (or one rebuilt from the Epilog env)."""
    devices = []
    nvml = None
    started = job.get("prolog_time")
    if checkpoint is not None:
        nvml = checkpoint["nvml"]
        started = checkpoint.get("started", started)
        for g in checkpoint["gpus"] if nvml.get("ok") else []:
            agg = {k: v for k, v in g["agg"].items() if k not in ("acc", "util_hist_ms")}
            devices.append({
                "minor": g["minor"], "index": g.get("index"), "uuid": g.get("uuid"), "name": g.get("name"),
                "gpu_type": catalog.type_of(g.get("name")), "mem_total_mib": g.get("mem_total_mib"),
                "power_limit_w": g.get("power_limit_w"), "lost": g["lost"], "error": g.get("error"),
                "did_work": gpu_did_work(agg, agg.get("active_util", 5.0)),
                **agg,
            })
    return {
        "format": SUMMARY_FORMAT,
        "cluster": job["cluster"], "job_id": job["job_id"], "restart_count": job["restart_count"],
        "node": job["node"], "uid": job.get("uid"), "user": job.get("user"), "account": job.get("account"),
        "partition": job.get("partition"), "gpus": list(job.get("gpus", [])),
        "array_job_id": job.get("array_job_id"), "array_task_id": job.get("array_task_id"),
        "exit_code": job.get("exit_code"),
        "monitor": monitor, "interval": interval,
        "started": started, "ended": ended,
        "partial": partial, "partial_reason": partial_reason,
        "exit_reason": checkpoint.get("exit_reason") if checkpoint else None,
        "nvml": nvml,
        "devices": devices,
        "timeline_bins": checkpoint.get("timeline_bins", 0) if checkpoint else 0,
    }
