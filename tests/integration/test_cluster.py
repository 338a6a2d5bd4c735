"""The test cluster itself: real slurmctld/slurmd/slurmdbd with fake GPUs.

These prove the ground the rest of the project stands on: GRES binding of the
fake /dev/nvidiaN nodes, the hook wrappers running and exiting 0, sacct
accounting GPUs, and a workload's load read back through the real pynvml on
the fake driver from outside the job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from slurmtest import CLUSTER_SH

pytestmark = pytest.mark.slurm


def test_node_idle_with_8_gpus(cluster):
    out = cluster.run(["sinfo", "-h", "-N", "-o", "%T %G"]).stdout.split()
    assert out[0] in ("idle", "mixed", "allocated")
    assert out[1].startswith("gpu:h100:8")


def test_second_up_changes_nothing_and_is_fast(cluster):
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - t0
    assert "already up (nothing changed)" in r.stderr
    assert elapsed < 5


def test_two_gpu_job_sees_cuda_visible_devices_and_hooks_ran(cluster):
    job = cluster.submit('echo "CVD=$CUDA_VISIBLE_DEVICES JG=$SLURM_JOB_GPUS"',
                         "--gres=gpu:2", "-o", "cvd-%j.out", name="t-cvd")
    assert cluster.wait(job) == "COMPLETED"
    text = (cluster.home / f"cvd-{job}.out").read_text()
    cvd = text.split("CVD=")[1].split()[0]
    assert len(cvd.split(",")) == 2, text
    # Both wrappers ran for this job and exited 0.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = cluster.hook_log()
        if f"epilog End job={job} " in log:
            break
        time.sleep(0.2)
    assert f"prolog End job={job} rc=0 exit=0" in log
    assert f"epilog End job={job} rc=0 exit=0" in log
    tres = cluster.run(["sacct", "-X", "-n", "-P", "-j", str(job), "--format=AllocTRES"]).stdout
    assert "gres/gpu=2" in tres and "gres/gpu:h100=2" in tres


READ_NVML = r"""
import json, sys, pynvml
pynvml.nvmlInit()
out = {}
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    minor = pynvml.nvmlDeviceGetMinorNumber(h)
    procs = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
    out[minor] = {"util": pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                  "mem": pynvml.nvmlDeviceGetMemoryInfo(h).used, "pids": procs}
print(json.dumps(out))
"""


def read_gpus(cluster) -> dict[int, dict]:
    r = cluster.run([sys.executable, "-c", READ_NVML])
    return {int(k): v for k, v in json.loads(r.stdout).items()}


def test_workload_reads_back_through_real_pynvml(cluster):
    load = json.dumps([{"gpus": [0, 1], "util": 80, "mem_gib": 40, "process": True}])
    job = cluster.submit(f"exec fakegpu-work --seconds 60 --load '{load}'", "--gres=gpu:4",
                         "-o", "/dev/null", name="t-nvml")
    try:
        cluster.wait_running(job)
        minors = cluster.job_gpu_minors(job)
        assert len(minors) == 4
        deadline = time.monotonic() + 20
        while True:
            gpus = read_gpus(cluster)
            if all(gpus[m]["util"] > 0 for m in minors[:2]) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for m in minors[:2]:
            assert abs(gpus[m]["util"] - 80) <= 5
            assert gpus[m]["mem"] == 40 * 1024**3
            assert gpus[m]["pids"], "the workload's pid is listed as a running process"
        for m in minors[2:]:
            assert gpus[m]["util"] == 0 and gpus[m]["pids"] == []
        pid = gpus[minors[0]]["pids"][0]
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        assert b"fakegpu-work" in cmd
    finally:
        cluster.run(["scancel", str(job)], check=False)
    cluster.wait(job)
    gpus = read_gpus(cluster)
    assert all(gpus[m]["util"] == 0 for m in minors), "a cancelled workload reads idle"


def test_node_not_drained(cluster):
    assert cluster.node_state() in ("idle", "mixed", "allocated")
