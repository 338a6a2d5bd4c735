"""usage/: the one definition of price, cost, use and outcome, on hand-computed values."""

from __future__ import annotations

import pytest

from piqc_slurm.usage.catalog import load_catalog
from piqc_slurm.usage.cost import Part, gpu_hours, job_cost, job_costs, money, money_text, parts_of
from piqc_slurm.usage.outcome import base_state, completed, failed, side
from piqc_slurm.usage.prices import PriceBook, Prices
from piqc_slurm.usage.rules import active_seconds_from_hist, active_share
from piqc_slurm.usage.utilization import fold, idle_share, idle_share_of, util_over_allocation

pytestmark = pytest.mark.unit
CAT = load_catalog()


def test_price_lookup_order():
    p = Prices(CAT, store_types={"h100": 5.0}, config_types={"h100": 4.0, "l4": 0.7, "default": 1.5},
               config_partitions={"legacy": 0.9}, store_partitions={"cheap": 0.3})
    assert p.gpu_rate("h100") == (5.0, "store", "h100")          # the scenario's price first
    assert p.gpu_rate("L4") == (0.7, "config", "l4")             # then [prices]
    assert p.gpu_rate("t4") == (0.59, "catalog", "t4")           # then the catalog: data/gpus.json t4 = 0.59
    assert p.gpu_rate("a100") == (2.79, "catalog", "a100-80")    # a gres alias: plain a100 is the 80 GB card
    assert p.gpu_rate(None, "legacy") == (0.9, "partition", None)  # unknown type: the partition's price
    assert p.gpu_rate("mi300x", "cheap") == (0.3, "partition", None)
    assert p.gpu_rate("mi300x", "other") == (1.5, "fallback", None)  # [prices] default
    assert not p.gpu_rate("mi300x").known and p.gpu_rate("h100").known
    assert Prices(CAT).gpu_rate(None).usd == 2.0                 # the catalog's fallback, never zero


def test_config_price_keys_are_canonicalised():
    p = Prices(CAT, config_types={"a100": 2.5})                  # a site writes the gres name it knows
    assert p.gpu_rate("a100-80").usd == 2.5 and p.gpu_rate("A100").usd == 2.5


def test_job_cost_by_hand():
    p = Prices(CAT, config_types={"h100": 4.0, "a10g": 1.0}, cpu_core_hour=0.04)
    c = job_cost([Part(4, "h100")], 5400, p)                     # 4 GPUs x 1.5 h x $4 = $24
    assert (c.usd, c.gpu_hours, c.rate.usd, c.known) == (24.0, 6.0, 4.0, True)
    # a job spanning two types: 2 x 1 h x 4 + 4 x 1 h x 1 = 12
    assert job_cost([(2, "h100"), (4, "a10g")], 3600, p).usd == 12.0
    assert job_cost([], 7200, p, cpus=16).usd == pytest.approx(16 * 2 * 0.04)   # CPU job: $1.28
    assert job_cost([(0, None)], 7200, p, cpus=16).usd == pytest.approx(1.28)
    assert job_cost([(8, "h100")], 0, p).usd == 0.0              # never started
    assert not job_cost([(1, "mi300x")], 3600, p).known
    assert gpu_hours(3, 1800) == 1.5 and gpu_hours(0, 100) == 0.0


def test_parts_from_alloc_tres():
    assert parts_of(2, "h100", "gres/gpu:h100=2,gres/gpu=2") == [Part(2, "h100")]
    assert parts_of(6, None, "cpu=2,gres/gpu:h100=2,gres/gpu:a100=4,gres/gpu=6") == [Part(2, "h100"),
                                                                                     Part(4, "a100")]
    assert parts_of(2, None, "cpu=1,gres/gpu=2") == [Part(2, None)]   # untyped gres


def test_money_rounds_half_up_to_the_cent():
    assert money(2.675) == 2.68          # round(2.675, 2) is 2.67 (binary float, half-even)
    assert money(0.125) == 0.13 and money(0.124999) == 0.12
    assert money(1 * 1044 / 3600 * 1.50) == 0.44  # exactly 0.435 by hand; 0.43499999999999994 as a float
    assert money_text(32) == "32.00" and money_text(None) == ""


def test_utilization_over_the_allocation_by_hand():
    rows = [
        {"node": 1, "seconds": 100, "util_mean": 80.0, "did_work": True, "mem_used_max_mib": 2048, "energy_j": 10},
        {"node": 1, "seconds": 50, "util_mean": 60.0, "did_work": True, "mem_used_max_mib": 4096, "energy_j": 5},
        {"node": 1, "seconds": 100, "util_mean": 0.0, "did_work": False, "mem_used_max_mib": 0, "energy_j": 1},
    ]
    st = fold(rows)
    # 80 + 60 x (50/100) + 0 = 110 over 4 allocated GPUs (one never sampled) = 27.5
    assert util_over_allocation(st, 4) == 27.5
    assert util_over_allocation(st, 2) == pytest.approx(110 / 3)  # never fewer than the sampled GPUs
    assert (st.used, st.idle, st.mem_peak_mib, st.energy_j) == (2, 1, 4096, 16)
    assert idle_share(st, 4) == 0.25 and idle_share(None, 4) is None
    assert idle_share_of(3, 4, 8) == 3 / 8 and idle_share_of(0, 0, 8) is None


def test_activity_from_the_histogram():
    hist = [0] * 101
    hist[0], hist[4], hist[5], hist[99] = 50_000, 10_000, 20_000, 20_000
    assert active_seconds_from_hist(hist, 5.0) == (40.0, 100.0)
    assert active_seconds_from_hist(hist, 4.5) == (40.0, 100.0)  # bins are whole percents: 4.x is below 5
    assert active_seconds_from_hist(None) is None
    assert active_share(40, 100) == 0.4 and active_share(None, 10) is None and active_share(1, 0) is None


def test_outcomes():
    assert completed("COMPLETED") and not completed("FAILED")
    assert failed("CANCELLED by 1001") and failed("TIMEOUT") and failed("NODE_FAIL") and failed("OUT_OF_MEMORY")
    assert not failed("CANCELLED", started=False)                # cancelled while pending spent nothing
    assert not failed("COMPLETED") and not failed("RUNNING") and not failed("REQUEUED")
    assert side("PREEMPTED") == "site" and side("FAILED") == "user" and side("COMPLETED") is None
    assert base_state("CANCELLED by 0") == "CANCELLED"


def test_price_book_per_cluster_with_catalog_overrides():
    from piqc_slurm.config import Config, defaults

    cfg = Config({**defaults(), "prices": {"h100": 4.0}})
    book = PriceBook(cfg, CAT, {"sim": {"type": {"h100": 3.0}, "catalog": {"gh200": {"mem_gib": 96, "price": 6.0}}}})
    assert book.for_cluster("sim").gpu_rate("h100").usd == 3.0
    assert book.for_cluster("real").gpu_rate("h100").usd == 4.0
    assert book.for_cluster("sim").gpu_rate("gh200") == (6.0, "catalog", "gh200")
    assert book.for_cluster("real").gpu_rate("gh200").source == "fallback"


def test_many_jobs_cost_what_each_does():
    """job_costs (the analyzer's form: one rate lookup per job shape) on hand figures, and equal
    to the bit to job_cost job by job."""
    from piqc_slurm.config import Config, defaults

    cfg = Config({**defaults(), "prices": {"h100": 4.0, "a10g": 1.0}, "partition_prices": {"mystery": 3.0},
                  "usage.cpu_core_hour_price": 0.04})
    book = PriceBook(cfg, CAT, {"sim": {"type": {"h100": 3.0}}})
    jobs = [  # cluster, GPUs, type, AllocTRES, elapsed, partition, CPUs, by hand
        ("real", 4, "h100", "", 5400, "gpu", 32, 24.0),                     # 4 x 1.5 h x $4
        ("sim", 4, "h100", "", 5400, "gpu", 32, 18.0),                      # the scenario's $3
        ("real", 6, None, "cpu=8,gres/gpu:h100=2,gres/gpu:a10g=4,gres/gpu=6", 3600, "gpu", 8, 12.0),
        ("real", 0, None, "cpu=16", 7200, "cpu", 16, 16 * 2 * 0.04),        # a CPU job: $1.28
        ("real", 8, "h100", "", 0, "gpu", 64, 0.0),                         # never started
        ("real", 1, "mi300x", "", 3600, "mystery", 8, 3.0),                 # unknown type: the partition's
        ("real", 1, "h100", None, 1044, "gpu", 8, 1044 / 3600 * 4.0),
        ("real", 4, "h100", "", 2700, "gpu", 32, 12.0),                     # the first shape again
    ]
    got = job_costs(*(list(c) for c in list(zip(*jobs, strict=True))[:7]), book).tolist()
    for (cl, n, t, tres, el, part, cpus, hand), usd in zip(jobs, got, strict=True):
        assert usd == pytest.approx(hand, abs=1e-12), (cl, n, t, el)
        one = job_cost(parts_of(n, t, tres or ""), el, book.for_cluster(cl), partition=part, cpus=cpus).usd
        assert usd == one, (cl, n, t, el)
