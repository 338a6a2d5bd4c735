"""`piqc-slurm seff JOBID`: one job's report for a person, a superset of Slurm's seff and
Princeton's jobstats.

The first lines are Slurm 22.05.8's seff's, in its words and formats (Job ID ... Memory
Efficiency), from usage.efficiency (the one home of those formulas); then the time-limit
share, the job's names and times, the GPU half (per GPU: utilization, memory used of the
card with its share, power, energy, from the sampler; cost and GPU-use figures from
query.gpu, as `piqc-slurm sacct` prints them), and the findings. A running job shows what
the store has so far, said so, and, where the caller passes them, the live figures of the
sampler's checkpoint. `as_json_doc` is the same report as one JSON object (keys: docs/seff.md).

Pure rendering over what `load_job` read; the store query is `load_job`, the file I/O of the
live checkpoint is the command's (commands/seff.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from piqc_slurm.query.gpu import GpuValues
from piqc_slurm.query.jobids import JobSel
from piqc_slurm.query.store import Reader
from piqc_slurm.slurm.parse import format_elapsed
from piqc_slurm.usage import efficiency as eff
from piqc_slurm.usage.cost import money
from piqc_slurm.usage.outcome import base_state

RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING",
                            "STAGE_OUT", "STOPPED"})


@dataclass
class Live:
    """The sampler's checkpoint of a running job on one node, as summary devices."""

    node: str
    updated: float                 # epoch seconds of the checkpoint
    devices: list[dict[str, Any]] = field(default_factory=list)
    nvml_ok: bool = True
    nvml_error: str | None = None


@dataclass
class JobView:
    job: dict[str, Any]
    summaries: list[dict[str, Any]] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    steps: tuple[str, ...] | None = None   # seff 1234.1: only these steps count


# The store reads: constant text SQL through query.store.Reader, as `piqc-slurm sacct` reads (no
# SQLAlchemy: its import and the models' would cost seff ~0.2 s); every value is a bound :parameter.
# The column lists are store/models.py's (tests/unit/test_seff_store.py keeps them equal); JSON
# columns come back as text on SQLite, booleans as 0/1 there: _record gives what the models' types give.
_JOBS = ('SELECT "id", "cluster", "job_id_raw", "submit", "job_id", "array_job_id", "array_task_id", "het_job_id", '
         '"het_job_offset", "name", "user", "uid", "account", "partition", "qos", "state", "state_by", "exit_code", '
         '"derived_exit_code", "eligible", "start", "end", "elapsed", "timelimit", "alloc_cpus", "alloc_nodes", '
         '"alloc_mem_mib", "alloc_gpus", "gpu_type", "alloc_tres", "nodelist", "work_dir", "comment", "exit_signal", '
         '"restarts", "total_cpu_s", "req_gpus", "extra", "steps" FROM jobs')
# load_job's candidates, newest allocation first; :cluster NULL: any cluster
_JOB_WHERE = {
    "raw": _JOBS + (' WHERE "job_id_raw" = :job AND "cluster" = COALESCE(:cluster, "cluster") '
                    'ORDER BY "submit" DESC, "array_task_id", "het_job_offset" LIMIT 1'),
    "array": _JOBS + (' WHERE "array_job_id" = :job AND "cluster" = COALESCE(:cluster, "cluster") '
                      'ORDER BY "submit" DESC, "array_task_id", "het_job_offset" LIMIT 1'),
    "het": _JOBS + (' WHERE "het_job_id" = :job AND "cluster" = COALESCE(:cluster, "cluster") '
                    'ORDER BY "submit" DESC, "array_task_id", "het_job_offset" LIMIT 1'),
    "task": _JOBS + (' WHERE "array_job_id" = :job AND "array_task_id" = :sub '
                     'AND "cluster" = COALESCE(:cluster, "cluster") '
                     'ORDER BY "submit" DESC, "array_task_id", "het_job_offset" LIMIT 1'),
    "component": _JOBS + (' WHERE "het_job_id" = :job AND "het_job_offset" = :sub '
                          'AND "cluster" = COALESCE(:cluster, "cluster") '
                          'ORDER BY "submit" DESC, "array_task_id", "het_job_offset" LIMIT 1'),
}
_SUMMARIES = ('SELECT "id", "cluster", "job_id_raw", "restart_count", "node", "started_at", "job_ref", "user", '
              '"monitor", "interval", "started", "ended", "partial", "partial_reason", "nvml_ok", "nvml_error", '
              '"gpu_count" FROM node_summaries')   # all but doc, the summary as delivered
_SUMMARIES_OF = _SUMMARIES + ' WHERE "job_ref" = :ref ORDER BY "node"'
_GPUS = ('SELECT "id", "summary_id", "minor", "uuid", "name", "gpu_type", "mem_total_mib", "lost", "did_work", '
         '"samples", "seconds", "util_mean", "util_p50", "util_p95", "util_max", "active_seconds", "mem_util_mean", '
         '"mem_used_max_mib", "mem_used_mean_mib", "power_mean_w", "energy_j", "process_seconds", '
         '"job_process_seconds", "util_hist", "power_limit_w", "power_frac_mean", "sm_active_mean", "sm_active_p95", '
         '"sm_occupancy_mean", "sm_occupancy_p95", "tensor_active_mean", "tensor_active_p95", "dram_active_mean", '
         '"dram_active_p95" FROM gpu_usage')
_GPUS_OF = _GPUS + ' WHERE "summary_id" = :summary ORDER BY "minor"'
_JUDGED = 'SELECT "id" FROM analysis_runs WHERE "since" <= :end AND "until" > :end LIMIT 1'
_FINDINGS = 'SELECT "code", "sentence", "advice", "waste_usd" FROM findings WHERE "job_ref" = :ref'

JSON_COLUMNS = frozenset({"extra", "steps", "util_hist"})      # the models' JSON columns read here
BOOL_COLUMNS = frozenset({"partial", "nvml_ok", "lost", "did_work"})  # and their Boolean ones


def _names(select: str) -> tuple[str, ...]:
    """The columns a constant `SELECT "a", "b" ... FROM table` lists, in its order."""
    return tuple(re.findall(r'"(\w+)"', select.partition(" FROM ")[0]))


JOB_COLUMNS, SUMMARY_COLUMNS, GPU_COLUMNS = _names(_JOBS), _names(_SUMMARIES), _names(_GPUS)


def _record(names: tuple[str, ...], row: tuple) -> dict[str, Any]:
    """A row as the models' types read it: JSON decoded (text on SQLite; psycopg decodes it), a
    boolean as bool (0/1 on SQLite), NULL as None."""
    d = dict(zip(names, row, strict=True))
    for k in JSON_COLUMNS.intersection(d):
        if isinstance(d[k], str | bytes):
            d[k] = json.loads(d[k])
    for k in BOOL_COLUMNS.intersection(d):
        if d[k] is not None:
            d[k] = bool(d[k])
    return d


def load_job(reader: Reader, sel: JobSel, cluster: str | None = None) -> JobView | None:
    """The newest allocation `sel` names: 1234 is the job whose JobIDRaw is 1234 (as seff: for
    an array, the task holding that raw id), else the first task of array 1234 or component 0
    of het job 1234; 1234_5 a task, 1234+1 a het component. cluster: only that cluster's jobs."""
    def newest(how: str, **params):
        rows = reader.all(_JOB_WHERE[how], {"job": sel.job, "cluster": cluster, **params})
        return _record(JOB_COLUMNS, rows[0]) if rows else None

    if sel.task is not None:
        job = newest("task", sub=sel.task)
    elif sel.het is not None:
        job = newest("component", sub=sel.het)
    else:
        job = newest("raw") or newest("array") or newest("het")
    if job is None:
        return None
    view = JobView(job=job, steps=None if sel.step is None else (sel.step,))
    for r in reader.all(_SUMMARIES_OF, {"ref": job["id"]}):
        s = _record(SUMMARY_COLUMNS, r)
        view.summaries.append(s)
        view.gpus += [{**_record(GPU_COLUMNS, g), "node": s["node"]}
                      for g in reader.all(_GPUS_OF, {"summary": s["id"]})]
    return view


def stored_findings(reader: Reader, job: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The job's findings as `analyze` stored them, in the order waste is attributed; None if no
    analysed window holds the job (an empty list: analysed, clean)."""
    from piqc_slurm.analyze.rules import CODES

    if job.get("end") is None:
        return None
    judged = reader.all(_JUDGED, {"end": job["end"]})
    rows = reader.all(_FINDINGS, {"ref": job["id"]})
    if not judged and not rows:
        return None
    out = [{"code": code, "sentence": sentence, "advice": advice, "waste_usd": waste}
           for code, sentence, advice, waste in rows]
    return sorted(out, key=lambda f: CODES.index(f["code"]) if f["code"] in CODES else 99)


def judge_job(view: JobView, cost: float, rate: float, prices, cfg) -> list[dict[str, Any]]:
    """The analysis's rules on this one job, from its stored GPU rows (before `analyze` has run)."""
    import math

    from piqc_slurm.analyze.explain import findings
    from piqc_slurm.analyze.inputs import gpu_inputs, idle_cost_share, job_inputs, mixed_rates, node_use
    from piqc_slurm.analyze.rules import Thresholds, judge
    from piqc_slurm.usage.cost import rated_parts
    from piqc_slurm.usage.outcome import failed, side

    j = view.job
    spec = prices.catalog.spec(j["gpu_type"]) if j.get("gpu_type") else None
    elapsed = j.get("elapsed") or 0
    cpu_eff = eff.cpu_share(j.get("total_cpu_s"), elapsed, j.get("alloc_cpus"))
    started = j.get("start") is not None
    min_share = cfg["usage.min_active_share"]
    rates = mixed_rates(rated_parts(j.get("alloc_gpus") or 0, j.get("gpu_type"), j.get("alloc_tres") or "", prices,
                                    j.get("partition")))
    node_of = {s["id"]: s["node"] for s in view.summaries}
    gpus = {**gpu_inputs(view.gpus, min_share), "idle_cost_share": idle_cost_share(view.gpus, min_share, rates),
            **node_use([{**g, "node": node_of.get(g.get("summary_id"))} for g in view.gpus], min_share)}
    inp = job_inputs(cost=cost, elapsed=elapsed, alloc_gpus=j.get("alloc_gpus") or 0, started=started,
                     failed=failed(j.get("state"), started), gpus=gpus,
                     rate=rate, tflops=float(spec.bf16_tflops) if spec and spec.bf16_tflops else math.nan,
                     mem_bw=float(spec.mem_bw_gbs) if spec and spec.mem_bw_gbs else math.nan, cpu_eff=cpu_eff)
    v = judge(inp, Thresholds.from_config(cfg), [])
    from piqc_slurm.slurm.parse import first_node, node_count

    nodelist = j.get("nodelist") or ""
    return findings({**j, **inp, "side": side(j.get("state")), "node": first_node(nodelist),
                     "nodes": node_count(nodelist)}, v, cfg["usage.min_active_share"], cfg["sampler.active_util"])


def live_devices(doc: dict[str, Any], catalog, min_share: float) -> list[dict[str, Any]]:
    """A validated checkpoint's GPUs as the summary's device entries (summary.device: the same
    util, memory, power and energy figures the Epilog will spool)."""
    from piqc_slurm.summary import device

    return [device(g, catalog, min_share) for g in doc["gpus"]] if doc["nvml"].get("ok") else []


# --- figures -------------------------------------------------------------------------------------
def is_running(job: dict[str, Any]) -> bool:
    return base_state(job.get("state")) in RUNNING_STATES or (bool(job.get("start")) and not job.get("end")
                                                               and base_state(job.get("state")) != "PENDING")


def _pending(job: dict[str, Any]) -> bool:
    return base_state(job.get("state")) == "PENDING" or (not job.get("start") and not job.get("end"))


def _exit_rc(exit_code: str | None) -> int:
    rc = (exit_code or "0:0").split(":", 1)[0]
    return int(rc) if rc.isdigit() else 0


def _group(j: dict[str, Any]) -> str:
    extra = j.get("extra") or {}
    return extra.get("Group") or extra.get("GID") or "-"


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / 1024


def _share(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole * 100


def gpu_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GPU, what jobstats shows and more: utilization (mean, p95), memory used (peak) of the
    card's total and its share, power (mean, of its limit), energy; from gpu_usage rows or
    summary devices (the same keys)."""
    out = []
    for g in rows:
        kwh = None if g.get("energy_j") is None else g["energy_j"] / 3.6e6
        out.append({
            "node": g.get("node"), "minor": g.get("minor"), "uuid": g.get("uuid"), "name": g.get("name"),
            "util_mean_pct": g.get("util_mean"), "util_p95_pct": g.get("util_p95"),
            "mem_used_max_gib": _gib(g.get("mem_used_max_mib")), "mem_total_gib": _gib(g.get("mem_total_mib")),
            "mem_used_pct": _share(g.get("mem_used_max_mib"), g.get("mem_total_mib")),
            "power_mean_w": g.get("power_mean_w"), "power_limit_w": g.get("power_limit_w"),
            "energy_kwh": kwh, "did_work": g.get("did_work"), "lost": bool(g.get("lost")),
        })
    return out


def _r(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)


def _when(t: int | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _iso_utc(t: int | float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


# --- text --------------------------------------------------------------------------------------
def _seff_lines(view: JobView, e: eff.Efficiency, running: bool) -> list[str]:
    """Slurm 22.05.8 seff's lines, in its words and formats."""
    j = view.job
    state = base_state(j.get("state")) or "UNKNOWN"
    lines = [f"Job ID: {j['job_id_raw']}"]
    if j.get("array_job_id") is not None:
        lines.append(f"Array Job ID: {j['job_id']}")
    lines += [f"Cluster: {j['cluster']}", f"User/Group: {j['user']}/{_group(j)}"]
    if state in ("PENDING", "RUNNING"):
        lines.append(f"State: {state}")
    else:
        lines.append(f"State: {state} (exit code {_exit_rc(j.get('exit_code'))})")
    if e.cores == 1:
        lines.append(f"Cores: {e.cores}")
    else:
        lines += [f"Nodes: {e.nodes}", f"Cores per node: {e.cores_per_node}"]
    if _pending(j):
        lines.append("Efficiency not available for jobs in the PENDING state.")
        return lines
    lines += [f"CPU Utilized: {eff.seff_time(e.cpu_used_s)}",
              f"CPU Efficiency: {eff.seff_pct(e.cpu_eff_pct)} of {eff.seff_time(e.core_walltime_s)} core-walltime",
              f"Job Wall-clock time: {eff.seff_time(e.elapsed_s)}"]
    if e.mem_used_kib is None:
        lines.append("Memory Utilized: unknown (no step has reported its memory use yet)")
    elif e.mem_estimated:
        lines.append(f"Memory Utilized: {eff.seff_kbytes(e.mem_used_kib)} (estimated maximum)")
    else:
        lines.append(f"Memory Utilized: {eff.seff_kbytes(e.mem_used_kib)}")
    if e.mem_request_kib is None:
        lines.append("Memory Efficiency: unknown (no memory request recorded)")
    elif e.mem_used_kib is None:
        lines.append(f"Memory Efficiency: unknown, of {eff.seff_kbytes(e.mem_request_kib)}")
    elif not e.mem_estimated:
        lines.append(f"Memory Efficiency: {eff.seff_pct(e.mem_eff_pct or 0.0)} of {eff.seff_kbytes(e.mem_request_kib)}")
    else:
        unit = "core" if e.mem_per == "cpu" else "node"
        lines.append(f"Memory Efficiency: {eff.seff_pct(e.mem_eff_pct or 0.0)} of {eff.seff_kbytes(e.mem_request_kib)} "
                     f"({eff.seff_kbytes(e.mem_request_each_kib or 0.0)}/{unit})")
    if running:
        lines.append(f"WARNING: Efficiency statistics may be misleading for {state} jobs.")
    return lines


def _gpu_table(rows: list[dict[str, Any]], idle: str = "did no work") -> list[str]:
    lines = [f"{'node':<12} {'GPU':>3} {'util avg':>9} {'util p95':>9} {'memory used (peak) of total':>29} "
             f"{'power mean of limit':>19} {'energy':>10}  note"]
    for g in gpu_rows(rows):
        note = "lost" if g["lost"] else (idle if g["did_work"] is False else "")
        if g["mem_used_max_gib"] is None:
            mem = "-"
        elif g["mem_total_gib"]:
            mem = f"{g['mem_used_max_gib']:.1f} of {g['mem_total_gib']:.1f} GiB ({g['mem_used_pct']:.1f}%)"
        else:
            mem = f"{g['mem_used_max_gib']:.1f} GiB"
        power = _f(g["power_mean_w"], ".0f", " W")
        if g["power_mean_w"] is not None and g["power_limit_w"]:
            power = f"{g['power_mean_w']:.0f} of {g['power_limit_w']:.0f} W"
        lines.append(f"{g['node'] or '-':<12} {g['minor']:>3} {_f(g['util_mean_pct'], '8.1f', '%'):>9} "
                     f"{_f(g['util_p95_pct'], '8.1f', '%'):>9} {mem:>29} {power:>19} "
                     f"{_f(g['energy_kwh'], '6.3f', ' kWh'):>10}  {note}".rstrip())
    return lines


def live_util(live: Live, alloc_gpus: int) -> tuple[float | None, int]:
    """(utilization over the allocation %, GPUs that did work) of a live checkpoint, by
    usage.utilization's definitions (the ones sacct's GPUUtilAvg/GPUsUsed use)."""
    from piqc_slurm.usage.utilization import fold, util_over_allocation

    st = fold([{**d, "node": live.node} for d in live.devices])
    return util_over_allocation(st, alloc_gpus), st.used


def render(view: JobView, values: GpuValues, rate: float, found: list[dict] | None = None,
           stored: bool = False, *, now: int | None = None, live: Live | None = None,
           live_note: str | None = None, parts: list[tuple[int, str | None, float]] | None = None) -> str:
    """values: the job's GPU fields as `piqc-slurm sacct` computes them (query.gpu.values_for_job);
    rate: its USD per GPU-hour (usage.prices); parts: (GPUs, type, rate) per GPU type
    (usage.cost.rated_parts), shown when its nodes hold several; found: its findings (stored by analyze, else
    `judge_job`'s), each with code, sentence and advice; live/live_note: a running job's
    checkpoint figures, or why there are none."""
    j = view.job
    now = int(time.time()) if now is None else now
    running = is_running(j)
    e = eff.of_job(j, now=now, only_steps=view.steps)
    lines = _seff_lines(view, e, running)
    if view.steps is not None:
        lines.append(f"(step {', '.join(view.steps)} only, as seff JOBID.STEP counts it)")
    if not _pending(j):
        tl = (j.get("extra") or {}).get("Timelimit") or (format_elapsed(e.timelimit_s) if e.timelimit_s else "-")
        if e.time_share_pct is not None:
            lines.append(f"Time Limit: {tl} (wall-clock time is {eff.seff_pct(e.time_share_pct)} of it"
                         f"{' so far' if running else ''})")
        else:
            lines.append(f"Time Limit: {tl}")
    if running:
        lines.append("Running: figures so far. CPU and memory count the steps that had ended when the store last "
                     "ingested this job; wall-clock time and cost count until now.")
    lines.append("")
    state = j.get("state") or ""
    by = f" by uid {j['state_by']}" if j.get("state_by") is not None else ""
    lines += [
        f"Name: {j['name']}   Account: {j['account']}   Partition: {j['partition']}   QOS: {j.get('qos') or '-'}",
        f"Submit: {_when(j['submit'])}   Start: {_when(j['start'])}   End: {_when(j['end'])}",
        f"Node list: {j['nodelist'] or '-'}" + ("" if running or _pending(j) else
                                                 f"   ExitCode: {j.get('exit_code') or '-'} "
                                                 f"({base_state(state) or '-'}{by})"),
    ]
    ngpu = j["alloc_gpus"] or 0
    cost = money(values.cost_usd)
    so_far = " so far" if running else ""
    if not ngpu:
        lines.append("GPUs: none allocated")
        lines.append(f"Cost{so_far}: ${cost:,.2f} (CPU-only job)")
        return "\n".join(lines) + "\n"
    if parts and len(parts) > 1:  # nodes of different GPU types: each part at its type's price
        lines.append(f"GPUs: {ngpu} (" + " + ".join(f"{n} x {t or 'GPU'}" for n, t, _ in parts) + ")")
        lines.append(f"GPU cost{so_far}: ${cost:,.2f} ({format_elapsed(e.elapsed_s)} x ("
                     + " + ".join(f"{n} {t or 'GPU'} at ${r:.2f}" for n, t, r in parts) + ") per GPU-hour)")
    else:
        lines.append(f"GPUs: {ngpu}" + (f" x {values.gpu_type or j['gpu_type']}"
                                         if (values.gpu_type or j.get("gpu_type")) else ""))
        lines.append(f"GPU cost{so_far}: ${cost:,.2f} ({ngpu} GPU x {format_elapsed(e.elapsed_s)} at "
                     f"${rate:.2f}/GPU-hour)")
    if running:
        lines += _live_lines(live, live_note, ngpu, now)
    if not view.summaries:
        if not running:
            lines.append("No sampler data for this job (hooks not wired on its nodes, or not ingested yet).")
        return "\n".join(lines) + "\n"
    for s in view.summaries:
        if s["monitor"] == "off":
            lines.append(f"{s['node']}: GPU monitoring switched off by the user.")
        elif not s["nvml_ok"]:
            lines.append(f"{s['node']}: no GPU data: {s['nvml_error'] or s['partial_reason'] or 'unknown'}.")
        elif s["partial"]:
            lines.append(f"{s['node']}: partial data: {s['partial_reason']}.")
    if view.gpus:
        lines.append("")
        lines += _gpu_table(view.gpus)
        used = values.gpus_used or 0
        lines.append("")
        lines.append(f"GPU utilization over the allocation: {values.util_avg or 0:.1f}%   "
                     f"GPUs that did work: {used} of {ngpu}")
        if values.mem_peak_gib is not None or values.energy_kwh is not None:
            lines.append(f"GPU memory peak: {_f(values.mem_peak_gib, '.2f', ' GiB')}   "
                         f"GPU energy: {_f(values.energy_kwh, '.3f', ' kWh')}")
    if values.waste_usd is not None and not running:
        lines.append(f"Waste: ${money(values.waste_usd):,.2f} of ${cost:,.2f}")
    if values.est_elapsed is not None:
        lines.append(f"EstElapsed on the advice: {format_elapsed(values.est_elapsed)}")
    if found and not running:
        lines.append("")
        source = ("from `piqc-slurm analyze`" if stored
                  else "the analysis rules on this job; `piqc-slurm analyze` adds tiers and regressions")
        lines.append(f"Findings ({source}):")
        for f in found:
            lines.append(f"{f['code']}: {f['sentence']}")
            lines.append(f"  Advice: {f['advice']}")
    return "\n".join(lines) + "\n"


def _live_lines(live: Live | None, note: str | None, ngpu: int, now: int) -> list[str]:
    if live is None:
        return [f"Live GPU figures: {note}" if note else "Live GPU figures: none"]
    age = max(0.0, now - live.updated)
    out = ["", f"Live GPU figures so far (sampler checkpoint on {live.node}, written {_when(int(live.updated))}, "
               f"{age:.0f} s ago):"]
    if not live.nvml_ok:
        out.append(f"{live.node}: no GPU data: {live.nvml_error or 'NVML unavailable'}.")
        return out
    out += _gpu_table([{**d, "node": live.node} for d in live.devices], idle="no work so far")
    util, used = live_util(live, ngpu)
    out.append(f"GPU utilization over the allocation so far: {util or 0:.1f}%   GPUs that did work so far: "
               f"{used} of {ngpu}")
    out.append("")
    return out


# --- JSON --------------------------------------------------------------------------------------
JSON_FORMAT = "piqc-seff/1"


def as_json_doc(view: JobView, values: GpuValues, rate: float, found: list[dict] | None = None,
            stored: bool = False, *, now: int | None = None, live: Live | None = None,
            live_note: str | None = None) -> dict[str, Any]:
    """The report as one JSON-ready object (every key documented in docs/seff.md)."""
    j = view.job
    now = int(time.time()) if now is None else now
    running = is_running(j)
    pending = _pending(j)
    e = eff.of_job(j, now=now, only_steps=view.steps)
    ngpu = j["alloc_gpus"] or 0
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "job_id": j["job_id"], "job_id_raw": j["job_id_raw"],
        "array_job_id": j.get("array_job_id"), "array_task_id": j.get("array_task_id"),
        "steps": list(view.steps) if view.steps is not None else None,
        "cluster": j["cluster"], "user": j["user"], "group": _group(j), "account": j["account"],
        "partition": j["partition"], "qos": j.get("qos"), "name": j["name"],
        "state": base_state(j.get("state")) or None, "state_by": j.get("state_by"),
        "exit_code": j.get("exit_code") or None, "exit_status": _exit_rc(j.get("exit_code")),
        "running": running, "pending": pending,
        "submit": _iso_utc(j.get("submit")), "start": _iso_utc(j.get("start")), "end": _iso_utc(j.get("end")),
        "nodelist": j.get("nodelist") or None,
        "nodes": e.nodes, "cores": e.cores, "cores_per_node": e.cores_per_node,
        "elapsed_s": e.elapsed_s, "timelimit_s": e.timelimit_s, "time_limit_pct": _r(e.time_share_pct, 2),
        "cpu_used_s": None if pending else e.cpu_used_s,
        "core_walltime_s": None if pending else e.core_walltime_s,
        "cpu_efficiency_pct": None if pending else _r(e.cpu_eff_pct, 2),
        "mem_used_kib": None if pending else _r(e.mem_used_kib, 3),
        "mem_estimated": e.mem_estimated if e.mem_used_kib is not None else None,
        "mem_request_kib": _r(e.mem_request_kib, 3), "mem_request_per": e.mem_per,
        "mem_request_per_known": e.mem_per_known,
        "mem_efficiency_pct": None if pending or e.mem_used_kib is None else _r(e.mem_eff_pct, 2),
        "cost_usd": money(values.cost_usd),
        "waste_usd": None if running else money(values.waste_usd),
        "gpus": None,
        "findings": None if running or found is None else
        [{"code": f["code"], "sentence": f["sentence"], "advice": f["advice"],
          "waste_usd": money(f.get("waste_usd"))} for f in found],
        "findings_source": None if running or found is None else ("analyze" if stored else "rules"),
        "live": None,
    }
    if ngpu:
        doc["gpus"] = {
            "allocated": ngpu, "type": values.gpu_type or j.get("gpu_type"), "used": values.gpus_used,
            "util_avg_pct": _r(values.util_avg, 1), "mem_peak_gib": _r(values.mem_peak_gib, 2),
            "energy_kwh": _r(values.energy_kwh, 3), "rate_usd_per_gpu_hour": round(rate, 4),
            "advice_gpus": values.advice_gpus, "advice_tier": values.advice_tier,
            "est_elapsed_s": values.est_elapsed,
            "sampled": bool(view.summaries),
            "devices": [_round_gpu(g) for g in gpu_rows(view.gpus)],
        }
    if running and ngpu:
        if live is not None:
            util, used = live_util(live, ngpu)
            doc["live"] = {"node": live.node, "updated": _iso_utc(live.updated), "nvml_ok": live.nvml_ok,
                           "nvml_error": live.nvml_error, "util_avg_pct": _r(util, 1), "used": used,
                           "devices": [_round_gpu(g) for g in gpu_rows([{**d, "node": live.node}
                                                                         for d in live.devices])]}
        else:
            doc["live"] = {"note": live_note}
    return doc


def _round_gpu(g: dict[str, Any]) -> dict[str, Any]:
    nd = {"util_mean_pct": 1, "util_p95_pct": 1, "mem_used_max_gib": 2, "mem_total_gib": 2, "mem_used_pct": 1,
          "power_mean_w": 1, "power_limit_w": 1, "energy_kwh": 4}
    return {k: (_r(v, nd[k]) if k in nd and isinstance(v, int | float) and not isinstance(v, bool) else v)
            for k, v in g.items()}


# --- the command, without click ----------------------------------------------------------------
def run(url: str, cfg, jobid: str, *, cluster: str | None, caller, now: int, as_json: bool = False,
        live: Callable[..., tuple[Live | None, str | None]] | None = None) -> str:
    """The report of `jobid` (text, or one JSON object and a newline) for `caller`.

    url: the store, read through query.store.Reader once the job id is known to be good
    (StoreError, exit 3, where it cannot be read); live(job, cfg, catalog): a running GPU job's
    checkpoint figures, or why there are none (commands/seff.py reads the node's spool). UsageError
    (exit 2) for a bad job id, a job the store does not hold or `caller` may not see, and a step
    the job does not have."""
    from piqc_slurm.errors import UsageError
    from piqc_slurm.query.access import is_admin
    from piqc_slurm.query.gpu import load_price_book, values_for_job
    from piqc_slurm.query.jobids import parse_jobs

    sels = parse_jobs([jobid])
    if len(sels) != 1:
        raise UsageError(f"Bad job/step specified: {jobid} (seff takes one job id: 1234, 1234_5, 1234+1 or "
                         f"1234.STEP)" if sels else f"Bad job/step specified: {jobid!r}")
    sel = sels[0]
    reader = Reader(url)
    try:
        view = load_job(reader, sel, cluster)
        allowed = view is not None and (view.job["user"] == caller.name
                                        or is_admin(caller, cfg["access.admin_users"], cfg["access.admin_groups"]))
        if not allowed:
            raise UsageError(f"job {jobid} not found in the store (ingest first, or it is not yours)")
        j = view.job
        if view.steps is not None and not any(s.get("step") in view.steps for s in j.get("steps") or ()):
            raise UsageError(f"job {j['job_id']} has no step {sel.step} in the store")
        stored = stored_findings(reader, j)
        book = load_price_book(reader, cfg)
        values = values_for_job(reader, j, book, now=now)
    finally:
        reader.close()
    prices = book.for_cluster(j["cluster"])
    rate = prices.gpu_rate(values.gpu_type, j["partition"]).usd
    running = is_running(j)
    found = None if running else (stored if stored is not None else judge_job(view, values.cost_usd, rate, prices, cfg))
    got, note = (None, None)
    if running and (j.get("alloc_gpus") or 0) and live is not None:
        got, note = live(j, cfg, prices.catalog)
    if as_json:
        doc = as_json_doc(view, values, rate, found, stored is not None, now=now, live=got, live_note=note)
        return json.dumps(doc, ensure_ascii=False) + "\n"
    from piqc_slurm.usage.cost import rated_parts

    parts = rated_parts(j.get("alloc_gpus") or 0, values.gpu_type or j.get("gpu_type"), j.get("alloc_tres") or "",
                        prices, j["partition"])
    return render(view, values, rate, found, stored is not None, now=now, live=got, live_note=note, parts=parts)
