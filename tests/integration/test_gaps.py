"""`piqc-slurm gaps` on the real test cluster: sacctmgr's node events through
piqc's runner agree with sacctmgr's own human-format output, and a real GPU job,
ingested with its summary, is held (not idle) on the GPUs the hooks recorded.

Other tests may run jobs on the node at the same time, so idle time is checked
against bounds, never an exact figure."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from piqc_slurm.slurm.parse import parse_node_events
from piqc_slurm.slurm.run import sacctmgr_events

pytestmark = pytest.mark.slurm


def test_events_runner_agrees_with_sacctmgr_itself(cluster):
    now = int(time.time())
    since = now - 7 * 86400
    name = cluster.cluster_name
    mine = parse_node_events(sacctmgr_events(since, now, [name], cluster.root_env()))
    # independently: sacctmgr's default time format, in UTC, no Cluster field, node events only
    env = cluster.root_env(TZ="UTC")
    env.pop("SLURM_TIME_FORMAT", None)
    out = subprocess.run(["sacctmgr", "-n", "-P", "show", "event", f"Clusters={name}", "Event=Node",
                          time.strftime("Start=%Y-%m-%dT%H:%M:%S", time.gmtime(since)),
                          time.strftime("End=%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
                          "format=NodeName,Start,End,State,Reason"],
                         capture_output=True, text=True, env=env, check=True).stdout
    theirs = parse_node_events(out, fields=("NodeName", "Start", "End", "State", "Reason"), epoch=False,
                               tz="UTC", cluster=name)
    assert mine == theirs
    assert all(e.cluster == name and e.node for e in mine)


def test_a_real_job_is_held_not_idle(cluster, tmp_path):
    t0 = int(time.time())
    job = cluster.submit("sleep 4", "--gres=gpu:2", "-o", "/dev/null", name="gaps-held")
    assert cluster.wait(job, timeout=120) == "COMPLETED"
    cluster.wait_summary(job)
    db = tmp_path / "piqc.db"
    url = f"sqlite:///{db}"
    env = {k: v for k, v in cluster.root_env().items() if k != "PIQC_DB"}
    spool = cluster.dir / "piqc" / "shared-spool"
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", url, "ingest", "--create-store",
                        "--since", f"uts{t0 - 60}", "--spool", str(spool)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with sqlite3.connect(db) as con:
        start, end = con.execute("SELECT start, \"end\" FROM jobs WHERE job_id_raw = ? AND cluster = ?",
                                 (job, cluster.cluster_name)).fetchone()
        ngpu = con.execute("SELECT COUNT(*) FROM node_gpus WHERE node = ?", (cluster.node,)).fetchone()[0]
        rows = con.execute("SELECT COUNT(*) FROM job_gpus g JOIN node_summaries s ON s.id = g.summary_id "
                           "JOIN jobs j ON j.id = s.job_ref WHERE j.job_id_raw = ?", (job,)).fetchone()[0]
    assert end > start and ngpu >= 2 and rows == 2
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", url, "gaps", "-M", cluster.cluster_name,
                        "-S", f"uts{start}", "-E", f"uts{end}", "-P", "-n",
                        "-o", "Node,GPUs,IdleGPUHours,DownGPUHours"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "node events not read" not in r.stderr  # sacctmgr answered
    node_row = r.stdout.splitlines()[0].split("|")
    assert node_row[0] == cluster.node and int(node_row[1]) == ngpu
    idle = float(node_row[2]) + float(node_row[3])
    # at most the GPUs the job did not hold, for its whole run (rounded to the cent of an hour)
    assert idle <= (ngpu - 2) * (end - start) / 3600 + 0.005
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT minor, gpus, \"start\", \"end\" FROM idle_gaps WHERE node = ? AND kind = 'idle'",
                             (cluster.node,)).fetchall()
    assert all(s >= start and e <= end for _, _, s, e in stored)
