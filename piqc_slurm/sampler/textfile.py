"""Live metrics for Prometheus: node_exporter's textfile collector reads every `*.prom` file in its
directory (`--collector.textfile.directory`); the sampler keeps one per job there
(`[watch] textfile_dir`), rewritten every `textfile_interval` seconds by a temporary file renamed
over it (the collector never reads half a file), and removed when the job ends.

Series (gauges; labels jobid, user, account, partition, cluster, and per GPU gpu, uuid, type). The
Slurm job is `jobid`, not `job`: Prometheus gives every scraped series its own `job` label (the
scrape job), and a clashing exposed one would be renamed `exported_job` (jobstats' exporters do the
same for the same reason).

  piqc_gpu_utilization_percent   the latest utilization.gpu sample
  piqc_gpu_memory_used_bytes     the latest memory used
  piqc_gpu_power_watts           the latest power draw
  piqc_gpu_idle_seconds          how long the GPU has been idle by the watch's rule (0: working)
  piqc_job_cost_usd              the job's cost so far (usage.cost), absent without a price
  piqc_job_rule_firing           1 while a live rule holds (rule label), else 0

Label values are escaped as the text format asks (backslash, double quote, newline).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from piqc_slurm.sampler.watch import RULES

_NAME = re.compile(r"[^A-Za-z0-9_.-]")

HELP = {
    "piqc_gpu_utilization_percent": "GPU utilization (NVML utilization.gpu) of a running Slurm job's GPU, %",
    "piqc_gpu_memory_used_bytes": "GPU memory used on a running Slurm job's GPU",
    "piqc_gpu_power_watts": "Power draw of a running Slurm job's GPU",
    "piqc_gpu_idle_seconds": ("Seconds a running Slurm job's GPU has been idle (piqc-slurm's did_work rule), "
                              "0 while it works"),
    "piqc_job_cost_usd": "Cost so far of a running Slurm job's GPUs, USD",
    "piqc_job_rule_firing": "1 while a piqc-slurm live rule holds for the job",
}


def file_name(cluster: str, job_id: int, restart: int) -> str:
    return f"piqc_job_{_NAME.sub('_', cluster) or 'cluster'}_{int(job_id)}_{int(restart)}.prom"


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(d: Mapping[str, object]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in d.items()) + "}"


def _num(v: float) -> str:
    return repr(float(v))


def render(job: Mapping[str, object], gpus: Sequence[Mapping[str, Any]], *, cost_usd: float | None,
           firing: Mapping[str, bool]) -> str:
    """The file's text. job: the job labels; gpus: per GPU {"gpu", "uuid", "type", "util",
    "mem_bytes", "power_w", "idle_s"} (None: not measured, the series left out)."""
    series: dict[str, list[str]] = {k: [] for k in HELP}
    for g in gpus:
        lab = _labels({**job, "gpu": g["gpu"], "uuid": g.get("uuid") or "", "type": g.get("type") or ""})
        for name, key in (("piqc_gpu_utilization_percent", "util"), ("piqc_gpu_memory_used_bytes", "mem_bytes"),
                          ("piqc_gpu_power_watts", "power_w"), ("piqc_gpu_idle_seconds", "idle_s")):
            if g.get(key) is not None:
                series[name].append(f"{name}{lab} {_num(g[key])}")
    jl = _labels(job)
    if cost_usd is not None:
        series["piqc_job_cost_usd"].append(f"piqc_job_cost_usd{jl} {_num(cost_usd)}")
    for rule in RULES:
        lab = _labels({**job, "rule": rule})
        series["piqc_job_rule_firing"].append(f"piqc_job_rule_firing{lab} {1 if firing.get(rule) else 0}")
    out: list[str] = []
    for name, lines in series.items():
        if lines:
            out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge", *lines]
    return "\n".join(out) + "\n"


def write(directory: str | Path, name: str, text: str) -> None:
    """Atomically: a new temporary file (never an existing one, never through a link) renamed over
    `name`. OSError on failure (the caller logs it and goes on sampling)."""
    d = Path(directory)
    tmp = d / f".{name}.{os.getpid()}.tmp"  # not *.prom: the collector skips it
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        data = text.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # the collector runs as its own user; the sampler's umask is 077
        os.replace(tmp, d / name)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove(directory: str | Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(directory) / name)
