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


class Rules:
    """The thresholds the report judges with: the config's [analyze], usage.min_active_share and
    sampler.active_util (the Epilog passes its config; default: the built-in defaults)."""

    __slots__ = ("thresholds", "min_share", "active_util")

    def __init__(self, cfg=None):
        from piqc_slurm.analyze.rules import Thresholds

        if cfg is None:
            from piqc_slurm.config import Config, defaults

            cfg = Config(defaults())
        self.thresholds = Thresholds.from_config(cfg)
        self.min_share, self.active_util = cfg["usage.min_active_share"], cfg["sampler.active_util"]


def judge_node(summary: dict[str, Any], prices: Prices, cost: float, rate: float, elapsed: int,
               rules: Rules, nodes: int = 1, parts: list | None = None) -> list[dict[str, Any]]:
    """The nightly analysis's rules (analyze.rules) on this node's GPUs (or, `nodes` > 1, on the GPUs of
    all the job's nodes, merged into `summary`). What the Epilog cannot know is left out: how the
    job ended (FAILED_SPEND), its CPU time (INPUT_BOUND by CPU), its recurring runs
    (RUNTIME_REGRESSION) and the site's other GPU types (WRONG_TIER): `piqc-slurm analyze` adds those."""
    from piqc_slurm.analyze.explain import findings
    from piqc_slurm.analyze.inputs import gpu_inputs, idle_cost_share, job_inputs, mixed_rates, node_use
    from piqc_slurm.analyze.rules import judge

    devices = summary.get("devices") or []
    gpus = summary.get("gpus") or []
    gpu_type = _one_type(devices)
    spec = prices.catalog.spec(gpu_type) if gpu_type else None
    inputs = {**gpu_inputs(devices, rules.min_share), **node_use(devices, rules.min_share),
              "idle_cost_share": idle_cost_share(devices, rules.min_share, mixed_rates(parts or []))}
    j = job_inputs(cost=cost, elapsed=elapsed, alloc_gpus=len(gpus), started=True, failed=False,
                   gpus=inputs, rate=rate,
                   tflops=float(spec.bf16_tflops) if spec and spec.bf16_tflops else float("nan"),
                   mem_bw=float(spec.mem_bw_gbs) if spec and spec.mem_bw_gbs else float("nan"))
    v = judge(j, rules.thresholds, [])
    return findings({**j, "gpu_type": gpu_type, "node": summary.get("node"), "nodes": nodes}, v, rules.min_share,
                    rules.active_util)


def _one_type(devices: list[dict[str, Any]]) -> str | None:
    """The GPU type of these devices when they are all one (a job on nodes of different types has none)."""
    types = {d.get("gpu_type") for d in devices if d.get("gpu_type")}
    return types.pop() if len(types) == 1 else None


def _no_data(summary: dict[str, Any]) -> str | None:
    nvml = summary.get("nvml") or {}
    if not nvml.get("ok") or not summary.get("devices"):
        return nvml.get("error") or summary.get("partial_reason") or "no sampler data"
    return None


def render(summary: dict[str, Any], prices: Prices, rules: Rules | None = None,
           others: list[dict[str, Any]] = (), missing: list[str] = ()) -> str:
    """summary: this (the batch host's) node's; others: the job's other nodes' summaries, missing: the
    nodes whose summary it does not have (hooks/epilog.other_nodes). One report for the whole job."""
    if others or missing:
        return _render_nodes([summary, *others], list(missing), prices, rules or Rules())
    job, node = summary["job_id"], summary["node"]
    gpus = summary.get("gpus") or []
    lines = [f"==== piqc-slurm GPU report: job {job} on {node} ({len(gpus)} GPU{'s' * (len(gpus) != 1)}) ===="]
    if summary.get("monitor") == "off":
        lines.append("GPU monitoring was switched off for this job (--gpu-monitor=off).")
        return "\n".join(lines) + "\n"
    why = _no_data(summary)
    if why:
        lines.append(f"No GPU data for this job: {why}.")
        return "\n".join(lines) + "\n"
    lines.append(f"{'GPU':>4} {'util avg':>9} {'util p95':>9} {'mem peak':>10} {'energy':>11}  note")
    lines += [_device_line(d) for d in summary.get("devices") or []]
    rules = rules or Rules()
    cost, rate, gpu_type, elapsed = node_cost(summary, prices)
    lines.append(f"Estimated cost: ${money(cost):,.2f} ({len(gpus)} x {gpu_type or 'GPU'} for {_hms(elapsed)} "
                 f"at ${rate:.2f}/GPU-hour)")
    for f in judge_node(summary, prices, cost, rate, elapsed, rules):
        lines.append(f"{f['code']}: {f['sentence']}")
        lines.append(f"  Advice: {f['advice']}")
    if summary.get("partial"):
        lines.append(f"(partial data: {summary.get('partial_reason')})")
    return "\n".join(lines) + "\n"


def _device_line(d: dict[str, Any], node: str | None = None) -> str:
    mem = d.get("mem_used_max_mib")
    energy = d.get("energy_j")
    note = "LOST (fell off the bus)" if d.get("lost") else ("did no work" if d.get("did_work") is False else "")
    head = f"{node:<12} " if node is not None else ""
    return (f"{head}{d['minor']:>4} {_num(d.get('util_mean'), '8.1f', '%'):>9} "
            f"{_num(d.get('util_p95'), '8.1f', '%'):>9} "
            f"{_num(None if mem is None else mem / 1024, '6.1f', ' GiB'):>10} "
            f"{_num(None if energy is None else energy / 3.6e6, '7.3f', ' kWh'):>11}  {note}").rstrip()


def _render_nodes(summaries: list[dict[str, Any]], missing: list[str], prices: Prices, rules: Rules) -> str:
    """The report of a job on several nodes: every node's GPUs, each node's cost at its own GPU type's
    price, and the rules on all the GPUs at once (IDLE_GPUS counts across nodes)."""
    import hostlist

    first = summaries[0]
    names = [s["node"] for s in summaries] + missing
    ngpu = sum(len(s.get("gpus") or []) for s in summaries)
    lines = [f"==== piqc-slurm GPU report: job {first['job_id']} on {hostlist.collect_hostlist(names)} "
             f"({len(names)} nodes, {ngpu} GPU{'s' * (ngpu != 1)}{' reported' if missing else ''}) ===="]
    if first.get("monitor") == "off":
        lines.append("GPU monitoring was switched off for this job (--gpu-monitor=off).")
        return "\n".join(lines) + "\n"
    lines.append(f"{'node':<12} {'GPU':>4} {'util avg':>9} {'util p95':>9} {'mem peak':>10} {'energy':>11}  note")
    total, parts, elapsed, devices, gpus, partial, rated = 0.0, [], 0, [], [], [], []
    for s in summaries:
        why = _no_data(s)
        if why:
            lines.append(f"{s['node']:<12} no GPU data: {why}")
        else:
            lines += [_device_line(d, s["node"]) for d in s.get("devices") or []]
            devices += [{**d, "node": s["node"]} for d in s.get("devices") or []]
        cost, rate, gpu_type, node_elapsed = node_cost(s, prices)
        total += cost
        elapsed = max(elapsed, node_elapsed)
        gpus += s.get("gpus") or []
        parts.append(f"{len(s.get('gpus') or [])} x {gpu_type or 'GPU'} at ${rate:.2f}/GPU-hour on {s['node']}")
        rated.append((len(s.get("gpus") or []), gpu_type, rate))
        if s.get("partial"):
            partial.append(f"{s['node']}: {s.get('partial_reason')}")
    lines.append(f"Estimated cost: ${money(total):,.2f} for {_hms(elapsed)} ({'; '.join(parts)})")
    if missing:
        lines.append(f"Not included: {', '.join(missing)} (no summary in the shared spool in time); "
                     f"`seff {first['job_id']}` has every node after the next ingest.")
    elif devices:
        hours = sum(len(s.get("gpus") or []) * node_cost(s, prices)[3] for s in summaries) / 3600.0
        merged = {**first, "devices": devices, "gpus": gpus}
        for f in judge_node(merged, prices, total, total / hours if hours > 0 else 0.0, elapsed, rules,
                            nodes=len(summaries), parts=rated):
            lines.append(f"{f['code']}: {f['sentence']}")
            lines.append(f"  Advice: {f['advice']}")
    lines += [f"(partial data: {p})" for p in partial]
    return "\n".join(lines) + "\n"
