"""The per-job, per-node summary the Epilog spools (format piqc-summary/1):
its one definition, below the hooks, the sampler and the store that all read
or write it.

`build` is pure: the Prolog's job document and the sampler's last
checkpoint in, one JSON-ready dict out. It is built from the fixed-size
checkpoint alone, never from the timeline, so its cost does not grow with
the job's length. Each device keeps its utilization histogram
(`util_hist_ms`, 101 bins) so the analysis can re-apply the did-work
thresholds without re-sampling; `did_work` is usage.rules' verdict at the
thresholds in force when the job ended.

`check_format` is what every reader calls first: an unknown format version
is a SpoolFormatError, left for a newer piqc-slurm.
"""

from __future__ import annotations

from typing import Any

from piqc_slurm.errors import SpoolFormatError
from piqc_slurm.usage.catalog import Catalog
from piqc_slurm.usage.rules import MIN_ACTIVE_SHARE, did_work

SUMMARY_FORMAT = "piqc-summary/1"


def check_format(doc: Any, source: str = "") -> dict:
    if not isinstance(doc, dict):
        raise SpoolFormatError(f"{source}: not a JSON object")
    fmt = doc.get("format")
    if fmt != SUMMARY_FORMAT:
        raise SpoolFormatError(f"{source}: unknown summary format {fmt!r} (this version reads {SUMMARY_FORMAT})")
    for key in ("cluster", "job_id", "restart_count", "node"):
        if key not in doc:
            raise SpoolFormatError(f"{source}: missing {key}")
    return doc


def device(g: dict[str, Any], catalog: Catalog, min_share: float = MIN_ACTIVE_SHARE) -> dict[str, Any]:
    """One checkpoint GPU entry -> the summary's device entry.

    `errors`: NVML errors the sampler retried on this GPU; `skipped_samples`: samples it did not
    take because of them (a GPU that recovered is complete but for those); `partial` with
    `partial_reason` says so, as the summary's own pair does for the run (absent in checkpoints
    of older samplers: 0 errors)."""
    agg = {k: v for k, v in g["agg"].items() if k != "acc"}
    errors, skipped = int(g.get("errors") or 0), int(g.get("skipped") or 0)
    why = None
    if g["lost"]:
        why = f"lost: {g.get('error') or 'no reason recorded'}"
    elif errors or skipped:
        why = (f"{errors} NVML error{'' if errors == 1 else 's'}, {skipped} sample{'' if skipped == 1 else 's'} "
               f"skipped; recovered (last: {g.get('last_error')})")
    return {
        "minor": g["minor"], "index": g.get("index"), "uuid": g.get("uuid"), "name": g.get("name"),
        "gpu_type": catalog.type_of_name(g.get("name")), "mem_total_mib": g.get("mem_total_mib"),
        "power_limit_w": g.get("power_limit_w"), "lost": g["lost"], "error": g.get("error"),
        "did_work": did_work(agg, min_share),
        "errors": errors, "skipped_samples": skipped, "last_error": g.get("last_error"),
        "partial": why is not None, "partial_reason": why,
        **agg,
    }


def build(job: dict[str, Any], checkpoint: dict[str, Any] | None, *, ended: float, partial: bool,
          partial_reason: str | None, monitor: str, interval: float | None, catalog: Catalog,
          min_share: float = MIN_ACTIVE_SHARE) -> dict[str, Any]:
    """job: the Prolog's JobContext dict (or one rebuilt from the Epilog env)."""
    devices = []
    nvml = None
    started = job.get("prolog_time")
    if checkpoint is not None:
        nvml = checkpoint["nvml"]
        started = checkpoint.get("started", started)
        for g in checkpoint["gpus"] if nvml.get("ok") else []:
            devices.append(device(g, catalog, min_share))
    return {
        "format": SUMMARY_FORMAT,
        "cluster": job["cluster"], "job_id": job["job_id"], "restart_count": job["restart_count"],
        "node": job["node"], "uid": job.get("uid"), "user": job.get("user"), "account": job.get("account"),
        "partition": job.get("partition"), "gpus": list(job.get("gpus", [])),
        "array_job_id": job.get("array_job_id"), "array_task_id": job.get("array_task_id"),
        "exit_code": job.get("exit_code"),
        "monitor": monitor, "interval": interval,
        "started": started, "ended": ended,
        "prolog_time": job.get("prolog_time"),
        "partial": partial, "partial_reason": partial_reason,
        "exit_reason": checkpoint.get("exit_reason") if checkpoint else None,
        "nvml": nvml,
        "devices": devices,
        "timeline_bins": checkpoint.get("timeline_bins", 0) if checkpoint else 0,
        # what the live watch did (sampler/oncall.py records: rule, at, since, gpus, evidence, usd, notice)
        **({"watch": list(checkpoint["watch"].get("actions") or [])}
           if checkpoint and isinstance(checkpoint.get("watch"), dict) else {}),
    }


def elapsed_seconds(summary: dict[str, Any]) -> int:
    """The run's elapsed time in Slurm's whole seconds: from the Prolog (PrologFlags=Alloc runs it as
    the allocation is made, as Slurm stamps Start) to the Epilog (run as Slurm stamps End)."""
    start = summary.get("prolog_time") or summary.get("started") or 0
    end = summary.get("ended") or 0
    return max(int(end) - int(start), 0)
