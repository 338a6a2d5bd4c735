"""The user report and the summary store, on summaries recorded from the real
test cluster (tests/fixtures/summaries: the Epilog's own output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm.hooks.summary import gpu_did_work
from piqc_slurm.report.epilog_text import job_cost, render
from piqc_slurm.store import open_engine, upsert_summary
from piqc_slurm.store.models import GpuUsage, NodeSummary, TimelineBin
from piqc_slurm.store.summaries import check_format, read_timeline

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
PRICES = {"h100": 4.0}


def load(name: str) -> dict:
    return json.loads((FX / f"{name}.summary.json").read_text())


def test_report_for_four_gpus_two_idle():
    s = load("4gpu-2idle")
    text = render(s, PRICES)
    cost, rate, gpu_type = job_cost(s, PRICES)
    assert (rate, gpu_type) == (4.0, "h100")
    assert cost == pytest.approx(4 * (s["ended"] - s["started"]) / 3600 * 4.0)
    lines = text.splitlines()
    assert lines[0] == f"==== piqc-slurm GPU report: job {s['job_id']} on vm (4 GPUs) ===="
    assert sum(ln.endswith("did no work") for ln in lines) == 2
    assert lines[-1] == f"Advice: 2 of 4 GPUs did no work: --gres=gpu:2 would have cost ${cost / 2:,.2f} less."


def test_report_without_data_says_why():
    assert "No GPU data for this job: NVIDIA driver not loaded: Driver Not Loaded." in render(load("no-driver"), PRICES)
    assert "switched off" in render(load("monitor-off"), PRICES)
    assert "(partial data: " in render(load("sampler-killed"), PRICES)


def test_did_work_rule():
    assert gpu_did_work({"samples": 10, "util_max": 0, "mem_used_max_mib": 500}) is False  # bare context
    assert gpu_did_work({"samples": 10, "util_max": 0, "mem_used_max_mib": 30000}) is True
    assert gpu_did_work({"samples": 10, "util_max": 50}) is True
    assert gpu_did_work({"samples": 0}) is None


@pytest.fixture
def engine(tmp_path):
    e = open_engine(f"sqlite:///{tmp_path}/s.db")
    yield e
    e.dispose()


def test_upsert_summary_is_idempotent(engine):
    s = check_format(load("4gpu-2idle"))
    timeline = read_timeline(FX / "4gpu-2idle.timeline.jsonl")
    for _ in range(2):
        with Session(engine) as session, session.begin():
            upsert_summary(session, s, timeline)
    with Session(engine) as session:
        rows = session.execute(select(NodeSummary)).scalars().all()
        assert len(rows) == 1 and rows[0].gpu_count == 4 and rows[0].job_ref is None
        gpus = session.execute(select(GpuUsage).order_by(GpuUsage.minor)).scalars().all()
        assert [g.did_work for g in gpus] == [True, True, False, False]
        assert len(session.execute(select(TimelineBin)).scalars().all()) == len(timeline)


def test_unknown_summary_version_is_refused():
    from piqc_slurm.errors import SpoolFormatError

    with pytest.raises(SpoolFormatError, match="unknown summary format 'piqc-summary/9'"):
        check_format({**load("4gpu-2idle"), "format": "piqc-summary/9"}, "x.json")


def test_seff_and_sacct_agree_on_cost_utilization_and_waste(tmp_path):
    """seff computes its GPU figures through the query code, so the two never disagree."""
    import subprocess
    import sys

    from piqc_slurm.store.jobs import upsert_jobs

    url = f"sqlite:///{tmp_path}/s.db"
    s = load("4gpu-2idle")
    engine = open_engine(url)
    with engine.begin() as conn:
        upsert_jobs(conn, [dict(cluster="piqc", job_id_raw=s["job_id"], submit=int(s["started"]) - 5,
                                job_id=str(s["job_id"]), name="t", user="piqcuser", state="COMPLETED",
                                exit_code="0:0", start=int(s["started"]), end=int(s["ended"]),
                                elapsed=int(s["ended"] - s["started"]), alloc_gpus=4, gpu_type="h100")])
    with Session(engine) as session, session.begin():
        upsert_summary(session, s, [])
    engine.dispose()
    base = [sys.executable, "-m", "piqc_slurm", "--db", url]
    out = subprocess.run(base + ["sacct", "-j", str(s["job_id"]), "-P", "-n", "-o", "CostUSD,GPUUtilAvg,WasteUSD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    cost, util, waste = out.split("|")
    seff = subprocess.run(base + ["seff", str(s["job_id"])], capture_output=True, text=True, check=True).stdout
    assert f"GPU cost: ${cost} " in seff
    assert f"GPU utilization over the allocation: {util}%" in seff
    assert f"(${waste} of this job's cost bought idle GPUs)" in seff
