"""The live rules (sampler/watch.py) on scripted samples: when each fires, once, and again only
after a recovery; what they say; that UNDER_BATCHED is the analyze rule's verdict on the window.
Times and thresholds are hand-chosen so each expected moment is computed by hand in the test."""

from __future__ import annotations

import pytest

from piqc_slurm.analyze.rules import Thresholds
from piqc_slurm.config import Config, defaults
from piqc_slurm.sampler.aggregate import Sample
from piqc_slurm.sampler.watch import Watch, WatchSettings

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0
THRESHOLDS = Thresholds.from_config(Config(defaults()))._asdict()


def watch(n: int = 2, **kw) -> Watch:
    s = WatchSettings(**{"idle_minutes": 1.0, "gpu_idle_minutes": 2.0, "underbatched_minutes": 0.0, **kw})
    return Watch(s, started=T0, interval=1.0, devices={m: (300.0, 81920.0) for m in range(n)})


def run(w: Watch, seconds: int, util, start: int = 0, **sample) -> list:
    """One sample per second per GPU from T0+start; util(minor, t) gives each utilization."""
    fired = []
    for t in range(start, start + seconds):
        for m in w.tracks:
            w.add(T0 + t, m, Sample(util=util(m, t), **sample))
        fired += [(t, e.rule) for e in w.evaluate(T0 + t)]
    return fired


def test_the_bucket_is_a_tenth_of_the_shortest_window():
    assert watch().bucket_s == 6.0                     # 1 minute / 10
    assert watch(idle_minutes=30, gpu_idle_minutes=60).bucket_s == 60.0  # capped at 60 s
    assert watch(idle_minutes=0.05, gpu_idle_minutes=0).bucket_s == 1.0  # at least one interval


def test_all_idle_fires_once_at_idle_minutes():
    w = watch()
    fired = run(w, 200, lambda m, t: 0.0)
    # idle from T0 (the first bucket's start): 60 s at t=60; IDLE_GPU never (no GPU works)
    assert fired == [(60, "IDLE_GPUS")]
    ev = w.events[0]
    assert ev.since == T0 and ev.gpus == (0, 1) and ev.nightly == "IDLE_GPUS"
    assert ev.evidence == "all 2 GPUs active under 5% of the time for 1.0 min"


def test_a_job_that_loads_then_works_gets_no_notice():
    """Idle for the first 40 s (model loading), then 80% busy: the run ends at the first busy bucket."""
    fired = run(watch(), 600, lambda m, t: 0.0 if t < 40 else 80.0)
    assert fired == []


def test_a_warm_up_spike_does_not_reset_the_idle_run():
    # idle_minutes=10: 60 s buckets; one second at 100% is 1/60 < 5% of its bucket [0, 60), which stays
    # idle (the nightly did_work rule), so the run starts at T0 and reaches 600 s at t=600
    w = watch(idle_minutes=10.0, gpu_idle_minutes=0.0)
    fired = run(w, 700, lambda m, t: 100.0 if t == 30 else 0.0)
    assert fired == [(600, "IDLE_GPUS")]


def test_one_idle_gpu_while_the_other_works():
    w = watch()
    fired = run(w, 300, lambda m, t: 90.0 if m == 0 else 0.0)
    assert fired == [(120, "IDLE_GPU")]               # gpu_idle_minutes = 2, GPU 1 idle from T0
    assert w.events[0].gpus == (1,) and w.events[0].evidence == "1 of 2 GPUs idle for 2.0 min while 1 work"


def test_fires_again_only_after_recovery_and_relapse():
    w = watch(gpu_idle_minutes=0.0)
    fired = run(w, 100, lambda m, t: 0.0)                               # idle: fires at 60
    fired += run(w, 30, lambda m, t: 90.0, start=100)                   # works from 100
    fired += run(w, 120, lambda m, t: 0.0, start=130)                   # idle again from 130
    # recovered once the bucket [96, 102) reads busy (>= 5%) at t=100: idle_for 0 at once
    # the relapse: bucket [126, 132) holds 100..129 busy until t=129, closes busy at 132 -> run from
    # bucket [132, 138) on: 60 s at t=192
    assert [r for _, r in fired] == ["IDLE_GPUS", "recovered:IDLE_GPUS", "IDLE_GPUS"]
    assert fired[0][0] == 60 and fired[2][0] == 192


def test_state_survives_a_restart_without_a_second_notice():
    w = watch(gpu_idle_minutes=0.0)
    run(w, 100, lambda m, t: 0.0)
    again = watch(gpu_idle_minutes=0.0)
    again.restore(w.state())
    assert again.fired == {"IDLE_GPUS": (T0, (0, 1))}
    assert run(again, 200, lambda m, t: 0.0) == []   # still idle: already told
    assert [e.rule for e in again.events] == ["IDLE_GPUS"]


def test_under_batched_is_the_analyze_rule_on_the_window():
    """Utilization 70% (>= ib_util_max 50: knowable without CPU time), power 30% of the limit: below
    ub_power_max 0.5 with util >= ub_power_util_min -> by power; est factor = 0.30 / target_power."""
    w = watch(idle_minutes=0.0, gpu_idle_minutes=0.0, underbatched_minutes=1.0, thresholds=THRESHOLDS)
    fired = run(w, 120, lambda m, t: 70.0, power_w=90.0, mem_used_mib=20000.0)
    assert fired == [(60, "UNDER_BATCHED")]          # the window is full at T0 + 60
    ev = w.events[0]
    factor = 0.30 / THRESHOLDS["target_power"]
    assert ev.evidence == (f"power 30% of the limit on 2 working GPUs over 1.0 min "
                           f"(about {factor:.0%} of what they could do)")
    # the same figures at full power: no finding
    w2 = watch(idle_minutes=0.0, gpu_idle_minutes=0.0, underbatched_minutes=1.0, thresholds=THRESHOLDS)
    assert run(w2, 120, lambda m, t: 70.0, power_w=280.0, mem_used_mib=20000.0) == []


def test_settings_are_strict():
    with pytest.raises(ValueError, match="unknown key"):
        WatchSettings.from_dict({"idle_minute": 3})
    with pytest.raises(ValueError, match="idle_minutes"):
        WatchSettings.from_dict({"idle_minutes": -1})
    with pytest.raises(ValueError, match="thresholds"):
        WatchSettings.from_dict({"thresholds": {"ub_sm_max": 0.5}})
    s = WatchSettings.from_dict({"idle_minutes": 0.25, "thresholds": THRESHOLDS})
    assert s.idle_minutes == 0.25 and WatchSettings.from_dict(s.to_dict()) == s


def test_the_cancel_policy_warns_at_its_lead_times_then_cancels_once():
    # IDLE_GPUS from T0, fired at 60 (idle_minutes 1); cancel after 3 min: warnings at 3-2 = 1 min and
    # 3-1 = 2 min of the rule (t = 60 and 120), the cancel at 180; a lead >= 3 min is never due
    w = watch(gpu_idle_minutes=0.0, cancel_after_minutes=3.0, cancel_warn_minutes=(2.0, 1.0, 5.0))
    steps = []
    for t in range(0, 400):
        for m in w.tracks:
            w.add(T0 + t, m, Sample(util=0.0))
        w.evaluate(T0 + t)
        steps += [(t, step, rule, lead) for step, rule, _since, lead in w.due(T0 + t)]
    # the rule holds since T0: held 1 min (lead 2) at t=60, as it fires; 2 min (lead 1) at 120; 3 min at 180
    assert steps == [(60, "warn", "IDLE_GPUS", 2.0), (120, "warn", "IDLE_GPUS", 1.0),
                     (180, "cancel", "IDLE_GPUS", 0.0)]
    assert w.state()["cancelled"] == "IDLE_GPUS"


def test_an_exempt_job_or_a_rule_not_named_is_never_warned_or_cancelled():
    for kw in ({"cancel_exempt": "exempt user alice"}, {"cancel_rules": ("UNDER_BATCHED",)}):
        w = watch(gpu_idle_minutes=0.0, cancel_after_minutes=2.0, **kw)
        for t in range(0, 300):
            for m in w.tracks:
                w.add(T0 + t, m, Sample(util=0.0))
            w.evaluate(T0 + t)
            assert w.due(T0 + t) == []
        assert "IDLE_GPUS" in w.fired   # the rule itself still fired (its notice still comes)
