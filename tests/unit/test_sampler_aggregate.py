"""The sampler's pure streaming core: GpuAggregate and TimelineBinner.

Invariants are checked with hypothesis over arbitrary sample streams (gaps,
repeated timestamps, metrics that come and go); the worked examples pin the
exact arithmetic (time weighting, gap cap, counter vs integrated energy).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piqc_slurm.sampler.aggregate import (
    GAP_CAP,
    GPM_FIELDS,
    HIST_BINS,
    MAX_PIDS,
    GpuAggregate,
    Sample,
    TimelineBinner,
)

pytestmark = pytest.mark.unit

FIELDS = ("util", "mem_util", "mem_used_mib", "power_w", "energy_mj", "sm_clock_mhz", "temp_c", *GPM_FIELDS)
DERIVED = {  # sample field -> summary keys that exist only when the field was seen
    "util": ("util_mean", "util_min", "util_max", "util_p50", "util_p95", "active_seconds",
             "util_hist_ms"),
    "mem_util": ("mem_util_mean", "mem_util_max"),
    "mem_used_mib": ("mem_used_mean_mib", "mem_used_max_mib"),
    "power_w": ("power_mean_w", "power_max_w"),
    "sm_clock_mhz": ("sm_clock_mean_mhz", "sm_clock_max_mhz"),
    "temp_c": ("temp_max_c",),
    **{f: (f"{f}_mean", f"{f}_p95") for f in GPM_FIELDS},
}


def opt(values: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), values)


samples = st.builds(
    Sample,
    util=opt(st.integers(0, 100).map(float)),
    mem_util=opt(st.floats(0, 100)),
    mem_used_mib=opt(st.floats(0, 200_000)),
    power_w=opt(st.floats(0, 1000)),
    energy_mj=opt(st.integers(0, 10**12).map(float)),
    sm_clock_mhz=opt(st.floats(0, 3000)),
    temp_c=opt(st.floats(0, 120)),
    sm_active=opt(st.floats(0, 1)),
    sm_occupancy=opt(st.floats(0, 1)),
    tensor_active=opt(st.floats(0, 1)),
    dram_active=opt(st.floats(0, 1)),
)
# (time step, sample); steps include 0 (same timestamp) and long stalls
streams = st.lists(st.tuples(st.floats(0, 20), samples), min_size=1, max_size=60)
intervals = st.sampled_from([0.1, 0.2, 1.0, 5.0])


def feed(stream: list[tuple[float, Sample]], interval: float = 1.0,
         power_limit_w: float | None = None) -> GpuAggregate:
    agg = GpuAggregate(interval, process_interval=10.0, active_util=5.0, power_limit_w=power_limit_w)
    t = 1000.0
    for step, s in stream:
        t += step
        agg.add(t, s)
    return agg


def via_json(d: dict) -> dict:
    return json.loads(json.dumps(d))


@given(streams, intervals)
@settings(max_examples=300, deadline=None)
def test_invariants(stream: list[tuple[float, Sample]], interval: float) -> None:
    agg = feed(stream, interval)
    d = agg.to_dict()
    assert d["samples"] == len(stream)
    assert 0 < d["seconds"] <= interval * (1 + GAP_CAP * (len(stream) - 1)) + 1e-6
    if "util_mean" in d:
        assert d["util_min"] <= d["util_mean"] <= d["util_max"]
        assert d["util_p50"] <= d["util_p95"] <= d["util_max"]
        assert d["util_min"] <= d["util_p95"] + 1     # floor bins: p is within a percent of real values
        assert 0 <= d["active_seconds"] <= d["seconds"] + 1e-6
        assert len(d["util_hist_ms"]) == HIST_BINS
    for lo, mean, hi in (("mem_util_mean", "mem_util_mean", "mem_util_max"),
                         ("mem_used_mean_mib", "mem_used_mean_mib", "mem_used_max_mib"),
                         ("power_mean_w", "power_mean_w", "power_max_w"),
                         ("sm_clock_mean_mhz", "sm_clock_mean_mhz", "sm_clock_max_mhz")):
        if mean in d:
            assert d[mean] <= d[hi]
            assert d[lo] >= 0
    if "energy_j" in d:
        assert d["energy_j"] >= 0
        assert d["energy_source"] in ("counter", "power")
    for name in GPM_FIELDS:
        if f"{name}_mean" in d:
            st_ = agg.stats[name]
            lo, hi = round(st_.lo, 3), round(st_.hi, 3)
            assert 0 <= lo <= d[f"{name}_mean"] <= hi <= 1
            assert lo <= d[f"{name}_p95"] <= hi
            assert len(d["acc"]["gpm_hist_ms"][name]) == HIST_BINS
    assert "power_frac_mean" not in d                 # no power limit given


@given(streams, intervals)
@settings(max_examples=200, deadline=None)
def test_absent_fields_stay_absent(stream: list[tuple[float, Sample]], interval: float) -> None:
    d = feed(stream, interval).to_dict()
    for field, keys in DERIVED.items():
        seen = any(getattr(s, field) is not None for _, s in stream)
        for key in keys:
            assert (key in d) == seen, (field, key)
    power_seen = any(s.power_w is not None for _, s in stream)
    counter_readings = sum(s.energy_mj is not None for _, s in stream)
    assert ("energy_j" in d) == (power_seen or counter_readings >= 2)
    if counter_readings >= 2:
        assert d["energy_source"] == "counter"
    elif power_seen:
        assert d["energy_source"] == "power"


@given(streams, intervals, st.lists(st.tuples(st.floats(0, 30), st.lists(st.integers(1, 60), max_size=5),
                                              st.booleans()), max_size=20))
@settings(max_examples=200, deadline=None)
def test_round_trip(stream: list[tuple[float, Sample]], interval: float,
                    checks: list[tuple[float, list[int], bool]]) -> None:
    agg = feed(stream, interval, power_limit_w=700.0)
    t = 1000.0
    for step, pids, ours in checks:
        t += step
        agg.add_processes(t, pids, pids[:1] if ours else [])
    d = agg.to_dict()
    again = GpuAggregate.from_dict(via_json(d))
    assert again.to_dict() == d
    assert again == agg
    # a restored aggregate keeps accumulating exactly like the original
    s = Sample(util=50.0, power_w=100.0, energy_mj=(agg.energy_last_mj or 0) + 5000, sm_active=0.5,
               dram_active=0.25)
    agg.add(t + 1, s)
    again.add(t + 1, s)
    assert again.to_dict() == agg.to_dict()


@given(st.integers(1, 5000))
@settings(max_examples=20, deadline=None)
def test_size_independent_of_sample_count(n: int) -> None:
    full = Sample(util=37.0, mem_util=20.0, mem_used_mib=1000.5, power_w=250.0,
                  energy_mj=0.0, sm_clock_mhz=1500.0, temp_c=60.0, sm_active=0.4, sm_occupancy=0.3,
                  tensor_active=0.2, dram_active=0.6)
    small, big = GpuAggregate(1.0, power_limit_w=700.0), GpuAggregate(1.0, power_limit_w=700.0)
    small.add(0.0, full)
    for i in range(n):
        big.add(float(i), dataclasses.replace(full, energy_mj=i * 250_000.0))
    a, b = small.to_dict(), big.to_dict()

    def shape(x: object) -> object:
        if isinstance(x, dict):
            return {k: shape(v) for k, v in x.items()}
        if isinstance(x, list):
            return len(x)
        return type(x).__name__

    assert shape(a) == shape(b)
    assert len(json.dumps(b)) < 6000


def test_time_weighting_first_sample_and_gap_cap() -> None:
    agg = GpuAggregate(1.0, active_util=5.0)
    agg.add(100.0, Sample(util=100.0))     # first: one nominal interval
    agg.add(101.0, Sample(util=100.0))     # 1 s
    agg.add(111.0, Sample(util=0.0))       # 10 s gap, capped at 3 s
    agg.add(112.0, Sample(util=0.0))       # 1 s
    d = agg.to_dict()
    assert d["samples"] == 4
    assert d["seconds"] == pytest.approx(6.0)
    assert d["util_mean"] == pytest.approx(200 / 6, abs=1e-3)
    assert d["active_seconds"] == pytest.approx(2.0)
    assert d["util_hist_ms"][100] == 2000 and d["util_hist_ms"][0] == 4000
    assert (d["util_p50"], d["util_p95"], d["util_max"], d["util_min"]) == (0, 100, 100.0, 0.0)


def test_percentiles_from_histogram() -> None:
    agg = GpuAggregate(1.0)
    for i, u in enumerate([10] * 50 + [90] * 45 + [99] * 5):
        agg.add(float(i), Sample(util=float(u)))
    assert (agg.percentile(0.5), agg.percentile(0.95), agg.percentile(0.96)) == (10, 90, 99)


def test_active_threshold_is_inclusive() -> None:
    agg = GpuAggregate(2.0, active_util=5.0)
    agg.add(0.0, Sample(util=5.0))
    agg.add(2.0, Sample(util=4.0))
    assert agg.to_dict()["active_seconds"] == 2.0


def test_energy_counter_delta_and_reset() -> None:
    agg = GpuAggregate(1.0)
    for t, e in [(0, 1_000_000), (1, 1_300_000), (2, 1_600_000), (3, 50_000), (4, 350_000)]:
        agg.add(float(t), Sample(power_w=300.0, energy_mj=float(e)))
    d = agg.to_dict()
    # 300 J + 300 J, the reset segment starts over (no negative delta), + 300 J
    assert (d["energy_j"], d["energy_source"]) == (900.0, "counter")


def test_energy_from_power_without_counter() -> None:
    agg = GpuAggregate(0.5)
    agg.add(0.0, Sample(power_w=100.0))    # 0.5 s nominal
    agg.add(1.0, Sample(power_w=200.0))    # 1 s
    d = agg.to_dict()
    assert (d["energy_j"], d["energy_source"]) == (250.0, "power")
    assert d["power_mean_w"] == pytest.approx(250 / 1.5, abs=1e-3)


def test_memory_and_clock_extremes() -> None:
    agg = GpuAggregate(1.0)
    for t, (mem, clk, temp) in enumerate([(100.0, 300.0, 30.0), (40960.0, 1980.0, 70.0), (10.0, 500.0, 40.0)]):
        agg.add(float(t), Sample(mem_used_mib=mem, sm_clock_mhz=clk, temp_c=temp, mem_util=50.0))
    d = agg.to_dict()
    assert d["mem_used_max_mib"] == 40960.0
    assert d["mem_used_mean_mib"] == pytest.approx((100 + 40960 + 10) / 3, abs=1e-3)
    assert (d["sm_clock_max_mhz"], d["temp_max_c"], d["mem_util_mean"]) == (1980.0, 70.0, 50.0)
    assert "util_mean" not in d and "energy_j" not in d and "power_mean_w" not in d


def test_non_finite_readings_are_ignored() -> None:
    agg = GpuAggregate(1.0)
    agg.add(0.0, Sample(util=math.nan, power_w=math.inf, temp_c=50.0))
    d = agg.to_dict()
    assert "util_mean" not in d and "power_mean_w" not in d and d["temp_max_c"] == 50.0
    json.dumps(d, allow_nan=False)


def test_process_attribution() -> None:
    agg = GpuAggregate(1.0, process_interval=10.0)
    agg.add_processes(0.0, [], [])                 # first check: 10 s nominal, nothing
    agg.add_processes(10.0, [7, 8], [7])           # 10 s with a job process
    agg.add_processes(20.0, [8], [])               # 10 s with a foreign process only
    agg.add_processes(100.0, [7], [7])             # 80 s gap, capped at 30 s
    d = agg.to_dict()
    assert d["process_checks"] == 4
    assert d["process_seconds"] == 50.0
    assert d["job_process_seconds"] == 40.0
    assert (d["pids"], d["job_pids"]) == ([7, 8], [7])


def test_pids_are_capped() -> None:
    agg = GpuAggregate(1.0)
    for i in range(40):
        agg.add_processes(float(i), [1000 + i], [1000 + i])
    d = agg.to_dict()
    assert d["pids"] == list(range(1000, 1000 + MAX_PIDS)) == d["job_pids"]


def test_empty_aggregate_round_trips() -> None:
    d = GpuAggregate(1.0).to_dict()
    assert d["samples"] == 0 and "util_mean" not in d and "util_hist_ms" not in d
    assert GpuAggregate.from_dict(via_json(d)).to_dict() == d


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("interval"), "missing interval"),
    (lambda d: d.update(samples=-1), "samples"),
    (lambda d: d.update(util_hist_ms=[0] * 100), "util_hist_ms"),
    (lambda d: d["acc"].update(util=[1, 2, 3]), "acc.util"),
    (lambda d: d.update(pids=["x"]), "pids"),
    (lambda d: d.pop("util_hist_ms"), "present together"),
    (lambda d: d["acc"].update(energy=[1.0, 2.0, 0]), "acc.energy"),
    (lambda d: d.update(interval=0), "interval must be > 0"),
    (lambda d: d["acc"].update(gpm_hist_ms=[0] * HIST_BINS), "acc.gpm_hist_ms: expected an object"),
    (lambda d: d["acc"]["gpm_hist_ms"].update(sm_active=[0] * 100), r"acc.gpm_hist_ms.sm_active: expected 101"),
    (lambda d: d["acc"]["gpm_hist_ms"].update(sm_active=[-1] * HIST_BINS), "acc.gpm_hist_ms.sm_active"),
    (lambda d: d["acc"]["gpm_hist_ms"].update(dram_active=[0] * HIST_BINS), "without acc.dram_active"),
    (lambda d: d["acc"]["gpm_hist_ms"].update(sm_clock=[0] * HIST_BINS), "unknown metric 'sm_clock'"),
    (lambda d: d["acc"].update(power_limit_w="700"), "acc.power_limit_w: expected a number"),
    (lambda d: d["acc"].update(power_limit_w=0), "acc.power_limit_w: expected > 0"),
])
def test_from_dict_rejects_bad_state(mutate, message: str) -> None:
    agg = GpuAggregate(1.0, power_limit_w=300.0)
    agg.add(0.0, Sample(util=10.0, energy_mj=5.0, sm_active=0.5))
    d = via_json(agg.to_dict())
    mutate(d)
    with pytest.raises(ValueError, match=message):
        GpuAggregate.from_dict(d)


# ---- GPM and power against the limit ----

def test_gpm_mean_and_p95_by_hand() -> None:
    agg = GpuAggregate(1.0)
    t = 0.0
    for _ in range(8):                              # 8 s at SM 0.1 (first one: the nominal interval)
        agg.add(t, Sample(sm_active=0.1, tensor_active=0.05, dram_active=0.29))
        t += 1.0
    t += 1.0                                        # then a 2 s gap ending at SM 0.9
    agg.add(t, Sample(sm_active=0.9, tensor_active=0.05, dram_active=0.29))
    d = agg.to_dict()
    assert d["seconds"] == 10.0
    assert d["sm_active_mean"] == 0.26              # (8 * 0.1 + 2 * 0.9) / 10
    assert d["sm_active_p95"] == 0.9                # 8000 of 10000 ms below: the 95th is in 0.9's bin
    assert agg.gpm_percentile("sm_active", 0.5) == 0.1
    assert (d["tensor_active_mean"], d["tensor_active_p95"]) == (0.05, 0.05)
    assert (d["dram_active_mean"], d["dram_active_p95"]) == (0.29, 0.29)   # 28.999..% stays in bin 29
    hist = d["acc"]["gpm_hist_ms"]
    assert set(hist) == {"sm_active", "tensor_active", "dram_active"}
    assert hist["sm_active"][10] == 8000 and hist["sm_active"][90] == 2000 and sum(hist["sm_active"]) == 10000
    assert hist["dram_active"][29] == 10000
    for key in ("sm_occupancy_mean", "sm_occupancy_p95", "util_mean", "power_frac_mean"):
        assert key not in d                         # never reported: absent, not 0


def test_gpm_p95_stays_within_the_values() -> None:
    agg = GpuAggregate(1.0)
    for i in range(10):
        agg.add(float(i), Sample(sm_occupancy=0.305, sm_active=1.7, tensor_active=-0.2))
    d = agg.to_dict()
    # floor bins would say 0.30; the p95 of a constant is the constant
    assert (d["sm_occupancy_mean"], d["sm_occupancy_p95"]) == (0.305, 0.305)
    # out-of-range readings are clamped to 0..1
    assert (d["sm_active_mean"], d["sm_active_p95"]) == (1.0, 1.0)
    assert (d["tensor_active_mean"], d["tensor_active_p95"]) == (0.0, 0.0)


def test_gpm_metric_that_comes_and_goes_is_weighted_by_its_own_time() -> None:
    agg = GpuAggregate(1.0)
    agg.add(0.0, Sample(util=50.0))                      # no GPM value (first GPM sample not yet paired)
    agg.add(1.0, Sample(util=50.0, sm_active=0.4))
    agg.add(2.0, Sample(util=50.0, sm_active=0.6))
    d = agg.to_dict()
    assert d["sm_active_mean"] == 0.5 and d["sm_active_p95"] == 0.6
    assert sum(d["acc"]["gpm_hist_ms"]["sm_active"]) == 2000


def test_power_frac_mean_against_the_limit() -> None:
    agg = GpuAggregate(1.0, power_limit_w=700.0)
    for i, w in enumerate([175.0, 175.0, 350.0, 0.0]):
        agg.add(float(i), Sample(power_w=w))
    d = agg.to_dict()
    assert d["power_mean_w"] == 175.0 and d["power_frac_mean"] == 0.25
    assert d["acc"]["power_limit_w"] == 700.0
    assert GpuAggregate.from_dict(via_json(d)).to_dict() == d
    no_power = GpuAggregate(1.0, power_limit_w=700.0)
    no_power.add(0.0, Sample(util=5.0))
    assert "power_frac_mean" not in no_power.to_dict()
    with pytest.raises(ValueError, match="power_limit_w"):
        GpuAggregate(1.0, power_limit_w=0.0)


def test_gpm_round_trip_is_exact_and_keeps_accumulating() -> None:
    agg = GpuAggregate(1.0, power_limit_w=300.0)
    for i in range(50):
        agg.add(float(i), Sample(util=float(i), power_w=100.0 + i, sm_active=(i % 10) / 10,
                                 sm_occupancy=0.33, tensor_active=0.01 * i, dram_active=0.5))
    again = GpuAggregate.from_dict(via_json(agg.to_dict()))
    assert again.to_dict() == agg.to_dict()
    for i in range(50, 80):
        s = Sample(util=90.0, power_w=250.0, sm_active=0.95, tensor_active=0.7)
        agg.add(float(i), s)
        again.add(float(i), s)
    assert again.to_dict() == agg.to_dict()
    assert again.to_dict()["sm_active_p95"] == 0.95


def test_checkpoint_from_before_gpm_percentiles_loads() -> None:
    agg = GpuAggregate(1.0, power_limit_w=700.0)
    for i in range(10):
        agg.add(float(i), Sample(util=50.0, power_w=350.0, sm_active=0.2, tensor_active=0.05))
    old = via_json(agg.to_dict())
    # what an earlier sampler wrote: means only, no histograms, no limit, no sm_occupancy
    for key in ("sm_active_p95", "tensor_active_p95", "power_frac_mean"):
        old.pop(key)
    old["acc"].pop("gpm_hist_ms")
    old["acc"].pop("power_limit_w")
    restored = GpuAggregate.from_dict(old)
    d = restored.to_dict()
    assert (d["sm_active_mean"], d["tensor_active_mean"], d["power_mean_w"]) == (0.2, 0.05, 350.0)
    assert "sm_active_p95" not in d and "power_frac_mean" not in d and "gpm_hist_ms" not in d["acc"]
    assert GpuAggregate.from_dict(via_json(d)).to_dict() == d
    # a p95 of only the samples after the restore would be wrong: none for those metrics, ever;
    # a metric first seen after the restore gets its histogram
    restored.add(10.0, Sample(util=50.0, sm_active=0.9, dram_active=0.4))
    d = restored.to_dict()
    assert d["sm_active_mean"] == pytest.approx((10 * 0.2 + 0.9) / 11, abs=1e-3)
    assert "sm_active_p95" not in d and d["dram_active_p95"] == 0.4
    assert set(d["acc"]["gpm_hist_ms"]) == {"dram_active"}


# ---- timeline ----

def test_timeline_bins_close_by_time_and_by_next_sample() -> None:
    tb = TimelineBinner(60)
    tb.add(1200.0, 0, Sample(util=10.0, mem_used_mib=100.0, power_w=100.0))
    tb.add(1230.0, 0, Sample(util=30.0, mem_used_mib=300.0, power_w=200.0))
    tb.add(1230.0, 1, Sample(util=90.0))                 # no memory or power: keys absent
    assert tb.flush_closed(1259.9) == []
    tb.add(1261.0, 0, Sample(util=50.0))                 # closes gpu 0's first bin
    assert tb.flush_closed(1261.0) == [
        {"t": 1200, "gpu": 0, "util": 20.0, "mem_mib": 300, "power_w": 150.0},
        {"t": 1200, "gpu": 1, "util": 90.0},
    ]
    assert tb.flush_closed(1300.0) == []
    assert tb.flush_all() == [{"t": 1260, "gpu": 0, "util": 50.0}]
    assert tb.flush_all() == []


def test_timeline_memory_is_bounded() -> None:
    tb = TimelineBinner(1)
    for i in range(10_000):
        tb.add(float(i), i % 4, Sample(util=1.0))
        if i % 100 == 0:
            tb.flush_closed(float(i))
    assert len(tb._open) <= 4 and len(tb._closed) < 500


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3), samples), max_size=80),
       st.integers(1, 120))
@settings(max_examples=100, deadline=None)
def test_timeline_every_sample_lands_in_one_bin(rows, bin_seconds: int) -> None:
    tb = TimelineBinner(bin_seconds)
    t, out = 1_700_000_000.0, []
    for step, gpu, s in rows:
        t += step
        tb.add(t, gpu, s)
        out += tb.flush_closed(t)
    out += tb.flush_all()
    keys = [(b["t"], b["gpu"]) for b in out]
    assert len(keys) == len(set(keys))
    assert all(b["t"] % bin_seconds == 0 for b in out)
    for b in out:
        assert set(b) <= {"t", "gpu", "util", "mem_mib", "power_w"}
    assert set(keys) == {(int(tt // bin_seconds) * bin_seconds, g) for tt, g in _times(rows)}


def _times(rows):
    t = 1_700_000_000.0
    for step, gpu, _ in rows:
        t += step
        yield t, gpu


def test_bad_bin_size() -> None:
    with pytest.raises(ValueError):
        TimelineBinner(0)
