"""The findings' rules on hand-computed jobs: hits, dollars to the cent, and the negatives.
The same jobs judged one at a time (plain floats, as the Epilog's report does) and as one
pandas frame (as `analyze` does) must agree."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from piqc_slurm.analyze.explain import findings
from piqc_slurm.analyze.rules import CODES, Thresholds, judge
from piqc_slurm.config import Config, defaults
from piqc_slurm.usage.cost import money

pytestmark = pytest.mark.unit
NAN = math.nan
T = Thresholds.from_config(Config(defaults()))
# catalog figures of data/gpus.json, with the scenario-style prices h100 $4, a10g $1, l40s $1.50
H100 = {"tflops": 989.0, "mem_bw": 3350.0, "rate": 4.0}
TIERS = [{"type": "a10g", "rate": 1.0, "mem_gib": 24.0, "tflops": 125.0, "mem_bw": 600.0},
         {"type": "l40s", "rate": 1.5, "mem_gib": 48.0, "tflops": 362.0, "mem_bw": 864.0}]


def job(**kw) -> dict:
    """A completed 1-GPU h100 job of 10 h ($40), sampled, busy; override what a case needs."""
    j = dict(cost=40.0, elapsed=36000.0, alloc_gpus=1, started=1, failed=0, sampled_gpus=1, used_gpus=1, idle_gpus=0,
             util_used=90.0, active_used=0.95, power_used=0.8, sm_used=NAN, tensor_used=NAN, dram_used=NAN,
             mem_peak_gib=60.0, mem_total_gib=80.0, cpu_eff=0.3, shared=0, runs_before=NAN, elapsed_median=NAN,
             cost_median=NAN, **H100)
    j.update(kw)
    return j


CASES = {
    "busy": job(),
    "eight_asked_three_used": job(alloc_gpus=8, sampled_gpus=8, used_gpus=3, idle_gpus=5, cost=192.0, elapsed=21600),
    "used_none": job(used_gpus=0, idle_gpus=1, util_used=NAN, power_used=NAN),
    "batch1_decode": job(util_used=90.0, power_used=0.25, mem_peak_gib=10.0),
    "vllm_reserved": job(util_used=70.0, power_used=0.30, mem_peak_gib=72.0),
    "bursty_well_used": job(util_used=70.0, active_used=0.75, power_used=0.65),
    "cpu_saturated": job(util_used=30.0, power_used=0.30, cpu_eff=0.95, mem_peak_gib=20.0),
    "seventy_gib_low_util": job(util_used=20.0, power_used=NAN, mem_peak_gib=70.0),
    "classifier_gpm": job(cost=8.0, elapsed=7200, util_used=35.0, power_used=0.22, sm_used=0.25, tensor_used=0.04,
                          dram_used=0.08, mem_peak_gib=9.0),
    "batch1_gpm": job(cost=12.0, elapsed=10800, util_used=60.0, power_used=0.25, sm_used=0.20, tensor_used=0.05,
                      dram_used=0.15, mem_peak_gib=8.0),
    "failed": job(cost=1.0, elapsed=900, failed=1),
    "cancelled_pending": job(cost=0.0, elapsed=0, started=0, sampled_gpus=0, used_gpus=0),
    "no_samples": job(sampled_gpus=0, used_gpus=NAN, idle_gpus=NAN, util_used=NAN, power_used=NAN, mem_peak_gib=NAN,
                      mem_total_gib=NAN),
    "regression": job(cost=20.0, elapsed=18000, runs_before=4, elapsed_median=10800, cost_median=12.0),
    "mig_slice": job(shared=1, used_gpus=0, idle_gpus=1),
}


def flags(v: dict) -> set[str]:
    return {c for c in CODES if bool(v[c])}


@pytest.fixture(scope="module")
def judged() -> dict[str, dict]:
    return {name: judge(j, T, TIERS) for name, j in CASES.items()}


def test_busy_job_is_not_flagged(judged):
    assert flags(judged["busy"]) == set()


def test_idle_gpus_by_hand(judged):
    v = judged["eight_asked_three_used"]
    assert flags(v) == {"IDLE_GPUS"}
    assert money(v["w_IDLE_GPUS"]) == 120.00          # 5 of 8 GPUs x 6 h x $4
    assert v["advice_gpus"] == 3


def test_a_job_that_used_no_gpu_is_told_so(judged):
    v = judged["used_none"]
    assert flags(v) == {"IDLE_GPUS"} and money(v["w_IDLE_GPUS"]) == 40.00 and math.isnan(v["advice_gpus"])
    (f,) = findings({**CASES["used_none"], "state": "COMPLETED"}, v, 0.05, 5.0)
    assert f["sentence"].startswith("This job used no GPU") and f["advice_gpus"] is None
    assert "--gres=gpu:1" not in f["advice"]


def test_batch_one_decode_at_high_util_and_low_power_is_under_batched(judged):
    v = judged["batch1_decode"]
    assert flags(v) == {"UNDER_BATCHED"} and v["ub_evidence"] == "power"
    assert money(v["w_UNDER_BATCHED"]) == 25.71       # 40 x (1 - 0.25 / 0.7) = 25.714


def test_vllm_style_reserved_memory_is_no_counter_evidence(judged):
    v = judged["vllm_reserved"]
    assert flags(v) == {"UNDER_BATCHED"}
    assert money(v["w_UNDER_BATCHED"]) == 22.86       # 40 x (1 - 0.30 / 0.7) = 22.857


def test_bursty_but_well_used_is_not_under_batched(judged):
    assert flags(judged["bursty_well_used"]) == set()


def test_cpu_saturated_is_input_bound_not_under_batched(judged):
    v = judged["cpu_saturated"]
    assert flags(v) == {"INPUT_BOUND"} and v["ib_evidence"] == "cpu"
    assert money(v["w_INPUT_BOUND"]) == 24.00         # 40 x (1 - 30 / 75)


def test_a_70_gib_job_is_never_sent_to_a_24_gib_card(judged):
    v = judged["seventy_gib_low_util"]
    assert "WRONG_TIER" not in flags(v) and v["advice_tier"] == ""


def test_wrong_tier_from_gpm(judged):
    v = judged["classifier_gpm"]
    assert flags(v) == {"WRONG_TIER"} and v["advice_tier"] == "a10g" and v["tier_confidence"] == "high"
    assert money(v["w_WRONG_TIER"]) == 6.00           # $8 on an h100 at $4/h -> $2 on an a10g at $1/h
    # demand 0.04 x 989 = 39.6 TFLOPS, 0.08 x 3350 = 268 GB/s; 9 GiB x 1.2 fits 24 GiB
    assert v["demand_tflops"] == pytest.approx(39.56) and v["demand_bw"] == pytest.approx(268.0)


def test_batch_of_one_with_gpm_is_under_batched_where_no_cheaper_card_fits():
    # DRAM 0.15 x 3350 = 502.5 GB/s x 1.25 = 628 > the a10g's 600: it does not fit; SM 0.20 < 0.5
    v = judge(CASES["batch1_gpm"], T, TIERS[:1])
    assert flags(v) == {"UNDER_BATCHED"} and v["ub_evidence"] == "gpm"
    assert money(v["w_UNDER_BATCHED"]) == 9.00        # 12 x (1 - 0.20 / 0.8)
    # where an l40s is on offer (864 GB/s, 48 GiB, $1.50/h) the same job fits it: the tier is the advice
    v = judge(CASES["batch1_gpm"], T, TIERS)
    assert flags(v) == {"WRONG_TIER"} and v["advice_tier"] == "l40s"
    assert money(v["w_WRONG_TIER"]) == 7.50           # 12 x (1 - 1.5 / 4)


def test_failed_spend_and_a_job_cancelled_while_pending(judged):
    assert flags(judged["failed"]) == {"FAILED_SPEND"} and money(judged["failed"]["w_FAILED_SPEND"]) == 1.00
    assert flags(judged["cancelled_pending"]) == set()


def test_no_samples_carries_no_dollars(judged):
    v = judged["no_samples"]
    assert flags(v) == {"NO_SAMPLES"} and v["w_NO_SAMPLES"] == 0.0


def test_runtime_regression_by_hand(judged):
    v = judged["regression"]
    assert flags(v) == {"RUNTIME_REGRESSION"}
    assert money(v["w_RUNTIME_REGRESSION"]) == 8.00   # $20 against a median of $12 (5 h against 3 h)


def test_shared_gpus_get_no_per_gpu_findings(judged):
    assert flags(judged["mig_slice"]) == set()


def test_waste_never_exceeds_cost(judged):
    for name, v in judged.items():
        total = sum(float(v[f"w_{c}"]) for c in CODES)
        assert total <= CASES[name]["cost"] + 1e-9, name


def test_vectorised_equals_one_at_a_time(judged):
    frame = pd.DataFrame.from_records(list(CASES.values()), index=list(CASES))
    v = judge(frame, T, TIERS)
    for name in CASES:
        for key, col in v.items():
            a, b = col[name], judged[name][key]
            if isinstance(b, float) and math.isnan(b):
                assert isinstance(a, float) and math.isnan(a), (name, key)
            else:
                assert (a == b) or a == pytest.approx(b), (name, key, a, b)


def test_a_two_second_warm_up_spike_is_still_an_idle_gpu():
    from piqc_slurm.analysis import gpu_inputs

    # two GPUs of one 2-hour job: GPU 0 busy; GPU 1 at 0% but for a 2 s spike at 100% (active 2 of 7200 s);
    # the columns analyze reads from the store (power: mean / limit, 560 / 700 W and 70 / 700 W)
    rows = pd.DataFrame.from_records([
        {"job_ref": 1, "samples": 7200, "seconds": 7200.0, "active_seconds": 7000.0, "util_mean": 88.0,
         "mem_used_max_mib": 40960, "mem_total_mib": 81559, "power": 0.8, "sm_active_mean": None,
         "tensor_active_mean": None, "dram_active_mean": None, "mig": 0},
        {"job_ref": 1, "samples": 7200, "seconds": 7200.0, "active_seconds": 2.0, "util_mean": 0.03,
         "mem_used_max_mib": 500, "mem_total_mib": 81559, "power": 0.1, "sm_active_mean": None,
         "tensor_active_mean": None, "dram_active_mean": None, "mig": 0}])
    g = gpu_inputs(rows, min_share=0.05).loc[1]
    assert (g["sampled_gpus"], g["used_gpus"], g["idle_gpus"]) == (2, 1, 1)
    assert g["util_used"] == 88.0 and g["power_used"] == pytest.approx(0.8)   # 560 / 700 W
    v = judge(job(alloc_gpus=2, cost=16.0, elapsed=7200, **{k: g[k] for k in ("sampled_gpus", "used_gpus",
                                                                              "idle_gpus")}), T, TIERS)
    assert flags(v) == {"IDLE_GPUS"} and money(v["w_IDLE_GPUS"]) == 8.00   # 1 of 2 GPUs x 2 h x $4


def test_without_cpu_time_low_utilization_is_not_called_under_batched():
    # the Epilog knows no CPU time: a job at 27.6 % with memory free might be waiting for its CPUs
    # (seen on the cluster: an input-bound job's report said "raise the batch"); analyze, with TotalCPU, decides
    j = job(util_used=27.6, active_used=0.92, power_used=0.34, mem_peak_gib=10.0, cpu_eff=NAN)
    assert flags(judge(j, T, [])) == set()
    assert flags(judge({**j, "cpu_eff": 1.4}, T, [])) == {"INPUT_BOUND"}
    assert flags(judge({**j, "cpu_eff": 0.2}, T, [])) == {"UNDER_BATCHED"}
    # at or above ib_util_max (50 %) input-boundness is not in question: power still tells batch-1 decode
    assert flags(judge(job(util_used=90.0, power_used=0.25, cpu_eff=NAN), T, [])) == {"UNDER_BATCHED"}


def test_evidence_is_json_postgresql_accepts():
    import json

    # a failed job with no summary: pandas made restarts and exit_signal floats, NaN where unknown
    j = {**CASES["failed"], "state": "FAILED", "exit_code": "9:0", "exit_signal": 9.0, "restarts": NAN,
         "derived_exit_code": "0:0", "side": "user"}
    (f,) = findings(j, judge(CASES["failed"], T, TIERS), 0.05, 5.0)
    assert f["evidence"]["restarts"] is None and f["evidence"]["exit_signal"] == 9
    assert "signal 9)" in f["sentence"] and "9.0" not in f["sentence"]
    json.dumps(f["evidence"], allow_nan=False)    # PostgreSQL's json rejects NaN
