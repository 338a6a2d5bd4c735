"""The short GPU report appended to a job's own output file. Pure: a
summary and prices in, plain text out (no HTML: it lands in a text file the
user reads with less).

Its cost is usage.cost.job_cost, the definition `sacct`'s CostUSD and `seff`
use, over this node's GPUs and the run's elapsed whole seconds
(summary.elapsed_seconds: Prolog to Epilog, which agrees with Slurm's
Elapsed to within a second). It is labelled an estimate: the accounting
figure is the one on record."""

from __future__ import annotations

from typing import Any

from piqc_slurm.summary import elapsed_seconds
from piqc_slurm.usage.cost import job_cost, money
from piqc_slurm.usage.prices import Prices


def _hms(seconds: float) -> str:
    from piqc_slurm.slurm.parse import format_elapsed  # sacct's Elapsed format

    return format_elapsed(int(round(max(seconds, 0))))


def _num(v: Any, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def node_cost(summary: dict[str, Any], prices: Prices) -> tuple[float, float, str | None, int]:
    """(cost USD, USD per GPU-hour, GPU type, elapsed seconds) of this node's share of the job."""
    devices = summary.get("devices") or []
    gpu_type = next((d.get("gpu_type") for d in devices if d.get("gpu_type")), None)
    elapsed = elapsed_seconds(summary)
    cost = job_cost([(len(summary.get("gpus") or []), gpu_type)], elapsed, prices,
                    partition=summary.get("partition"))
    rate = cost.rate.usd if cost.rate is not None else prices.gpu_rate(gpu_type, summary.get("partition")).usd
    return cost.usd, rate, gpu_type, elapsed


def render(summary: dict[str, Any], prices: Prices) -> str:
    job, node = summary["job_id"], summary["node"]
    gpus = summary.get("gpus") or []
    lines = [f"==== piqc-slurm GPU report: job {job} on {node} ({len(gpus)} GPU{'s' * (len(gpus) != 1)}) ===="]
    monitor = summary.get("monitor")
    if monitor == "off":
        lines.append("GPU monitoring was switched off for this job (--gpu-monitor=off).")
        return "\n".join(lines) + "\n"
    nvml = summary.get("nvml") or {}
    devices = summary.get("devices") or []
    if not nvml.get("ok") or not devices:
        why = nvml.get("error") or summary.get("partial_reason") or "no sampler data"
        lines.append(f"No GPU data for this job: {why}.")
        return "\n".join(lines) + "\n"
    lines.append(f"{'GPU':>4} {'util avg':>9} {'util p95':>9} {'mem peak':>10} {'energy':>11}  note")
    for d in devices:
        mem = d.get("mem_used_max_mib")
        energy = d.get("energy_j")
        note = "LOST (fell off the bus)" if d.get("lost") else ("did no work" if d.get("did_work") is False else "")
        lines.append(f"{d['minor']:>4} {_num(d.get('util_mean'), '8.1f', '%'):>9} "
                     f"{_num(d.get('util_p95'), '8.1f', '%'):>9} "
                     f"{_num(None if mem is None else mem / 1024, '6.1f', ' GiB'):>10} "
                     f"{_num(None if energy is None else energy / 3.6e6, '7.3f', ' kWh'):>11}  {note}".rstrip())
    cost, rate, gpu_type, elapsed = node_cost(summary, prices)
    lines.append(f"Estimated cost: ${money(cost):,.2f} ({len(gpus)} x {gpu_type or 'GPU'} for {_hms(elapsed)} "
                 f"at ${rate:.2f}/GPU-hour)")
    idle = [d for d in devices if d.get("did_work") is False]
    if idle:
        used = len(gpus) - len(idle)
        saving = cost * len(idle) / len(gpus) if gpus else 0.0
        if used == 0:
            lines.append(f"Advice: this job used no GPU ({len(gpus)} allocated, none did work): "
                         f"${money(cost):,.2f} bought idle GPUs.")
        else:
            lines.append(f"Advice: {len(idle)} of {len(gpus)} GPUs did no work: --gres=gpu:{used} "
                         f"would have cost ${money(saving):,.2f} less.")
    elif devices:
        worked = [d for d in devices if d.get("util_mean") is not None]
        if worked and all((d.get("util_mean") or 0) < 30 and (d.get("mem_used_max_mib") or 0)
                          < 0.5 * (d.get("mem_total_mib") or 1) for d in worked):
            lines.append("Advice: low utilization with most GPU memory free: a larger batch size "
                         "would finish sooner on the same GPUs.")
    if summary.get("partial"):
        lines.append(f"(partial data: {summary.get('partial_reason')})")
    return "\n".join(lines) + "\n"
