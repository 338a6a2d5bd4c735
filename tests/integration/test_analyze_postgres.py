"""analyze on PostgreSQL reads a window through COPY ... TO STDOUT (query.store.Reader.copy_csv,
parsed by pandas): the frames must hold exactly what the row-by-row path reads, and the findings
must be those SQLite's analysis stores for the same scenario."""

from __future__ import annotations

import calendar
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pg import fresh_database
from sqlalchemy import create_engine, text

from piqc_slurm import analysis as A
from piqc_slurm.query.store import Reader

pytestmark = pytest.mark.slurm
SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "batch-of-one" / "scenario.json"
S = calendar.timegm((2026, 11, 1, 0, 0, 0))
E = calendar.timegm((2026, 12, 1, 0, 0, 0))
FINDINGS = ('SELECT j.job_id_raw, f.code, f.waste_usd, f.sentence, f.advice, f.advice_gpus, f.advice_tier '
            'FROM findings f JOIN jobs j ON j.id = f.job_ref ORDER BY j.job_id_raw, f.code')


class RowsOnly:
    """A reader that yields the given rows: _frame's record-array path."""

    def __init__(self, rows: list[tuple]):
        self.rows = rows

    def batches(self, _sql, _params, _n):
        return iter([self.rows])


def cli(url: str, tmp: Path, *argv: str) -> None:
    (tmp / "piqc.toml").write_text("")
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(tmp / "piqc.toml"), "--db", url, *argv],
                       capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_copy_frames_equal_the_row_path_and_the_findings_equal_sqlites(tmp_path):
    with fresh_database() as url:
        cli(url, tmp_path, "simulate", "-q", "--scenario", str(SCENARIO))
        reader = Reader(url)
        try:
            assert reader.copy_csv(A._JOBS_SQL, {"since": S, "until": E})  # the COPY path is the one taken
            for sql, cols in ((A._JOBS_SQL, A._JOB_COLS), (A._GPU_SQL, A._GPU_COLS)):
                window = {"since": S, "until": E}
                by_copy = A._frame(reader, sql, cols, window)
                rows = reader.all(sql, window)

                by_rows = A._frame(RowsOnly(rows), sql, cols, window)
                assert len(by_copy) == len(rows) > 0
                pd.testing.assert_frame_equal(by_copy.sort_values(list(cols)).reset_index(drop=True),
                                              by_rows.sort_values(list(cols)).reset_index(drop=True))
        finally:
            reader.close()
        cli(url, tmp_path, "analyze", "-q", "-S", "2026-11-01", "-E", "2026-12-01")
        engine = create_engine(url)
        try:
            with engine.connect() as c:
                on_pg = [tuple(r) for r in c.execute(text(FINDINGS))]
        finally:
            engine.dispose()
    db = tmp_path / "s.db"
    cli(f"sqlite:///{db}", tmp_path, "simulate", "-q", "--scenario", str(SCENARIO))
    cli(f"sqlite:///{db}", tmp_path, "analyze", "-q", "-S", "2026-11-01", "-E", "2026-12-01")
    with sqlite3.connect(db) as c:
        on_sqlite = c.execute(FINDINGS).fetchall()
    assert on_pg == on_sqlite and len(on_pg) >= 5
