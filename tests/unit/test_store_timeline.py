"""The packed GPU timeline (piqc_slurm/store/timeline.py): hand-written bins packed and read back
to hand-computed values, the bytes of the format itself, and migration 0008 packing the rows of a
0007 store (one row per GPU per bin) and its downgrade unpacking them."""

from __future__ import annotations

import importlib.util
import zlib

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from piqc_slurm.store import open_engine
from piqc_slurm.store.db import MIGRATIONS, alembic_config, migrate
from piqc_slurm.store.timeline import MAX_SLOTS, pack, unpack

pytestmark = pytest.mark.unit
T = 1795868820  # a multiple of 60, as the sampler's bins start


def readings(row) -> list[tuple]:
    return [(b["t"], b["gpu"], b["util"], b["mem_mib"], b["power_w"]) for b in unpack(row)]


def grid(rows) -> list[tuple]:
    return [(r["minor"], r["t0"], r["step"], r["n"]) for r in rows]


# --- the format -----------------------------------------------------------------

# 3 bins x 2 GPUs: GPU 1 has no bin at T+60 (a gap) and no memory reading at T+120 (a missing value)
BINS = [
    {"t": T, "gpu": 0, "util": 37.4, "mem_mib": 40960, "power_w": 550.7},
    {"t": T, "gpu": 1, "util": 100.0, "mem_mib": 81559, "power_w": 700.49},
    {"t": T + 60, "gpu": 0, "util": 99.5, "mem_mib": 1023, "power_w": 60.2},
    {"t": T + 120, "gpu": 0, "util": 0.0, "mem_mib": 0, "power_w": 59.5},
    {"t": T + 120, "gpu": 1, "util": 12.5, "power_w": 300.0},
]


def test_a_small_timeline_reads_back_rounded_with_its_gap_and_missing_value():
    rows = pack(BINS)
    assert grid(rows) == [(0, T, 60, 3), (1, T, 60, 3)]  # one row per GPU
    assert readings(rows[0]) == [(T, 0, 37, 40960, 551),         # 37.4 %, 40960 MiB = 10240 x 4, 550.7 W
                                 (T + 60, 0, 100, 1024, 60),     # 99.5 half up; 1023 MiB = 255.75 x 4 -> 256 x 4
                                 (T + 120, 0, 0, 0, 60)]         # 59.5 W half up
    assert readings(rows[1]) == [(T, 1, 100, 81560, 700),        # 81559 MiB = 20389.75 x 4 -> 20390 x 4
                                 (T + 60, 1, None, None, None),  # the gap
                                 (T + 120, 1, 13, None, 300)]    # 12.5 half up (not to even); no memory


def test_the_bytes_are_util_memory_power_little_endian_zlib_6():
    gpu1 = pack(BINS)[1]
    # util 100, null, 13; memory 20390 = 0x4fa6, null, null; power 700 = 0x02bc, null, 300 = 0x012c
    raw = bytes.fromhex("64ff0d" "a64f" "ffff" "ffff" "bc02" "ffff" "2c01")
    assert zlib.decompress(gpu1["data"]) == raw
    assert gpu1["data"] == zlib.compress(raw, 6)


def test_readings_are_clamped_and_what_is_no_number_is_null():
    rows = pack([{"t": T, "gpu": 0, "util": 150.0, "mem_mib": 10 ** 6, "power_w": 70000.0},
                 {"t": T + 60, "gpu": 0, "util": -3.0, "mem_mib": -8, "power_w": -1.0},
                 {"t": T + 120, "gpu": 0, "util": float("nan"), "mem_mib": True, "power_w": "550"}])
    assert readings(rows[0]) == [(T, 0, 100, 65534 * 4, 65534), (T + 60, 0, 0, 0, 0),
                                 (T + 120, 0, None, None, None)]


def test_a_repeated_bin_counts_once_the_first_one():
    rows = pack([{"t": T, "gpu": 0, "util": 10.0}, {"t": T, "gpu": 0, "util": 90.0},
                 {"t": T + 60, "gpu": 0, "util": 20.0}])
    assert [b["util"] for b in unpack(rows[0])] == [10, 20]


def test_the_step_is_the_gcd_of_the_summarys_gaps():
    # gaps 60 and 90 on GPU 0: every bin sits on a 30 s grid; GPU 1's one bin takes the summary's step
    rows = pack([{"t": T, "gpu": 0, "util": 1.0}, {"t": T + 60, "gpu": 0, "util": 2.0},
                 {"t": T + 150, "gpu": 0, "util": 3.0}, {"t": T + 60, "gpu": 1, "util": 4.0}])
    assert grid(rows) == [(0, T, 30, 6), (1, T + 60, 30, 1)]
    assert [(b["t"], b["util"]) for b in unpack(rows[0])] == [
        (T, 1), (T + 30, None), (T + 60, 2), (T + 90, None), (T + 120, None), (T + 150, 3)]


def test_bins_off_any_grid_go_to_the_nearest_slot_of_the_commonest_gap():
    # gaps 60, 60, 61, 59: gcd 1, under half the commonest gap (60): 60 s slots, T+181 in slot 3
    rows = pack([{"t": T + dt, "gpu": 0, "util": float(i)} for i, dt in enumerate((0, 60, 120, 181, 240))])
    assert grid(rows) == [(0, T, 60, 5)]
    assert [(b["t"], b["util"]) for b in unpack(rows[0])] == [(T + 60 * i, i) for i in range(5)]
    # T+61 falls in T+60's slot: the first in time is kept
    rows = pack([{"t": T + dt, "gpu": 0, "util": float(i)} for i, dt in enumerate((0, 60, 61, 120, 180))])
    assert [(b["t"], b["util"]) for b in unpack(rows[0])] == [(T, 0), (T + 60, 1), (T + 120, 3), (T + 180, 4)]


def test_a_single_bin_has_step_zero():
    rows = pack([{"t": T, "gpu": 3, "util": 5.0, "mem_mib": 8, "power_w": 70.0}])
    assert grid(rows) == [(3, T, 0, 1)] and readings(rows[0]) == [(T, 3, 5, 8, 70)]
    assert pack([]) == []


def test_a_timeline_past_max_slots_is_refused():
    with pytest.raises(ValueError, match="more than"):
        pack([{"t": T, "gpu": 0}, {"t": T + 60, "gpu": 0}, {"t": T + 60 * MAX_SLOTS, "gpu": 0}])  # 60 s slots


def test_data_that_does_not_hold_n_slots_is_an_error():
    row = dict(pack(BINS)[0], n=4)
    with pytest.raises(ValueError, match="15 bytes for 4 slots"):
        unpack(row)


def test_an_hour_of_60_s_bins_packs_small():
    # a busy GPU as bench/bench_store.py makes them: util 70..94 %, 40 GiB, 550.7 W, for 60 bins
    bins = [{"t": T + 60 * b, "gpu": 0, "util": round(70 + (b * 7) % 25, 1), "mem_mib": 40960, "power_w": 550.7}
            for b in range(60)]
    (row,) = pack(bins)
    assert (row["n"], row["step"]) == (60, 60)
    assert len(zlib.decompress(row["data"])) == 300  # 5 bytes a bin
    assert len(row["data"]) < 100
    assert [b["util"] for b in unpack(row)] == [70 + (b * 7) % 25 for b in range(60)]


# --- migration 0008 ---------------------------------------------------------------

def revision(engine) -> str:
    with engine.connect() as c:
        return c.execute(text("SELECT version_num FROM alembic_version")).scalar()


def downgrade(engine, to: str) -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, to)


OLD_BINS = [  # (summary_id, t, minor, util, mem_mib, power_w), as 0001-0007 kept them
    (1, T, 0, 37.4, 1023.0, 550.7), (1, T + 60, 0, 80.0, 40960.0, None), (1, T + 120, 1, 0.0, 0.0, 60.0),
    (2, T, 0, 50.0, 8.0, 100.0), (2, T + 180, 0, 51.0, 8.0, 101.0),
]


def old_store(tmp_path):
    """A 0007 store with two summaries and their bins in the old layout."""
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    migrate(old, "0007")
    with old.begin() as c:
        for sid in (1, 2):
            c.execute(text("INSERT INTO node_summaries (id, cluster, job_id_raw, restart_count, node, started_at, "
                           "user, monitor, partial, gpu_count, doc) VALUES (:id, 'c', :job, 0, 'vm', :t, 'u', "
                           "'on', 0, 2, '{}')"), {"id": sid, "job": 100 + sid, "t": T})
        c.execute(text("INSERT INTO timeline (summary_id, t, minor, util, mem_mib, power_w) "
                       "VALUES (:s, :t, :m, :u, :mem, :p)"),
                  [dict(zip(("s", "t", "m", "u", "mem", "p"), b, strict=True)) for b in OLD_BINS])
    old.dispose()
    return url


def packed_rows(engine) -> list[dict]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(text(
            "SELECT summary_id, minor, t0, step, n, data FROM timeline ORDER BY summary_id, minor"))]


def test_0008_packs_a_0007_stores_timeline_and_indexes_array_and_het_ids(tmp_path):
    engine = open_engine(old_store(tmp_path))  # migrates to head
    try:
        assert revision(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
        rows = packed_rows(engine)
        # summary 1's times T, T+60, T+120: 60 s; summary 2's only gap is 180 s
        assert [(r["summary_id"], *g) for r, g in zip(rows, grid(rows), strict=True)] == [
            (1, 0, T, 60, 2), (1, 1, T + 120, 60, 1), (2, 0, T, 180, 2)]
        assert [readings(r) for r in rows] == [
            [(T, 0, 37, 1024, 551), (T + 60, 0, 80, 40960, None)],
            [(T + 120, 1, 0, 0, 60)],
            [(T, 0, 50, 8, 100), (T + 180, 0, 51, 8, 101)]]
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("jobs")}
        assert indexes["ix_jobs_array_job_id"] == ["array_job_id"] and indexes["ix_jobs_het_job_id"] == ["het_job_id"]
    finally:
        engine.dispose()


def test_0008_downgrade_unpacks_the_rows_and_upgrade_packs_them_again(tmp_path):
    engine = open_engine(old_store(tmp_path))
    try:
        packed = packed_rows(engine)
        # summary 2 gains a bin at T+540: 180 s slots T, T+180, (T+360: a gap), T+540
        (gpu0,) = pack([{"t": T + dt, "gpu": 0, "util": u, "mem_mib": 8, "power_w": p}
                        for dt, u, p in ((0, 50.0, 100.0), (180, 51.0, 101.0), (540, 52.0, 102.0))])
        assert grid([gpu0]) == [(0, T, 180, 4)]
        with engine.begin() as c:
            c.execute(text("UPDATE timeline SET t0 = :t0, step = :step, n = :n, data = :data "
                           "WHERE summary_id = 2 AND minor = :minor"), gpu0)
        downgrade(engine, "0007")
        assert revision(engine) == "0007"
        assert [c["name"] for c in inspect(engine).get_columns("timeline")] == [
            "summary_id", "t", "minor", "util", "mem_mib", "power_w"]
        assert {i["name"] for i in inspect(engine).get_indexes("jobs")} & {"ix_jobs_array_job_id",
                                                                          "ix_jobs_het_job_id"} == set()
        with engine.connect() as c:
            got = c.execute(text("SELECT summary_id, t, minor, util, mem_mib, power_w FROM timeline "
                                 "ORDER BY summary_id, minor, t")).all()
        # the packed values (whole numbers, 4 MiB units), not the 0007 originals; no row for the gap
        assert [tuple(r) for r in got] == [
            (1, T, 0, 37.0, 1024.0, 551.0), (1, T + 60, 0, 80.0, 40960.0, None), (1, T + 120, 1, 0.0, 0.0, 60.0),
            (2, T, 0, 50.0, 8.0, 100.0), (2, T + 180, 0, 51.0, 8.0, 101.0), (2, T + 540, 0, 52.0, 8.0, 102.0)]
        with engine.begin() as c:
            c.execute(text("DELETE FROM timeline WHERE summary_id = 2 AND t = :t"), {"t": T + 540})
        migrate(engine)
        assert packed_rows(engine) == packed  # 37 % and 1024 MiB pack as 37.4 % and 1023 MiB did
    finally:
        engine.dispose()


def load_0008():
    path = next((MIGRATIONS / "versions").glob("0008_*.py"))
    spec = importlib.util.spec_from_file_location("piqc_migration_0008", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_0008_converts_in_batches_of_whole_summaries(tmp_path):
    """Batches of at most 3 bins (at least one summary each), 2 summaries looked ahead: every
    summary packed once, as in one batch."""
    m = load_0008()
    engine = create_engine(f"sqlite:///{tmp_path}/b.db")
    sizes = {1: 1, 2: 4, 3: 2, 5: 1, 9: 3, 10: 2}  # summary_id -> its bins, on GPU 0
    with engine.begin() as c:
        c.execute(text("CREATE TABLE timeline (summary_id INTEGER, t BIGINT, minor INTEGER, util FLOAT, "
                       "mem_mib FLOAT, power_w FLOAT)"))
        c.execute(text("CREATE TABLE timeline_packed (summary_id INTEGER, minor INTEGER, t0 BIGINT, "
                       "step INTEGER, n INTEGER, data BLOB)"))
        c.execute(text("INSERT INTO timeline VALUES (:s, :t, 0, :u, NULL, NULL)"),
                  [{"s": s, "t": T + 60 * k, "u": float(s * 5 + k)} for s, n in sizes.items() for k in range(n)])
        ranges = list(m._ranges(c, m._bins("timeline").c.summary_id, m.sa.func.count()))
        assert ranges == [(None, 10)]  # 13 bins: one batch
        m.BATCH_ROWS, m.BATCH_SUMMARIES = 3, 2
        ranges = list(m._ranges(c, m._bins("timeline").c.summary_id, m.sa.func.count()))
        # 1 (1 bin; +4 > 3) | 2 (4 bins, over 3 but whole) | 3, 5 (2 + 1 = 3) | 9 (3; +2 > 3) | 10
        assert ranges == [(None, 1), (1, 2), (2, 5), (5, 9), (9, 10)]
        m._pack_rows(c, m._bins("timeline"), m._packed("timeline_packed"))
        rows = [dict(r._mapping) for r in c.execute(text(
            "SELECT summary_id, minor, t0, step, n, data FROM timeline_packed ORDER BY summary_id"))]
    engine.dispose()
    assert [r["summary_id"] for r in rows] == list(sizes)
    assert {r["summary_id"]: [b["util"] for b in unpack(r)] for r in rows} == {
        s: [s * 5 + k for k in range(n)] for s, n in sizes.items()}
