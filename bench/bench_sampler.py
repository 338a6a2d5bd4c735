#!/usr/bin/env python3
"""What the per-job sampler costs a node: CPU, memory, checkpoint writes.

Runs the real sampler process (`python -m piqc_slurm.sampler RUN_DIR`) for
--seconds over --gpus fake GPUs (docker-slurm/fakenvml, read through the real
pynvml), all loaded by docker-slurm/fakegpu-work, at the production
defaults (interval 1 s, processes every 10 s, checkpoint every 30 s) unless
told otherwise. Reports:

- cpu: the sampler's utime+stime from /proc/<pid>/stat over the steady
  state (from its first checkpoint to the end), as % of one core; plus the
  CPU its start-up took (interpreter, imports, nvmlInit);
- peak RSS: VmHWM from /proc/<pid>/status;
- checkpoint write time: in this process, building and atomically writing
  (temp + fsync + rename + directory fsync) a checkpoint of --gpus GPUs
  with full aggregates, median and p95 over --writes writes, and its size;
- first checkpoint and stop latency (SIGTERM to exit) of the real process.

One summary line on stdout (add --json for a JSON object instead).
Needs make and a C compiler (to build the fake driver). Run as:
    .venv/bin/python bench/bench_sampler.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from piqc_slurm.sampler.aggregate import GpuAggregate, Sample  # noqa: E402
from piqc_slurm.sampler.checkpoint import build_checkpoint, write_checkpoint  # noqa: E402
from piqc_slurm.sampler.context import Context  # noqa: E402
from piqc_slurm.sampler.source import DeviceInfo  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="steady-state run time (default 60)")
    ap.add_argument("--gpus", type=int, default=8, help="fake GPUs, all loaded (default 8)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--process-interval", type=float, default=10.0)
    ap.add_argument("--checkpoint-interval", type=float, default=30.0)
    ap.add_argument("--writes", type=int, default=200, help="checkpoint writes to time (default 200)")
    ap.add_argument("--json", action="store_true", help="print a JSON object instead of one line")
    args = ap.parse_args()
    if not shutil.which("make"):
        raise SystemExit("bench_sampler: make and a C compiler are needed for the fake NVML driver")

    top = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    work = sampler = None
    try:
        lib = top / "lib"
        subprocess.run(["make", "-s", "-C", str(REPO / "docker-slurm" / "fakenvml"), f"OUT={lib}"],
                       check=True, stdout=subprocess.DEVNULL)
        state = top / "state"
        state.mkdir()
        state.chmod(0o1777)
        conf = top / "fakenvml.conf"
        conf.write_text(f"state_dir {state}\n" + "".join(
            f"gpu {m} GPU-bench-{m:04d} 81559 700 NVIDIA H100 80GB HBM3\n" for m in range(args.gpus)))
        run_dir = top / "run"
        run_dir.mkdir(mode=0o700)
        job_id = 990_000 + os.getpid() % 9_999
        ctx = Context(cluster="bench", job_id=job_id, restart_count=0, node="bench", uid=os.getuid(),
                      user="bench", gpus=tuple(range(args.gpus)), interval=args.interval,
                      process_interval=args.process_interval, checkpoint_interval=args.checkpoint_interval,
                      timeline_bin=60, active_util=5.0, orphan_check=60.0, started=time.time())
        (run_dir / "context.json").write_text(ctx.to_json())
        env = {k: v for k, v in os.environ.items() if k not in ("FAKENVML_FAULT", "SLURM_JOB_GPUS",
                                                                  "CUDA_VISIBLE_DEVICES")}
        env.update(LD_LIBRARY_PATH=str(lib), FAKENVML_CONFIG=str(conf), PYTHONPATH=str(REPO),
                   PIQC_SAMPLER_LOG="stderr", SLURM_JOB_ID=str(job_id))
        minors = ",".join(map(str, range(args.gpus)))
        load = [{"gpus": list(range(args.gpus)), "util": 85, "util_jitter": 10, "mem_gib": 60,
                 "mem_util": 50, "process": True}]
        work_argv = [str(REPO / "docker-slurm" / "fakegpu-work")]
        if not Path("/usr/bin/python3").exists():
            work_argv.insert(0, sys.executable)
        work = subprocess.Popen([*work_argv, "--minors", minors, "--seconds", str(args.seconds + 60),
                                 "--load", json.dumps(load)], env=env, stderr=subprocess.DEVNULL)
        for m in range(args.gpus):
            wait_for(state / f"gpu{m}.state", 10)

        sampler = subprocess.Popen([sys.executable, "-m", "piqc_slurm.sampler", str(run_dir)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = wait_for(run_dir / "checkpoint.json", 30)
        startup_cpu = cpu_seconds(sampler.pid)
        t_a, c_a = time.monotonic(), startup_cpu
        time.sleep(args.seconds)
        t_b, c_b = time.monotonic(), cpu_seconds(sampler.pid)
        hwm, rss = status_kib(sampler.pid, "VmHWM"), status_kib(sampler.pid, "VmRSS")
        t_stop = time.monotonic()
        sampler.send_signal(signal.SIGTERM)
        rc = sampler.wait(timeout=10)
        stop = time.monotonic() - t_stop
        doc = json.loads((run_dir / "checkpoint.json").read_text())
        samples = min(g["agg"]["samples"] for g in doc["gpus"])
        util = statistics.mean(g["agg"].get("util_mean", 0) for g in doc["gpus"])
        med, p95, size = checkpoint_write_times(args.gpus, args.writes, top)
    finally:
        for proc in (sampler, work):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(top, ignore_errors=True)

    result = {
        "gpus": args.gpus, "interval_s": args.interval, "seconds": round(t_b - t_a, 1),
        "cpu_pct_one_core": round(100 * (c_b - c_a) / (t_b - t_a), 2),
        "startup_cpu_s": round(startup_cpu, 2), "peak_rss_mib": round(hwm / 1024, 1),
        "rss_mib": round(rss / 1024, 1), "first_checkpoint_s": round(first, 2),
        "stop_s": round(stop, 3), "exit": rc, "samples_per_gpu": samples, "util_mean": round(util, 1),
        "checkpoint_write_ms_median": round(med, 2), "checkpoint_write_ms_p95": round(p95, 2),
        "checkpoint_bytes": size,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print("bench_sampler: {gpus} GPUs @ {interval_s:g}s for {seconds}s: cpu {cpu_pct_one_core}% of one core "
              "(start-up {startup_cpu_s}s cpu), peak RSS {peak_rss_mib} MiB, first checkpoint "
              "{first_checkpoint_s}s, stop {stop_s}s (exit {exit}), {samples_per_gpu} samples/GPU "
              "(util {util_mean}%), checkpoint write {checkpoint_write_ms_median} ms median / "
              "{checkpoint_write_ms_p95} ms p95 ({checkpoint_bytes} bytes)".format(**result))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
