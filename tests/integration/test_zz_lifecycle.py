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
