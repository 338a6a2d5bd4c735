"""`piqc-slurm ingest` on the real test cluster with no `cluster` in the config:
the jobs are stored under Slurm's own ClusterName (`scontrol show config`),
and the node GPU inventory is filled from `scontrol show node`'s Gres=."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slurm


def scontrol_gpus(cluster) -> dict[str, list[tuple[str | None, int]]]:
    """Each node's GPUs as scontrol's own Gres= says (read here without piqc's parser)."""
    out: dict[str, list[tuple[str | None, int]]] = {}
    for line in cluster.run(["scontrol", "show", "node", "-o"]).stdout.splitlines():
        node = re.search(r"\bNodeName=(\S+)", line)
        gres = re.search(r"\bGres=(\S+)", line)
        if not node or not gres:
            continue
        for m in re.finditer(r"(?:^|,)gpu(?::([^:,(]+))?:(\d+)", gres.group(1)):
            out.setdefault(node.group(1), []).append((m.group(1), int(m.group(2))))
    return out


@pytest.fixture(scope="module")
def ingested(cluster, tmp_path_factory):
    """One fresh GPU job, then `piqc-slurm ingest` of the last minutes into a new SQLite store,
    with a config that names no cluster."""
    tmp = tmp_path_factory.mktemp("inventory")
    t0 = int(time.time())
    job = cluster.submit("true", "--gres=gpu:1", "-o", "/dev/null", name="inv-ingest")
    assert cluster.wait(job, timeout=120) == "COMPLETED"
    db = tmp / "piqc.db"
    conf = tmp / "piqc.toml"
    conf.write_text(f'# no `cluster`: ingest asks Slurm for its ClusterName\ndb = "sqlite:///{db}"\n')
    spool = tmp / "empty-spool"  # only sacct and scontrol: no summaries
    spool.mkdir()
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(conf), "ingest", "--create-store",
                        "--since", f"uts{t0 - 120}", "--spool", str(spool)],
                       capture_output=True, text=True, env=cluster.root_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return {"job": job, "db": db, "stderr": r.stderr}


def cluster_name(cluster) -> str:
    conf = cluster.run(["scontrol", "show", "config"]).stdout
    return re.search(r"^ClusterName\s*=\s*(\S+)\s*$", conf, re.M).group(1)


def test_jobs_get_slurms_cluster_name(cluster, ingested):
    name = cluster_name(cluster)  # "piqc" on cluster.sh's defaults
    assert name == cluster.cluster_name  # the name the hooks' summaries carry, too
    with sqlite3.connect(ingested["db"]) as db:
        clusters = {c for (c,) in db.execute("SELECT DISTINCT cluster FROM jobs")}
        ours = db.execute("SELECT cluster, gpu_type, alloc_gpus FROM jobs WHERE job_id_raw = ?",
                          (ingested["job"],)).fetchall()
    assert clusters == {name}
    assert ours == [(name, scontrol_gpus(cluster)[cluster.node][0][0], 1)]


def test_node_inventory_from_scontrol(cluster, ingested):
    want = scontrol_gpus(cluster)
    node = cluster.node
    assert want[node], f"no GPUs in scontrol's Gres= of {node}"
    expected = [t for t, n in want[node] for _ in range(n)]
    with sqlite3.connect(ingested["db"]) as db:
        rows = db.execute("SELECT cluster, node, minor, gpu_type, uuid, name, source FROM node_gpus "
                          "ORDER BY node, minor").fetchall()
    mine = [r for r in rows if r[1] == node]
    assert [(r[2], r[3]) for r in mine] == list(enumerate(expected))
    # cluster.sh's defaults (NGPU=8, GPU_TYPE=h100): minors 0-7, all h100
    name = cluster_name(cluster)
    assert all(r[0] == name and r[4] is None and r[5] is None and r[6] == "scontrol" for r in mine)
    assert f"node inventory: {len(want)} GPU node(s) from scontrol, {len(rows)} GPU row(s)" in ingested["stderr"]
