"""The user report and the summary store, on summaries recorded from the real
test cluster (tests/fixtures/summaries: the Epilog's own output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm.report.epilog_text import node_cost, render
from piqc_slurm.store import open_engine, upsert_summary
from piqc_slurm.store.models import GpuTimeline, GpuUsage, NodeSummary
from piqc_slurm.store.summaries import read_timeline
from piqc_slurm.store.timeline import unpack
from piqc_slurm.summary import check_format
from piqc_slurm.usage.catalog import load_catalog
from piqc_slurm.usage.prices import Prices
from piqc_slurm.usage.rules import did_work

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
PRICES = Prices(load_catalog(), config_types={"h100": 4.0})


def load(name: str) -> dict:
    return json.loads((FX / f"{name}.summary.json").read_text())


def test_report_for_four_gpus_two_idle():
    s = load("4gpu-2idle")
    text = render(s, PRICES)
    cost, rate, gpu_type, elapsed = node_cost(s, PRICES)
    assert (rate, gpu_type) == (4.0, "h100")
    # Slurm's whole seconds: the recorded run started 1795868856.68 and ended 1795868896.91 -> 40 s
    assert elapsed == 40
    assert cost == pytest.approx(4 * 40 / 3600 * 4.0)
    lines = text.splitlines()
    assert lines[0] == f"==== piqc-slurm GPU report: job {s['job_id']} on vm (4 GPUs) ===="
    assert sum(ln.endswith("did no work") for ln in lines) == 2
    assert "Estimated cost: $0.18 (4 x h100 for 00:00:40 at $4.00/GPU-hour)" in lines  # 4*40/3600*4 = 0.178
    # the analysis's own rule and words (analyze.rules, analyze.explain): 2 of 4 GPUs x $0.178 = $0.089
    assert lines[-2:] == ["IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); "
                          "$0.09 of $0.18 bought idle GPUs.", "  Advice: Request --gres=gpu:2."]


def test_report_without_data_says_why():
    assert "No GPU data for this job: NVIDIA driver not loaded: Driver Not Loaded." in render(load("no-driver"), PRICES)
    assert "switched off" in render(load("monitor-off"), PRICES)
    assert "(partial data: " in render(load("sampler-killed"), PRICES)


def test_did_work_rule():
    # activity over the job decides, at min_share 0.05 by default
    assert did_work({"samples": 100, "active_seconds": 0, "seconds": 100}) is False
    assert did_work({"samples": 7200, "active_seconds": 1, "seconds": 7200}) is False  # one warm-up spike
    assert did_work({"samples": 100, "active_seconds": 50, "seconds": 100}) is True
    assert did_work({"samples": 100, "active_seconds": 5, "seconds": 100}) is True     # exactly 5%
    assert did_work({"samples": 100, "active_seconds": 4, "seconds": 100}) is False
    # memory held is evidence, not use (TF/vLLM pre-allocation)
    assert did_work({"samples": 100, "active_seconds": 0, "seconds": 100, "mem_used_max_mib": 70000}) is False
    assert did_work({"samples": 0}) is None
    assert did_work({"samples": 10, "active_seconds": 5, "seconds": 10}, min_share=0.6) is False
    # re-applied from the histogram: 90 s at 3%, 10 s at 50% -> 10% active at 5%, 0% at 60%
    hist = [0] * 101
    hist[3], hist[50] = 90_000, 10_000
    gpu = {"samples": 100, "active_seconds": 10, "seconds": 100, "util_hist": hist}
    assert did_work(gpu, 0.05, active_util=5) is True
    assert did_work(gpu, 0.05, active_util=60) is False
    assert did_work(gpu, 0.05, active_util=3) is True   # bin 3 counts at a 3% threshold


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
        packed = session.execute(select(GpuTimeline).order_by(GpuTimeline.minor)).scalars().all()
        # one row per GPU, not per bin; the fixture's 8 bins (2 per GPU, 60 s apart) read back rounded
        assert [(r.minor, r.t0, r.step, r.n) for r in packed] == [(m, 1795868820, 60, 2) for m in range(4)]
        worked = [(77, 40960, 551), (76, 40960, 544)]  # 76.7 %, 40960 MiB, 550.7 W; 75.6 %, 543.6 W
        idle = [(0, 0, 60), (0, 0, 60)]
        for r, want in zip(packed, (worked, worked, idle, idle), strict=True):
            assert [(b["t"], b["gpu"], b["util"], b["mem_mib"], b["power_w"]) for b in unpack(r)] == \
                [(1795868820 + 60 * i, r.minor, *v) for i, v in enumerate(want)]


def test_unknown_summary_version_is_refused():
    from piqc_slurm.errors import SpoolFormatError

    with pytest.raises(SpoolFormatError, match="unknown summary format 'piqc-summary/9'"):
        check_format({**load("4gpu-2idle"), "format": "piqc-summary/9"}, "x.json")


def test_seff_and_sacct_agree_on_cost_utilization_and_waste(tmp_path):
    """seff and sacct print the same cost, utilization and waste: each checked against the figures computed
    here by hand from the recorded summary, not against each other."""
    import os
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
    config = tmp_path / "piqc.toml"
    config.write_text("[prices]\nh100 = 4.0\n")             # a price of our own, never /etc/piqc's
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(config), "--db", url]
    # by hand, from 4gpu-2idle.summary.json: elapsed int(1795868896.914 - 1795868856.685) = 40 s;
    # cost 4 GPUs * 40/3600 h * $4 = 0.17778 -> 0.18; utilization 2 GPUs at 77.766 % of 4: 155.532 / 4 = 38.883
    # -> 38.9; waste: GPUs 2 and 3 did no work, 2/4 of 0.17778 = 0.08889 -> 0.09
    out = subprocess.run(base + ["sacct", "-j", str(s["job_id"]), "-P", "-n", "-o", "CostUSD,GPUUtilAvg,WasteUSD"],
                         capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert out == "0.18|38.9|0.09"
    seff = subprocess.run(base + ["seff", str(s["job_id"])], capture_output=True, text=True, check=True,
                          env=env).stdout
    assert "GPU cost: $0.18 " in seff
    assert "GPU utilization over the allocation: 38.9%" in seff
    assert "$0.09 of $0.18 bought idle GPUs." in seff


def test_a_job_that_used_no_gpu_is_told_so():
    # recorded: the sampler was killed on a 1-GPU job whose GPU never worked (did_work false)
    text = render(load("sampler-killed"), PRICES)
    assert "IDLE_GPUS: This job used no GPU: none of its 1 allocated GPU was active" in text
    assert "--gres=gpu:1" not in text and "--gres=gpu:0" not in text


def test_a_summary_still_builds_without_a_readable_catalog():
    from piqc_slurm.summary import build
    from piqc_slurm.usage.catalog import without_types

    cat = without_types("gpus.json: not valid JSON")
    assert cat.canonical("h100") is None and cat.type_of_name("NVIDIA H100 80GB HBM3") is None
    s = build({"cluster": "c", "job_id": 1, "restart_count": 0, "node": "n", "gpus": [0], "prolog_time": 10.0},
              {"nvml": {"ok": True}, "started": 10.0, "gpus": [{"minor": 0, "name": "NVIDIA H100 80GB HBM3",
                                                                "lost": False, "agg": {"samples": 3, "seconds": 3.0,
                                                                                       "active_seconds": 3.0}}]},
              ended=13.0, partial=False, partial_reason=None, monitor="on", interval=1.0, catalog=cat)
    assert s["devices"][0]["gpu_type"] is None and s["devices"][0]["did_work"] is True
    assert Prices(cat).gpu_rate("h100") == (2.0, "fallback", None)   # unknown, never zero
