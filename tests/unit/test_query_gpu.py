"""The added GPU fields, from recorded sampler summaries (tests/fixtures/summaries,
written by the real sampler on the test cluster) joined to their jobs."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from piqc_slurm.config import Config, defaults
from piqc_slurm.query.access import Caller
from piqc_slurm.query.command import parse_args
from piqc_slurm.query.gpu import GpuStats, IdleShareEstimate, JobFindings, JobGpu, gpu_values
from piqc_slurm.query.run import Settings, run
from piqc_slurm.store import open_engine
from piqc_slurm.store.jobs import upsert_jobs
from piqc_slurm.store.summaries import upsert_summary

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("utc")]

SUMMARIES = Path(__file__).resolve().parent.parent / "fixtures" / "summaries"
ROOT = Caller(0, "root")
GPU_FIELDS = "JobID,AllocGPUs,GPUType,GPUsUsed,GPUUtilAvg,GPUMemPeak,GPUEnergy,CostUSD,WasteUSD,Findings," \
             "AdviceGPUs,AdviceTier"


def summary(name: str) -> dict:
    return json.loads((SUMMARIES / f"{name}.summary.json").read_text())


def job_for(doc: dict, raw: int | None = None, **kw) -> dict:
    start = int(doc["started"]) if doc.get("started") else 1795868000
    end = int(doc["ended"]) + 1 if doc.get("ended") else start + 60
    row = dict(cluster=doc.get("cluster", "piqc"), job_id_raw=raw or doc["job_id"], submit=start - 1,
               job_id=str(raw or doc["job_id"]), name="t", user="piqcuser", account="research", partition="gpu",
               state="COMPLETED", exit_code="0:0", eligible=start - 1, start=start, end=end, elapsed=end - start,
               alloc_cpus=1, alloc_nodes=1, alloc_gpus=len(doc.get("gpus") or []), gpu_type="h100", nodelist="vm")
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    lost = copy.deepcopy(summary("gpu-lost"))
    lost.update(job_id=139, restart_count=0)
    lost["devices"][1]["lost"] = True                    # fell off the bus half way
    lost["devices"][1]["seconds"] = lost["devices"][0]["seconds"] / 2
    docs = [summary("4gpu-2idle"), summary("gpu-lost"), summary("sampler-killed"), summary("no-driver"),
            summary("monitor-off"), lost]
    jobs = [job_for(d) for d in docs]
    jobs.append(job_for(docs[0], raw=200, gpu_type=None, alloc_gpus=2))            # GPU job, no sampler data
    jobs.append(job_for(docs[0], raw=201, gpu_type=None, alloc_gpus=0, alloc_tres="cpu=1"))   # CPU job
    jobs.append(job_for(docs[0], raw=202, gpu_type="a10g", alloc_gpus=3, start=1795860000, end=1795867200,
                        elapsed=7200))
    u = f"sqlite:///{tmp_path_factory.mktemp('gpu')}/piqc.db"
    engine = open_engine(u)
    with engine.begin() as conn:
        upsert_jobs(conn, jobs)
    with Session(engine) as s, s.begin():
        for d in docs:
            upsert_summary(s, d)
    engine.dispose()
    return u


def priced(prices: dict[str, float], **kw) -> Settings:
    """Settings whose config has these [prices]."""
    return Settings(config=Config({**defaults(), "prices": prices}), **kw)


def query(url: str, *argv: str, settings: Settings | None = None) -> bytes:
    buf = io.BytesIO()
    run(parse_args(list(argv)), url=url, settings=settings or priced({"h100": 4.0}), caller=ROOT,
        out=buf, env={}, now=1795870000)
    return buf.getvalue()


def rows(url: str, jobs: str, settings: Settings | None = None) -> dict[str, list[str]]:
    text = query(url, "-P", "-n", "-j", jobs, "-o", GPU_FIELDS, settings=settings).decode()
    return {ln.split("|")[0]: ln.split("|")[1:] for ln in text.splitlines()}


def test_four_gpus_two_idle(url):
    # 2 of 4 GPUs at 77.766 % for the whole job: (77.766 * 2) / 4 = 38.883
    # energy 22889.299 + 22888.996 + 2409.003 * 2 J = 0.014 kWh; elapsed 41 s at $4/GPU-h: 4 * 41/3600 * 4
    r = rows(url, "134")["134"]
    assert r == ["4", "h100", "2", "38.9", "40.00", "0.014", "0.18", "0.09", "", "", ""]


def test_time_weighted_util_for_a_gpu_lost_half_way(url):
    both = rows(url, "138,139")
    assert both["138"][2:4] == ["2", "73.0"]
    assert both["139"][2:4] == ["2", "54.7"]     # (72.974 + 72.974 * 0.5) / 2


def test_no_sampler_data_prints_empty_but_cost_is_known(url):
    r = rows(url, "137,140,200,201,202")
    # NVML failed: no GPU rows. job_for: start int(1795868916.836) = 1795868916, end int(1795868918.988) + 1 =
    # 1795868919 -> 3 s; 2 x h100 at $4: 2 * 3/3600 * 4 = 0.00667 -> 0.01
    assert r["137"] == ["2", "h100", "", "", "", "", "0.01", "", "", "", ""]
    assert r["140"][2:6] == ["", "", "", ""]                                          # monitoring off
    # 4gpu-2idle's times: 1795868856 .. 1795868896 + 1 -> 41 s; 2 GPUs of no type: the catalog's fallback $2.00
    # (data/gpus.json fallback_price): 2 * 41/3600 * 2 = 0.04556 -> 0.05
    assert r["200"] == ["2", "", "", "", "", "", "0.05", "", "", "", ""]
    assert r["201"] == ["0", "", "", "", "", "", "0.00", "", "", "", ""]
    # 3 GPUs x 2 h x the catalog's a10g price ($1.01 in data/gpus.json): config [prices] has only h100
    assert r["202"][6] == "6.06"
    assert rows(url, "202", priced({"a10g": 2.5}))["202"][6] == "15.00"
    # [prices] default = 3.0 replaces the fallback: 2 GPUs * 41/3600 h * $3 = 0.06833 -> 0.07
    assert rows(url, "200", priced({"default": 3.0}))["200"][6] == "0.07"


def test_a_killed_sampler_still_counts_its_idle_gpu(url):
    r = rows(url, "136")["136"]
    assert r[:6] == ["1", "h100", "0", "0.0", "0.00", "0.000"]
    # 1795868900 .. int(1795868916.013) + 1 = 1795868917 -> 17 s; 1 x h100 at $4: 17/3600 * 4 = 0.01889 -> 0.02,
    # and the one GPU did nothing: all of it is waste
    assert r[6:8] == ["0.02", "0.02"]


def test_json_types(url):
    doc = json.loads(query(url, "-j", "134,201", "--json-fields", "-o", GPU_FIELDS))
    j = {x["JobID"]: x for x in doc["jobs"]}
    assert j["134"] == {"JobID": "134", "AllocGPUs": 4, "GPUType": "h100", "GPUsUsed": 2, "GPUUtilAvg": 38.9,
                        "GPUMemPeak": 40.0, "GPUEnergy": 0.014, "CostUSD": 0.18, "WasteUSD": 0.09, "Findings": [],
                        "AdviceGPUs": None, "AdviceTier": None}
    assert j["201"]["GPUsUsed"] is None and j["201"]["CostUSD"] == 0.0


def test_table_widths_of_the_added_fields(url):
    text = query(url, "-j", "134", "-o", "JobID,AllocGPUs,GPUUtilAvg,CostUSD,Findings%5").decode()
    assert text.splitlines() == [
        "JobID        AllocGPUs GPUUtilAvg    CostUSD Findi ",   # headers are cut, no +
        "------------ --------- ---------- ---------- ----- ",
        "134                  4       38.9       0.18       ",
    ]


class StoredFindings:
    """What a findings-table source will look like: it replaces the estimate wholesale."""

    def for_jobs(self, reader, jobs):
        return {j.ref: JobFindings(codes=("IDLE_GPUS", "WRONG_TIER"), waste_usd=1.5, advice_gpus=2,
                                   advice_tier="a10g") for j in jobs if j.alloc_gpus == 4}


def test_a_findings_source_replaces_the_estimate(url):
    s = priced({"h100": 4.0}, findings=StoredFindings())
    r = rows(url, "134,138", s)
    assert r["134"][7:] == ["1.50", "IDLE_GPUS,WRONG_TIER", "2", "a10g"]
    assert r["138"][7:] == ["", "", "", ""]


def test_idle_share_estimate_is_pure():
    st = GpuStats(gpus=4, used=1, idle=3, util_sum=80.0)
    found = IdleShareEstimate().for_jobs(None, [JobGpu(ref=1, alloc_gpus=4, gpu_type="h100", cost_usd=8.0,
                                                       stats=st)])
    assert found[1].waste_usd == 6.0
    v = gpu_values(JobGpu(ref=1, alloc_gpus=4, gpu_type=None, cost_usd=8.0, stats=st), found[1])
    assert v.text()["GPUUtilAvg"] == "20.0" and v.text()["WasteUSD"] == "6.00"
