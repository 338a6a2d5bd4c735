"""A large window is analysed on two cores (GPU rows and the recurring jobs' medians loaded in
forked children, findings explained by a child that streams them back): the findings must be
exactly those of the one-process analysis, also when that child dies half-way."""

from __future__ import annotations

import calendar
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from piqc_slurm import analysis
from piqc_slurm.config import defaults
from piqc_slurm.query.gpu import load_price_book
from piqc_slurm.query.store import Reader
from piqc_slurm.store.db import open_engine

pytestmark = pytest.mark.unit
BENCH = Path(__file__).resolve().parents[2] / "bench"
T0 = calendar.timegm((2026, 11, 1, 0, 0, 0))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """2,000 jobs of bench_analyze's mix (every code, recurring keys, failed and never-started runs)."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_analyze
    finally:
        sys.path.remove(str(BENCH))
    db = tmp_path_factory.mktemp("parallel") / "s.db"
    bench_analyze.build(f"sqlite:///{db}", bench_analyze.generate(2000, T0, keys=60))
    return db


def _analyze(db: Path) -> list[tuple]:
    url = f"sqlite:///{db}"
    cfg = defaults()
    engine, reader = open_engine(url), Reader(url)
    try:
        res = analysis.analyze(reader, engine, T0, T0 + 30 * 86400, cfg, load_price_book(reader, cfg))
    finally:
        reader.close()
        engine.dispose()
    with sqlite3.connect(db) as c:
        rows = c.execute('SELECT job_ref, code, waste_usd, evidence, advice_gpus, advice_tier, sentence, advice, '
                         'est_elapsed, est_cost_usd, confidence FROM findings ORDER BY job_ref, code').fetchall()
    assert res.findings == len(rows)
    return rows


def _copy(store: Path, tmp_path: Path) -> Path:
    db = tmp_path / "s.db"
    shutil.copy(store, db)
    return db


@pytest.fixture(scope="module")
def serial(store, tmp_path_factory) -> list[tuple]:
    mp = pytest.MonkeyPatch()
    mp.setattr(analysis, "PARALLEL_MIN_JOBS", 10**9)
    try:
        rows = _analyze(_copy(store, tmp_path_factory.mktemp("serial")))
    finally:
        mp.undo()
    codes = {r[1] for r in rows}
    assert {"FAILED_SPEND", "IDLE_GPUS", "UNDER_BATCHED", "WRONG_TIER", "NO_SAMPLES"} <= codes, codes
    return rows


def test_two_cores_find_what_one_does(store, serial, tmp_path, monkeypatch):
    if not analysis._parallel():
        pytest.skip("one CPU or no fork here: the analysis runs in one process")
    monkeypatch.setattr(analysis, "PARALLEL_MIN_JOBS", 0)
    monkeypatch.setattr(analysis, "_CHUNK", 37)  # many chunks: the child's arrive while this process explains
    assert _analyze(_copy(store, tmp_path)) == serial


def test_a_child_that_dies_half_way_loses_nothing(store, serial, tmp_path, monkeypatch):
    if not analysis._parallel():
        pytest.skip("one CPU or no fork here: the analysis runs in one process")
    def dies(starts, n, out):  # delivers its first chunk, then is killed without a word (no end mark)
        st = starts[0]
        out.put((st, analysis._explain_rows(st, min(st + analysis._CHUNK, n))))
        out.close()
        out.join_thread()
        os._exit(9)

    monkeypatch.setattr(analysis, "PARALLEL_MIN_JOBS", 0)
    monkeypatch.setattr(analysis, "_CHUNK", 37)
    monkeypatch.setattr(analysis, "_explain_stream", dies)
    assert _analyze(_copy(store, tmp_path)) == serial
