"""Two slurmd nodes on this one host (docker-slurm/cluster.sh NODES=2: Debian's Slurm is built with
multiple-slurmd support), an h100 node and an l40s node, each with its own fake GPUs, spool and
fake-NVML state. A job on both nodes runs both nodes' Prolog, sampler and Epilog; the batch host
reports once for all four GPUs; ingest joins both summaries to the one job; sacct, seff, analyze
and gaps price each node's GPUs at its own type.

The module brings the two-node cluster up and puts the one-node cluster back afterwards; it runs
after the other integration modules (file order) and before the lifecycle one."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmtest import CLUSTER_SH, Cluster, parse_env_lines

pytestmark = pytest.mark.slurm

NODES = ("node1", "node2")
PRICE = {"h100": 3.99, "l40s": 1.09}  # piqc_slurm/data/gpus.json list prices (the test cluster sets none)
TYPE = {"node1": "h100", "node2": "l40s"}
SETTINGS = {"NODES": "2", "NGPU": "2", "GPU_TYPE": "h100,l40s"}


def _up(extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return subprocess.run(["bash", str(CLUSTER_SH), "up"], env={**env, **extra}, capture_output=True, text=True)


@pytest.fixture(scope="module")
def two(cluster) -> Cluster:
    t0 = int(time.time())
    r = _up(SETTINGS)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(["bash", str(CLUSTER_SH), "env"], check=True, capture_output=True, text=True).stdout
    c = Cluster(env=parse_env_lines(out))
    c.t0 = t0  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        r = _up({})  # the one-node cluster every other module expects
        assert r.returncode == 0, r.stderr


def _store(c: Cluster, tmp_path: Path, since: int) -> tuple[str, dict[str, str]]:
    """A store of this module's two nodes only: sacct since `since`, their shared-spool directories
    (copied: the one-node cluster's node left its own there, whose GPUs would join the inventory)."""
    import shutil

    url = f"sqlite:///{tmp_path / 'piqc.db'}"
    env = {k: v for k, v in c.root_env().items() if k != "PIQC_DB"}
    spool = tmp_path / "shared-spool"
    spool.mkdir(mode=0o700)
    for node in NODES:
        shutil.copytree(c.dir / "piqc" / "shared-spool" / node, spool / node)
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", url, "ingest", "--create-store",
                        "--since", f"uts{since - 60}", "--spool", str(spool)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return url, env


def _piqc(url: str, env: dict[str, str], *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", url, *args], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _summary(c: Cluster, job: int, node: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    d = c.dir / "piqc" / "shared-spool" / node
    while not (found := sorted(d.glob(f"{c.cluster_name}.{job}.0.{node}.*.summary.json"))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no summary of job {job} from {node}:\n{c.hook_log()[-2000:]}")
        time.sleep(0.2)
    return json.loads(found[-1].read_text())


def _sacct(c: Cluster, job: int, fields: str) -> list[str]:
    out = c.run(["sacct", "-X", "-n", "-P", "-j", str(job), "-o", fields]).stdout
    return out.strip().split("|")


def _elapsed(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def test_two_nodes_each_with_its_own_gpus(two):
    nodes = two.run(["scontrol", "show", "node", "-o"]).stdout
    assert re.search(r"NodeName=node1 .*Gres=gpu:h100:2", nodes) and re.search(r"NodeName=node2 .*Gres=gpu:l40s:2",
                                                                               nodes)
    uuids = {}
    for node in NODES:  # each node's fake driver lists its own GPUs only, by the same %n path the hooks use
        env = two.root_env(SLURMD_NODENAME=node)
        code = ("import json, pynvml; pynvml.nvmlInit(); hs = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in "
                "range(pynvml.nvmlDeviceGetCount())]; print(json.dumps([[pynvml.nvmlDeviceGetName(h), "
                "pynvml.nvmlDeviceGetUUID(h)] for h in hs]))")
        gpus = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                         check=True).stdout)
        assert len(gpus) == 2 and all(("H100" if node == "node1" else "L40S") in name for name, _ in gpus)
        uuids[node] = {uuid for _, uuid in gpus}
    assert not uuids["node1"] & uuids["node2"]


LOAD = [{"gpus": [0], "util": 90, "mem_gib": 10}, {"gpus": [1], "util": 60, "mem_gib": 5}]
BUSY = {"node1": {}, "node2": {0: 90, 1: 60}}  # node1's two h100 idle, node2's two l40s busy
# by hand: the idle GPUs' share of the price, 2 x 3.99 of 2 x 3.99 + 2 x 1.09 (count share would be 1/2)
IDLE_SHARE = 2 * PRICE["h100"] / (2 * PRICE["h100"] + 2 * PRICE["l40s"])


def _cents(x: float) -> str:
    return f"{int(x * 100 + 0.5 + 1e-9) / 100:.2f}"  # half up, as the reports round


def test_a_job_on_two_nodes_end_to_end(two, tmp_path):
    script = (f"srun bash -c 'if [ \"$SLURM_NODEID\" = 1 ]; then exec fakegpu-work --seconds 20 --load "
              f"{json.dumps(json.dumps(LOAD))}; else exec sleep 20; fi'")
    out = two.home / "two-%j.out"
    job = two.submit(script, "-N2", "--ntasks-per-node=1", "--gres=gpu:2", "-o", str(out), name="two-nodes")
    assert two.wait(job, timeout=180) == "COMPLETED"
    summaries = {node: _summary(two, job, node) for node in NODES}
    for node, s in summaries.items():  # each node's sampler saw its own two GPUs, as loaded there
        assert s["node"] == node and s["gpus"] == [0, 1] and not s["partial"]
        assert [d["gpu_type"] for d in s["devices"]] == [TYPE[node]] * 2
        for d in s["devices"]:
            want = BUSY[node].get(d["minor"])
            if want:
                assert d["did_work"] and want * 0.8 <= d["util_mean"] <= want
            else:
                assert d["did_work"] is False and d["util_mean"] == 0

    # the report: once, at the end of the batch host's output file, for both nodes
    text = Path(str(out).replace("%j", str(job))).read_text()
    assert text.count("==== piqc-slurm GPU report") == 1
    report = text[text.index("==== piqc-slurm GPU report"):]
    assert report.startswith(f"==== piqc-slurm GPU report: job {job} on node[1-2] (2 nodes, 4 GPUs) ====")
    assert [ln.split()[:2] for ln in report.splitlines() if ln.startswith("node")][1:] == [
        ["node1", "0"], ["node1", "1"], ["node2", "0"], ["node2", "1"]]
    node_s = {n: int(s["ended"]) - int(s["prolog_time"]) for n, s in summaries.items()}  # summary.elapsed_seconds
    hand = {n: 2 * node_s[n] / 3600 * PRICE[TYPE[n]] for n in NODES}
    total = hand["node1"] + hand["node2"]
    assert "2 x h100 at $3.99/GPU-hour on node1; 2 x l40s at $1.09/GPU-hour on node2" in report
    assert f"Estimated cost: ${_cents(total)} for " in report
    # the idle GPUs are node1's: IDLE_GPUS takes node1's cost, not half the job's
    assert (f"IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); "
            f"${_cents(hand['node1'])} of ${_cents(total)} bought idle GPUs.") in report
    assert "Request 2 GPUs in all, not 4 on 2 nodes: --gres=gpu:2 on 1 node (-N1)." in report
    assert text.rstrip().endswith(report.rstrip().splitlines()[-1])
    epilogs = [ln for ln in two.hook_lines(job) if "epilog job=" in ln]
    assert sum("report: ok" in ln for ln in epilogs) == 1 and sum("not the batch host" in ln for ln in epilogs) == 1

    # ingest joins both summaries to the one job; sacct and seff count all four GPUs
    url, env = _store(two, tmp_path, int(time.time()) - 600)
    elapsed = _elapsed(_sacct(two, job, "Elapsed")[0])
    cost = elapsed / 3600 * (2 * PRICE["h100"] + 2 * PRICE["l40s"])  # by hand: each node at its type
    util = sum(d["util_mean"] for s in summaries.values() for d in s["devices"]) / 4
    row = _piqc(url, env, "sacct", "-X", "-n", "-P", "-j", str(job),
                "-o", "NodeList,AllocGPUs,GPUsUsed,GPUUtilAvg,CostUSD").strip().split("|")
    assert row[:3] == ["node[1-2]", "4", "2"]
    assert float(row[3]) == pytest.approx(util, abs=0.051)
    assert float(row[4]) == pytest.approx(cost, abs=0.0051)
    seff = _piqc(url, env, "seff", str(job))
    assert "GPUs: 4 (2 x h100 + 2 x l40s)" in seff
    assert f"GPU cost: ${_cents(cost)} (" in seff and "(2 h100 at $3.99 + 2 l40s at $1.09) per GPU-hour" in seff
    gpu_rows = [ln.split()[:2] for ln in seff.splitlines() if re.match(r"node[12]\s+\d", ln)]
    assert gpu_rows == [["node1", "0"], ["node1", "1"], ["node2", "0"], ["node2", "1"]]
    assert "GPUs that did work: 2 of 4" in seff
    assert f"IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); " \
           f"${_cents(cost * IDLE_SHARE)} of ${_cents(cost)} bought idle GPUs." in seff
    assert "--gres=gpu:2 on 1 node (-N1)" in seff
    _piqc(url, env, "analyze", "-S", f"uts{int(time.time()) - 600}", "-E", f"uts{int(time.time()) + 1}")
    with sqlite3.connect(tmp_path / "piqc.db") as con:
        (waste, advice) = con.execute("SELECT f.waste_usd, f.advice FROM findings f JOIN jobs j ON j.id = f.job_ref "
                                      "WHERE j.job_id_raw = ? AND f.code = 'IDLE_GPUS'", (job,)).fetchone()
    assert waste == pytest.approx(cost * IDLE_SHARE, rel=1e-6) and "--gres=gpu:2 on 1 node (-N1)" in advice


def test_two_jobs_on_two_nodes_ending_in_the_same_second(two, tmp_path):
    end_at = int(time.time()) + 25  # both wait for the same wall-clock second, then end
    script = (f"fakegpu-work --seconds 120 --load '[{{\"gpus\":[0],\"util\":50}}]' & w=$!; "
              f"while [ $(date +%s) -lt {end_at} ]; do sleep 0.05; done; kill $w; wait $w; exit 0")
    jobs = {node: two.submit(script, "-w", node, "--gres=gpu:1", "-o", "/dev/null", name=f"same-{node}")
            for node in NODES}
    for job in jobs.values():
        assert two.wait(job, timeout=120) == "COMPLETED"
    ends = {node: _sacct(two, job, "End")[0] for node, job in jobs.items()}
    assert ends["node1"] == ends["node2"], ends
    for node, job in jobs.items():
        s = _summary(two, job, node)
        assert s["job_id"] == job and s["node"] == node and not s["partial"]
    for node in NODES:  # whole files only: every summary parses, no temp file left behind
        d = two.dir / "piqc" / "shared-spool" / node
        assert not [p.name for p in d.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
        for p in d.glob("*.summary.json"):
            json.loads(p.read_text())
    url, env = _store(two, tmp_path, int(time.time()) - 600)
    for node, job in jobs.items():
        row = _piqc(url, env, "sacct", "-X", "-n", "-P", "-j", str(job), "-o", "NodeList,AllocGPUs,GPUsUsed")
        assert row.strip().split("|") == [node, "1", "1"]


def test_prices_findings_and_gaps_per_node_type(two, tmp_path):
    jobs = {node: two.submit("sleep 12", "-w", node, "--gres=gpu:1", "-o", "/dev/null", name=f"idle-{node}")
            for node in NODES}
    for node, job in jobs.items():
        assert two.wait(job, timeout=120) == "COMPLETED"
        _summary(two, job, node)
    time.sleep(1.1)  # a window ends before its last second: past the jobs' End
    until = int(time.time())
    since = two.t0
    url, env = _store(two, tmp_path, since)
    _piqc(url, env, "analyze", "-S", f"uts{since - 60}", "-E", f"uts{until}")
    with sqlite3.connect(tmp_path / "piqc.db") as con:
        for node, job in jobs.items():
            elapsed = _elapsed(_sacct(two, job, "Elapsed")[0])
            cost = float(_piqc(url, env, "sacct", "-X", "-n", "-P", "-j", str(job), "-o", "CostUSD").strip())
            assert cost == pytest.approx(elapsed / 3600 * PRICE[TYPE[node]], abs=0.0051)
            (waste,) = con.execute("SELECT f.waste_usd FROM findings f JOIN jobs j ON j.id = f.job_ref "
                                   "WHERE j.job_id_raw = ? AND f.code = 'IDLE_GPUS'", (job,)).fetchone()
            # its one GPU did no work: the whole cost, at its own node's type's price
            assert waste == pytest.approx(elapsed / 3600 * PRICE[TYPE[node]], rel=1e-6)

    # gaps by hand: each node's 2 GPUs over the window, less what the jobs there held (sacct)
    listing = two.run(["sacct", "-X", "-n", "-P", "-a", "-s", "CD,F,CA,TO,OOM,NF,PR,R", "-S", f"{_iso(since)}",
                       "-E", f"{_iso(until)}", "-o", "JobID,NodeList,AllocTRES,Start,End"],
                      env=two.root_env(SLURM_TIME_FORMAT="%s")).stdout
    held = {node: 0.0 for node in NODES}
    for line in listing.splitlines():
        _, nodelist, tres, start, end = line.split("|")
        if start in ("Unknown", "None") or not start.isdigit():
            continue
        end_s = int(end) if end.isdigit() else until
        overlap = max(0, min(end_s, until) - max(int(start), since))
        for node in NODES:
            m = re.search(rf"gres/gpu:{TYPE[node]}=(\d+)", tres)
            if m and (node in nodelist or nodelist == "node[1-2]"):
                held[node] += int(m.group(1)) * overlap
    idle = {node: (2 * (until - since) - held[node]) / 3600 for node in NODES}
    out = _piqc(url, env, "gaps", "-M", two.cluster_name, "-S", f"uts{since}", "-E", f"uts{until}", "--no-events",
                "--by", "node", "-P", "-n", "-o", "Node,GPUType,GPUs,IdleGPUHours,IdleUSD")
    rows = {r.split("|")[0]: r.split("|") for r in out.splitlines()}
    for node in NODES:
        _, gtype, gpus, hours, usd = rows[node]
        assert (gtype, gpus) == (TYPE[node], "2")
        assert float(hours) == pytest.approx(idle[node], abs=0.0051)
        assert float(usd) == pytest.approx(idle[node] * PRICE[TYPE[node]], abs=0.0051 * PRICE[TYPE[node]] + 0.0051)
    out = _piqc(url, env, "gaps", "-M", two.cluster_name, "-S", f"uts{since}", "-E", f"uts{until}", "--no-events",
                "--by", "gputype", "-P", "-n", "-o", "GPUType,GPUs,IdleGPUHours,IdleUSD", "--no-store")
    by_type = {r.split("|")[0]: r.split("|")[1:] for r in out.splitlines()}
    for node in NODES:  # one node per type: each type's row is its node's
        assert by_type[TYPE[node]] == rows[node][2:]


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def test_down_leaves_nothing_of_its_own(two):
    run = two.dir / "run"
    pids = [int(p.read_text()) for p in run.glob("slurmd-node*.pid")] + [int((run / "slurmctld.pid").read_text())]
    assert len(pids) == 3
    devices = (two.dir / "devices.list").read_text().split()
    subprocess.run(["bash", str(CLUSTER_SH), "down"], check=True, capture_output=True)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []
    assert [d for d in devices if Path(d).exists()] == []
    for comm in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd"):
        assert subprocess.run(["pgrep", "-x", comm], capture_output=True).returncode == 1, comm
    # no namespace or link of its own: the two nodes share this host's network (multiple-slurmd)
    assert not Path("/run/netns").exists() or not any(Path("/run/netns").iterdir())
    r = _up(SETTINGS)  # back up for the fixture's teardown, which puts the one-node cluster back
    assert r.returncode == 0, r.stderr
