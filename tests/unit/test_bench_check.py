"""bench/run.py's regression check (CI's quick run fails only on a gated figure over 5x its
baseline, and more than the slack worse) and bench/render.py's README table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import render
        import run
    finally:
        sys.path.remove(str(BENCH))
    return run, render


def fig(fid: str, value: float, unit: str = "ms", gate: bool = True, **kw) -> dict:
    return {"id": fid, "value": value, "unit": unit, "gate": gate, "what": fid, "target": None, "op": None,
            "pass": None, "ratio": None, "ratio_to": None, **kw}


def test_only_a_gated_figure_over_five_times_its_baseline_and_past_the_slack_fails(bench):
    run, _ = bench
    base = {"figures": [fig("a", 100.0), fig("b", 100.0), fig("c", 5.0), fig("d", 100.0), fig("e", 1.0, "s"),
                        fig("f", 10.0, "%")]}
    now = {"figures": [
        fig("a", 501.0),              # 5.01x and 401 ms worse: a regression
        fig("b", 499.0),              # 4.99x: not
        fig("c", 40.0),               # 8x but only 35 ms worse (slack 50 ms): noise
        fig("d", 900.0, gate=False),  # not gated
        fig("e", 5.2, "s"),           # 5.2x and 4.2 s worse
        fig("f", 51.0, "%"),          # 5.1x, no slack for %
        fig("new", 1e9),              # no baseline: nothing to compare
    ]}
    bad = run.regressions(now, base, 5.0)
    assert [line.split(":")[0] for line in bad] == ["a", "e", "f"]
    assert run.regressions(now, base, 10.0) == []


def test_a_figure_in_another_unit_than_its_baseline_is_not_compared(bench):
    run, _ = bench
    assert run.regressions({"figures": [fig("a", 100.0, "s")]}, {"figures": [fig("a", 1.0, "ms")]}, 5.0) == []


def test_the_readme_table_shows_value_target_ratio_machine_and_date(bench, tmp_path):
    _, render = bench
    doc = {"machine": {"nproc": 2, "mem_gib": 23, "date": "2026-12-02"}, "figures": [
        fig("hooks.prolog", 38.4, ratio=6.55, ratio_to="/bin/true wrapper"),
        fig("store.bytes_per_gpu_hour.sqlite", 3122.5, "B", target=500.0, op="<=", **{"pass": False}),
        fig("cluster.sacct.ratio_median", 0.76, "x", target=1.0, op="<=", ratio=0.76, ratio_to="sacct",
            **{"pass": True}),
        fig("not.a.headline", 1.0),
    ]}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    lines = render.render([p]).splitlines()
    assert lines[0] == "| what | figure | target | ratio | machine | date |"
    assert lines[2] == "| hooks.prolog | 38.4 ms |  | 6.55x /bin/true wrapper | 2 cores, 23 GiB | 2026-12-02 |"
    assert lines[3] == "| store.bytes_per_gpu_hour.sqlite | 3,122 B | <= 500 B **missed** |  | 2 cores, 23 GiB | " \
                       "2026-12-02 |"
    assert lines[4] == "| cluster.sacct.ratio_median | 0.76x | <= 1.00x met | vs sacct | 2 cores, 23 GiB | 2026-12-02 |"
    assert len(lines) == 5  # the non-headline figure only with --all
    assert len(render.render([p], everything=True).splitlines()) == 6


def test_the_machine_column_names_the_cpu(bench, tmp_path):
    """Two 2-core machines here differ ~2x in speed: the table says which one a figure came from."""
    _, render = bench
    doc = {"machine": {"nproc": 2, "mem_gib": 23, "date": "2026-12-04", "cpu": "AMD EPYC"},
           "figures": [fig("hooks.prolog", 8.7)]}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    assert render.render([p]).splitlines()[2] == ("| hooks.prolog | 8.7 ms |  |  | 2 cores AMD EPYC, 23 GiB | "
                                                  "2026-12-04 |")
    doc["machine"]["cpu"] = "Intel(R) Xeon(R) Processor"
    p.write_text(json.dumps(doc))
    assert "| 2 cores Intel Xeon, 23 GiB |" in render.render([p])
