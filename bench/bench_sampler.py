#!/usr/bin/env python3
"""Sampler cost: what the per-job sampler costs a node in CPU and memory.

    .venv/bin/python bench/run.py --only sampler [--quick]

Runs the real sampler process (`python -m piqc_slurm.sampler RUN_DIR`) over 8
fake GPUs (docker-slurm/fakenvml, read through the real pynvml), all loaded by
docker-slurm/fakegpu-work, at interval 1 s and 0.1 s, with GPM on (H100s, the
load giving SM/tensor/DRAM activity) and off (A100s: no GPM), the other
settings the production defaults (processes every 10 s, checkpoint every
30 s), for 60 s of steady state (quick: 10 s). The four run side by side
(each its own fake driver state; a sampler uses a fraction of a percent of
a core, so they do not crowd each other out). Reports per run:

- cpu: the sampler's on-CPU time over the steady state (from 12 s after its
  first checkpoint, past its first process check, to the end; the sum of /proc/<pid>/task/*/schedstat, ns
  resolution: utime+stime's 10 ms ticks are too coarse for 0.1 %) as % of one
  core; targets at 1 s: < 0.2 %;
- peak RSS (VmHWM) in MB (10^6 bytes); target at 1 s: < 40 MB;
- start-up CPU (interpreter, imports, nvmlInit), first checkpoint, stop latency;
- once: building and atomically writing (temp + fsync + rename + directory
  fsync) a checkpoint of 8 GPUs with full aggregates, median over 200 writes.
Needs make and a C compiler (to build the fake driver).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import REPO, Ctx, Skip  # noqa: E402

sys.path.insert(0, str(REPO))

from piqc_slurm.sampler.aggregate import GpuAggregate, Sample  # noqa: E402
from piqc_slurm.sampler.checkpoint import build_checkpoint, write_checkpoint  # noqa: E402
from piqc_slurm.sampler.context import Context  # noqa: E402
from piqc_slurm.sampler.source import DeviceInfo  # noqa: E402

WARMUP = 12.0  # seconds after the first checkpoint before the steady state is measured (> process_interval)


def cpu_seconds(pid: int) -> float:
    """On-CPU seconds of all the process's threads (schedstat: nanoseconds)."""
    ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return ns / 1e9


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def wait_for(path: Path, timeout: float) -> float:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"bench_sampler: {path.name} did not appear in {timeout:.0f}s")
        time.sleep(0.01)
    return time.monotonic() - t0


def checkpoint_write_times(gpus: int, writes: int, workdir: Path) -> tuple[float, float, int]:
    """(median ms, p95 ms, bytes) for building + writing a full checkpoint."""
    pairs = []
    for m in range(gpus):
        agg = GpuAggregate(1.0)
        for i in range(3600):        # an hour of samples: the size does not depend on it
            u = float((i * 7 + m) % 101)
            agg.add(float(i), Sample(util=u, mem_util=u / 2, mem_used_mib=40_000.0 + i, power_w=300 + u,
                                     energy_mj=i * 300_000.0, sm_clock_mhz=1500.0, temp_c=60.0))
            if i % 10 == 0:
                agg.add_processes(float(i), [1000 + m], [1000 + m])
        pairs.append((DeviceInfo(minor=m, index=m, uuid=f"GPU-{m:08x}", name="NVIDIA H100 80GB HBM3",
                                 mem_total_mib=81559.0, power_limit_w=700.0), agg))
    path = workdir / "checkpoint.json"
    times = []
    for _ in range(writes):
        t0 = time.perf_counter()
        doc = build_checkpoint(job_id=1, started=time.time(), updated=time.time(), final=False,
                               exit_reason=None, nvml_ok=True, nvml_error=None, driver_version="550.54.15",
                               interval=1.0, gpus=pairs, timeline_bins=0)
        write_checkpoint(path, doc)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], path.stat().st_size


def watch_settings(prom: Path):
    """[watch] as the Prolog passes it, every rule on, the textfile every 5 s (3x the default rate)."""
    from piqc_slurm.analyze.rules import Thresholds
    from piqc_slurm.config import Config, defaults
    from piqc_slurm.sampler.watch import WatchSettings

    cfg = Config(defaults())
    return WatchSettings(idle_minutes=30.0, gpu_idle_minutes=60.0, underbatched_minutes=60.0,
                         thresholds=Thresholds.from_config(cfg)._asdict(), textfile_dir=str(prom),
                         textfile_interval=5.0, labels={"account": "bench", "partition": "gpu"},
                         prices={"prices": {}, "partition_prices": {}, "usage.cpu_core_hour_price": 0.0})


def measure(seconds: float, interval: float, gpm: bool, watch: bool = False, gpus: int = 8,
            process_interval: float = 10.0, checkpoint_interval: float = 30.0) -> dict:
    """One sampler run over `gpus` loaded fake GPUs: its CPU, memory and latencies."""
    top = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    work = sampler = None
    name = "NVIDIA H100 80GB HBM3" if gpm else "NVIDIA A100-SXM4-80GB"  # fakenvml: GPM on H100/H200 names
    try:
        lib = top / "lib"
        subprocess.run(["make", "-s", "-C", str(REPO / "docker-slurm" / "fakenvml"), f"OUT={lib}"],
                       check=True, stdout=subprocess.DEVNULL)
        state = top / "state"
        state.mkdir()
        state.chmod(0o1777)
        conf = top / "fakenvml.conf"
        conf.write_text(f"state_dir {state}\n" + "".join(
            f"gpu {m} GPU-bench-{m:04d} 81559 700 {name}\n" for m in range(gpus)))
        run_dir = top / "run"
        run_dir.mkdir(mode=0o700)
        job_id = 990_000 + (os.getpid() * 7 + int(interval * 10) + gpm) % 9_999
        ctx = Context(cluster="bench", job_id=job_id, restart_count=0, node="bench", uid=os.getuid(),
                      user="bench", gpus=tuple(range(gpus)), interval=interval,
                      process_interval=process_interval, checkpoint_interval=checkpoint_interval,
                      timeline_bin=60, active_util=5.0, orphan_check=60.0, started=time.time(),
                      watch=watch_settings(top / "prom") if watch else None)
        (top / "prom").mkdir()
        (run_dir / "context.json").write_text(ctx.to_json())
        env = {k: v for k, v in os.environ.items() if k not in ("FAKENVML_FAULT", "SLURM_JOB_GPUS",
                                                                  "CUDA_VISIBLE_DEVICES")}
        env.update(LD_LIBRARY_PATH=str(lib), FAKENVML_CONFIG=str(conf), PYTHONPATH=str(REPO),
                   PIQC_SAMPLER_LOG="stderr", SLURM_JOB_ID=str(job_id))
        minors = ",".join(map(str, range(gpus)))
        load = {"gpus": list(range(gpus)), "util": 85, "util_jitter": 10, "mem_gib": 60, "mem_util": 50,
                "process": True}
        if gpm:
            load.update(sm_active=0.6, tensor_active=0.3, dram_active=0.4)
        work_argv = [str(REPO / "docker-slurm" / "fakegpu-work")]
        if not Path("/usr/bin/python3").exists():
            work_argv.insert(0, sys.executable)
        work = subprocess.Popen([*work_argv, "--minors", minors, "--seconds", str(seconds + WARMUP + 60),
                                 "--load", json.dumps([load])], env=env, stderr=subprocess.DEVNULL)
        for m in range(gpus):
            wait_for(state / f"gpu{m}.state", 10)

        sampler = subprocess.Popen([sys.executable, "-m", "piqc_slurm.sampler", str(run_dir)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = wait_for(run_dir / "checkpoint.json", 30)
        startup_cpu = cpu_seconds(sampler.pid)
        time.sleep(WARMUP)  # the first process check and what it imports belong to the start, not the run
        t_a, c_a = time.monotonic(), cpu_seconds(sampler.pid)
        time.sleep(seconds)
        t_b, c_b = time.monotonic(), cpu_seconds(sampler.pid)
        hwm, rss = status_kib(sampler.pid, "VmHWM"), status_kib(sampler.pid, "VmRSS")
        t_stop = time.monotonic()
        sampler.send_signal(signal.SIGTERM)
        rc = sampler.wait(timeout=10)
        stop = time.monotonic() - t_stop
        doc = json.loads((run_dir / "checkpoint.json").read_text())
        samples = min(g["agg"]["samples"] for g in doc["gpus"])
        if watch and "watch" not in doc:
            raise RuntimeError("watch on, but the checkpoint has no watch state: the run did not watch")
        sm = [g["agg"].get("sm_active_mean") for g in doc["gpus"]]
    finally:
        for proc in (sampler, work):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(top, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"sampler exited {rc} (interval {interval}, gpm {gpm})")
    if gpm and not any(v is not None for v in sm):
        raise RuntimeError("GPM on, but the summary has no SM activity: the run did not measure GPM")
    return {"seconds": t_b - t_a, "cpu_pct": 100 * (c_b - c_a) / (t_b - t_a), "startup_cpu_s": startup_cpu,
            "peak_rss_mb": hwm * 1024 / 1e6, "rss_mb": rss * 1024 / 1e6, "first_checkpoint_s": first,
            "stop_s": stop, "samples_per_gpu": samples, "gpm_measured": any(v is not None for v in sm)}


def suite(ctx: Ctx) -> None:
    if not shutil.which("make"):
        raise Skip("needs make and a C compiler (the fake NVML driver)")
    seconds = 10.0 if ctx.quick else 60.0
    runs = [(1.0, True, False), (1.0, False, False), (0.1, True, False), (0.1, False, False), (1.0, True, True)]
    with ThreadPoolExecutor(len(runs)) as pool:
        res = list(pool.map(lambda r: measure(seconds, *r), runs))
    for (interval, gpm, watch), r in zip(runs, res, strict=True):
        tag = f"{interval:g}s.gpm_{'on' if gpm else 'off'}" + (".watch" if watch else "")
        what = f"8 GPUs at {interval:g} s, GPM {'on' if gpm else 'off'}" + (
            ", watch and textfile on (every rule, textfile every 5 s)" if watch else "")
        one_s = interval == 1.0
        ctx.add(f"cpu.{tag}", f"Sampler CPU, % of one core, {what}", r["cpu_pct"], "%",
                target=0.2 if one_s else None, op="<", gate=False, seconds=r["seconds"],
                startup_cpu_s=r["startup_cpu_s"], samples_per_gpu=r["samples_per_gpu"],
                first_checkpoint_s=r["first_checkpoint_s"], stop_s=r["stop_s"])
        ctx.add(f"rss.{tag}", f"Sampler peak RSS, {what}", r["peak_rss_mb"], "MB",
                target=40.0 if one_s else None, op="<", rss_mb=r["rss_mb"])
    ctx.add("watch.overhead", "Sampler CPU with the watch and textfile on / off (1 s, GPM on)",
            res[4]["cpu_pct"] / res[0]["cpu_pct"] if res[0]["cpu_pct"] > 0 else 0.0, "x", gate=False)
    ctx.add("startup_cpu", "Sampler start-up CPU (interpreter, imports, nvmlInit), 1 s GPM on",
            res[0]["startup_cpu_s"], "s", gate=False)
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as d:
        med, p95, size = checkpoint_write_times(8, 50 if ctx.quick else 200, Path(d))
    ctx.add("checkpoint_write", "Checkpoint of 8 GPUs built and written atomically (fsync): median", med, "ms",
            gate=True, p95=p95, bytes=size)


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--only", "sampler", *sys.argv[1:]]))
