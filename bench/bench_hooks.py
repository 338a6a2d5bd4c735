#!/usr/bin/env python3
"""Benchmark the slurmd hooks as slurmd runs them: the shipped wrapper
(epilog/piqc-hook.sh, rendered like an install) with a bare hook environment
(no PATH, no HOME), timed from fork to exit.

    .venv/bin/python bench/bench_hooks.py [--runs 30]

1. Prolog: median and p90 wall time of the wrapper for a 4-GPU job (it starts
   a real sampler over the fake NVML driver each time; each is then stopped).
2. Epilog: median wall time for a job that ran 1 minute and one that ran
   7 days, from synthetic run dirs (checkpoint of aggregates fed a sample
   every 60 s for the whole run, and a timeline of one 60 s bin per GPU for
   the whole run: 80,640 lines for 7 days x 8 GPUs). The Epilog must not
   read the timeline, so both should cost the same.
Needs root (the hooks run as root) and `make -C docker-slurm/fakenvml`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from piqc_slurm.hooks.spool import write_json_atomic  # noqa: E402
from piqc_slurm.sampler.aggregate import GpuAggregate, Sample  # noqa: E402
from piqc_slurm.sampler.checkpoint import build_checkpoint, write_checkpoint  # noqa: E402
from piqc_slurm.sampler.source import DeviceInfo  # noqa: E402

NGPU = 8


def setup(tmp: Path) -> tuple[Path, dict[str, str]]:
    lib = tmp / "lib"
    lib.mkdir()
    subprocess.run(["make", "-s", "-C", str(REPO / "docker-slurm/fakenvml"), f"OUT={lib}"], check=True)
    state = tmp / "state"
    state.mkdir()
    conf = tmp / "fakenvml.conf"
    conf.write_text(f"state_dir {state}\ndriver_version 550.54.15\n" + "".join(
        f"gpu {i} GPU-00000000-0000-4000-8000-{i:012d} 81559 700 NVIDIA H100 80GB HBM3\n" for i in range(NGPU)))
    cfg = tmp / "piqc.toml"
    cfg.write_text(f'cluster = "bench"\nspool_dir = "{tmp}/spool"\ndelivery = "spool-only"\nsyslog = false\n'
                   "[epilog]\nflush_timeout = 5.0\n")
    env_file = tmp / "hook.env"
    env_file.write_text(f"export PIQC_BIN={REPO}/.venv/bin/piqc-slurm\nexport PIQC_CONFIG={cfg}\n"
                        f"export FAKENVML_CONFIG={conf}\nexport LD_LIBRARY_PATH={lib}\n")
    wrapper = tmp / "50-piqc.sh"
    text = (REPO / "epilog/piqc-hook.sh").read_text()
    wrapper.write_text(text.replace("PIQC_HOOK_ENV=/etc/default/piqc-slurm", f"PIQC_HOOK_ENV={env_file}"))
    wrapper.chmod(0o755)
    out = tmp / "job.out"
    out.write_text("")
    return wrapper, {"out": str(out)}


def hook_env(job: int, context: str, out: str, gpus: str = "0,1,2,3") -> dict[str, str]:
    return {"SLURM_JOB_ID": str(job), "SLURM_JOBID": str(job), "SLURM_CLUSTER_NAME": "bench",
            "SLURMD_NODENAME": "vm", "SLURM_JOB_GPUS": gpus, "CUDA_VISIBLE_DEVICES": gpus,
            "SLURM_JOB_UID": "65534", "SLURM_JOB_GID": "65534", "SLURM_JOB_USER": "nobody",
            "SLURM_JOB_RESTART_COUNT": "0", "SLURM_JOB_PARTITION": "gpu", "SLURM_NODELIST": "vm",
            "SLURM_JOB_STDOUT": out, "SLURM_JOB_WORK_DIR": "/tmp", "SLURM_SCRIPT_CONTEXT": context,
            "SLURM_JOB_EXIT_CODE2": "0:0"}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def synthetic_run_dir(spool: Path, job: int, seconds: int) -> None:
    """A run dir as the sampler leaves it after `seconds` of a 8-GPU job."""
    run = spool / "run" / f"bench.{job}.0.vm"
    run.mkdir(parents=True, mode=0o700)
    started = time.time() - seconds
    devs, aggs = [], []
    for i in range(NGPU):
        agg = GpuAggregate(interval=60.0, process_interval=60.0, active_util=5.0)
        for k in range(max(seconds // 60, 1)):
            t = started + 60 * (k + 1)
            agg.add(t, Sample(util=80 if i < 4 else 0, mem_util=40, mem_used_mib=40960 if i < 4 else 0,
                              power_w=500.0, energy_mj=int(500_000 * 60 * (k + 1)), sm_clock_mhz=1980,
                              temp_c=65))
            if k % 10 == 0:
                agg.add_processes(t, [1000 + i] if i < 4 else [], [1000 + i] if i < 4 else [])
        devs.append(DeviceInfo(minor=i, index=i, uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3",
                               mem_total_mib=81559, power_limit_w=700.0))
        aggs.append(agg)
    bins = max(seconds // 60, 1)
    with open(run / "timeline.jsonl", "w") as fh:
        for k in range(bins):
            for i in range(NGPU):
                fh.write(json.dumps({"t": int(started) + 60 * k, "gpu": i, "util": 80.0, "mem_mib": 40960.0,
                                     "power_w": 500.0}) + "\n")
    doc = build_checkpoint(job_id=job, started=started, updated=time.time(), final=True, exit_reason="stopped",
                           nvml_ok=True, nvml_error=None, driver_version="550.54.15", interval=1.0,
                           gpus=list(zip(devs, aggs, strict=True)), timeline_bins=bins * NGPU)
    write_checkpoint(run / "checkpoint.json", doc)
    job_doc = {"job": {"cluster": "bench", "job_id": job, "restart_count": 0, "node": "vm", "uid": 65534,
                       "gid": 65534, "user": "nobody", "account": "", "partition": "gpu",
                       "gpus": list(range(NGPU)), "nodelist": "vm", "stdout": None, "work_dir": "/tmp",
                       "array_job_id": None, "array_task_id": None, "exit_code": None, "spank_monitor": None,
                       "extra": {}},
               "monitor": "on", "monitor_note": "", "interval": 1.0, "prolog_time": started}
    write_json_atomic(run / "job.json", job_doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_hooks: run as root (the hooks run as root)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="piqc-bench-") as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        wrapper, extra = setup(tmp)
        pro, epi_live = [], []
        for n in range(args.runs):
            job = 900000 + n
            pro.append(timed([str(wrapper)], hook_env(job, "prolog_slurmd", extra["out"])))
            time.sleep(0.3)
            epi_live.append(timed([str(wrapper)], hook_env(job, "epilog_slurmd", extra["out"])))
        # piqc-slurm prolog by itself, with the site's sampler switched off: the Python part alone.
        bare_cfg = tmp / "bare.toml"
        bare_cfg.write_text(f'cluster = "bench"\nspool_dir = "{tmp}/spool"\nsyslog = false\n'
                            "[sampler]\nenabled = false\n")
        bare_env = {**hook_env(999999, "prolog_slurmd", extra["out"]), "PIQC_CONFIG": str(bare_cfg)}
        bare = [timed([f"{REPO}/.venv/bin/piqc-slurm", "prolog"], bare_env) for _ in range(args.runs)]
        spool = tmp / "spool"
        epi = {"1 minute": [], "7 days": []}
        for n in range(args.runs):
            for label, secs in (("1 minute", 60), ("7 days", 7 * 86400)):
                job = 800000 + n * 2 + (label == "7 days")
                synthetic_run_dir(spool, job, secs)
                # A real 7-day job's timeline was written over days and is long on disk; flush the
                # freshly made one, or the Epilog's fsync would pay for writing it out (ext4 ordered mode).
                os.sync()
                env = hook_env(job, "epilog_slurmd", extra["out"], gpus=",".join(map(str, range(NGPU))))
                epi[label].append(timed([str(wrapper)], env))

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"median {statistics.median(xs):6.1f} ms  p90 {xs[int(len(xs) * 0.9) - 1]:6.1f} ms  (n={len(xs)})"

    print(f"prolog wrapper (4 GPUs, starts a sampler):        {fmt(pro)}")
    print(f"piqc-slurm prolog alone (sampler off by config):  {fmt(bare)}")
    print(f"epilog wrapper (live sampler, stopped and flushed): {fmt(epi_live)}")
    for label, xs in epi.items():
        print(f"epilog wrapper, synthetic {label:>8} 8-GPU job:     {fmt(xs)}")
    ratio = statistics.median(epi["7 days"]) / statistics.median(epi["1 minute"])
    print(f"epilog 7-day / 1-minute median ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
