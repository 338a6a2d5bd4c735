"""cluster.sh down/up, run last: down stops only its own daemons and removes its
fake device nodes; up brings the cluster back for whatever runs next."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from slurmtest import CLUSTER_SH

pytestmark = pytest.mark.slurm
PIDFILES = ["munge/munged.pid", "mysqld/mysqld.pid", "slurmdbd.pid", "slurmctld.pid", "slurmd.pid"]


def test_down_leaves_nothing_of_its_own_then_up_again(cluster):
    run = cluster.dir / "run"
    pids = [int((run / f).read_text()) for f in PIDFILES]
    devices = (cluster.dir / "devices.list").read_text().split()
    assert len(devices) == 8 and all(Path(d).exists() for d in devices)

    subprocess.run(["bash", str(CLUSTER_SH), "down"], check=True, capture_output=True)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []
    assert [d for d in devices if Path(d).exists()] == []
    for comm in ("slurmctld", "slurmd", "slurmdbd"):
        assert subprocess.run(["pgrep", "-x", comm], capture_output=True).returncode == 1

    t0 = time.monotonic()
    subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True, capture_output=True)
    assert cluster.node_state() in ("idle", "mixed", "allocated")
    assert all(Path(d).exists() for d in devices)
    print(f"warm up (packages and database already there): {time.monotonic() - t0:.1f}s")


def test_refuses_a_slurm_it_did_not_start(cluster, tmp_path):
    # A second instance with its own state dir must not adopt the running daemons.
    r = subprocess.run(["bash", str(CLUSTER_SH), "up"], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                       "PIQC_CLUSTER_DIR": str(tmp_path / "other")}, capture_output=True, text=True)
    assert r.returncode != 0
    assert "this script did not start" in r.stderr


def test_an_a100_node_has_no_gpm_then_h100_again(cluster):
    """The same GPM-carrying load on an A100 node (no NVML GPM: the fake driver says so for non-Hopper
    names) records no GPM keys but still its power share; the cluster is then put back to h100."""
    import json
    import os

    env = {**os.environ, "GPU_TYPE": "a100"}
    load = json.dumps([{"gpus": [0], "util": 60, "mem_gib": 8, "power_frac": 0.25, "sm_active": 0.2,
                        "tensor_active": 0.05}])
    try:
        subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True, capture_output=True, env=env)
        gres = cluster.run(["scontrol", "show", "node", "-o"]).stdout
        assert "Gres=gpu:a100:" in gres, gres
        job = cluster.submit(f"exec fakegpu-work --seconds 15 --load '{load}'", "--gres=gpu:1", "-o", "/dev/null",
                             name="t-a100")
        assert cluster.wait(job, timeout=120) == "COMPLETED"
        (d,) = cluster.wait_summary(job)["devices"]
        assert "A100" in d["name"] and d["gpu_type"].startswith("a100")
        assert not [k for k in d if k.startswith(("sm_active", "tensor_active", "dram_active", "sm_occupancy"))]
        assert 0.15 <= d["power_frac_mean"] <= 0.26
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True, capture_output=True,
                       env={**os.environ, "GPU_TYPE": "h100"})
    assert "Gres=gpu:h100:" in cluster.run(["scontrol", "show", "node", "-o"]).stdout
