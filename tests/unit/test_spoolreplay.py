"""Replaying a spool never blocks on one bad summary: each malformed file is
moved to quarantine/ with its reason, the good ones are all taken in, and a
second run takes nothing new and raises nothing. A failure of the store
itself moves nothing. Real recorded summaries (tests/fixtures/summaries/)
mutated into bad ones, a real SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from piqc_slurm.spoolreplay import replay
from piqc_slurm.store.db import open_engine
from piqc_slurm.store.models import GpuTimeline, NodeSummary, SpoolReplay
from piqc_slurm.store.timeline import unpack

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
GOOD = sorted(p.name.removesuffix(".summary.json") for p in FX.glob("*.summary.json"))


def doc(name: str = "4gpu-2idle", **changes) -> dict:
    d = json.loads((FX / f"{name}.summary.json").read_text())
    d.update(changes)
    return d


def out_name(d: dict) -> str:
    """The Epilog's outbox name: cluster.jobid.restart.node.start."""
    return f"{d['cluster']}.{d['job_id']}.{d['restart_count']}.{d['node']}.{int(d['started'])}"


def store(tmp_path: Path, name: str = "store"):
    return open_engine(f"sqlite:///{tmp_path}/{name}.db", mode="create")


def runs(engine) -> set[tuple[str, int]]:
    with Session(engine) as s:
        return set(s.execute(select(NodeSummary.cluster, NodeSummary.job_id_raw)).all())


@pytest.fixture
def spool(tmp_path) -> Path:
    """A shared spool with node vm holding every recorded summary (and the one timeline)."""
    node = tmp_path / "shared" / "vm"
    node.mkdir(parents=True)
    for name in GOOD:
        d = doc(name)
        (node / f"{out_name(d)}.summary.json").write_bytes((FX / f"{name}.summary.json").read_bytes())
        if (FX / f"{name}.timeline.jsonl").exists():
            shutil.copy(FX / f"{name}.timeline.jsonl", node / f"{out_name(d)}.timeline.jsonl")
    return node


def put(node: Path, stem: str, data: bytes | dict, timeline: bytes | None = None) -> Path:
    path = node / f"{stem}.summary.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    if timeline is not None:
        (node / f"{stem}.timeline.jsonl").write_bytes(timeline)
    return path


def bad_summaries(node: Path) -> dict[str, str]:
    """Malformed files, each a new job id so that none could replace a good run; stem -> a piece of
    the reason expected (from the mutation, not from the code)."""
    text = (FX / "4gpu-2idle.summary.json").read_bytes()
    no_minor = doc(job_id=901)
    del no_minor["devices"][1]["minor"]
    cases = {
        "c.900.0.vm.1": (doc(job_id=900, devices="GPU0,GPU1"), "devices: expected a list"),
        "c.901.0.vm.1": (no_minor, "devices[1].minor"),
        "c.902.0.vm.1": (doc(job_id=902, started="2026-11-27T10:00"), "started: expected a finite number"),
        "c.903.0.vm.1": (text[: len(text) // 2], "not JSON"),
        "c.904.0.vm.1": (text.replace(b'"piqcuser"', b'"piqc\xff\xfeuser"'), "not UTF-8"),
        "c.905.0.vm.1": (doc(job_id=905, job_id_is="x", restart_count=-1), "restart_count"),
        "c.906.0.vm.1": (doc(job_id=2 ** 64), "job_id"),
        "c.907.0.vm.1": (doc(job_id=907, nvml="ok"), "nvml"),
        "c.908.0.vm.1": (b"[1, 2, 3]", "not a JSON object"),
    }
    for stem, (data, _) in cases.items():
        put(node, stem, data)
    # a timeline whose bin has a string for its time, with a summary that is fine
    tl = b'{"t":1795868820,"gpu":0,"util":76.7}\n{"t":"later","gpu":1,"util":1.0}\n'
    put(node, "c.909.0.vm.1", doc(job_id=909, timeline_bins=2), tl)
    reasons = {stem: why for stem, (_, why) in cases.items()}
    reasons["c.909.0.vm.1"] = "line 2: expected a bin with integer t"
    return reasons


def test_bad_files_go_to_quarantine_good_ones_are_taken_in_and_a_rerun_is_quiet(tmp_path, spool):
    engine = store(tmp_path)
    reasons = bad_summaries(spool)
    newer = put(spool, "c.910.0.vm.1", {"format": "piqc-summary/2", "cluster": "c", "job_id": 910,
                                        "restart_count": 0, "node": "vm"})

    res = replay(engine, [spool.parent])

    assert res.taken == len(GOOD) and res.bad == []
    assert runs(engine) == {("piqc", doc(n)["job_id"]) for n in GOOD}
    assert len(res.quarantined) == len(reasons)
    q = spool / "quarantine"
    assert (os.lstat(q).st_mode & 0o777) == 0o700
    for stem, why in reasons.items():
        assert not (spool / f"{stem}.summary.json").exists()
        assert (q / f"{stem}.summary.json").is_file()
        reason = (q / f"{stem}.summary.json.reason").read_text()
        assert reason.count("\n") == 1 and why in reason, (stem, reason)
        assert any(item.startswith(str(spool / f"{stem}.summary.json")) and why in item for item in res.quarantined)
    assert (q / "c.909.0.vm.1.timeline.jsonl").is_file()  # the timeline goes with its summary
    assert newer.exists() and res.newer == [f"{newer}: piqc-summary/2"]  # left for a newer piqc-slurm
    with Session(engine) as s:
        rows = s.execute(select(GpuTimeline)).scalars().all()
        assert sum(len(unpack(r)) for r in rows) == 8  # the fixture's 8 bins, 2 on each of its 4 GPUs
        assert sorted(r.minor for r in rows) == [0, 1, 2, 3]

    again = replay(engine, [spool.parent])
    assert (again.taken, again.unchanged, again.quarantined, again.bad) == (0, len(GOOD), [], [])
    assert again.newer == res.newer and newer.exists()
    engine.dispose()


def test_a_value_the_store_refuses_is_rolled_back_and_quarantined(tmp_path, spool):
    """A real constraint of the store (a SQLite trigger) refusing one run: that file's transaction is
    rolled back and the file set aside; the others still go in."""
    engine = store(tmp_path)
    con = sqlite3.connect(tmp_path / "store.db")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON gpu_usage WHEN NEW.uuid = 'GPU-refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a site constraint'); END")
    con.commit()
    con.close()
    d = doc(job_id=950)
    d["devices"][2]["uuid"] = "GPU-refused"
    put(spool, out_name(d), d)

    res = replay(engine, [spool.parent])

    assert res.taken == len(GOOD)
    assert [i.split(": ", 1)[1] for i in res.quarantined] == ["the store refused it: refused by a site constraint"]
    assert ("piqc", 950) not in runs(engine)  # no half-written run: its summary row was rolled back too
    assert (spool / "quarantine" / f"{out_name(d)}.summary.json").is_file()
    engine.dispose()


def test_a_failing_store_moves_nothing(tmp_path, spool):
    """The store locked by another writer (OperationalError on the first write): not the files'
    fault. The replay stops with the store's error, every file stays where it was, and the next run
    takes them in."""
    engine = open_engine(f"sqlite:///{tmp_path}/store.db", connect_timeout=0.2, mode="create")
    before = sorted(p.name for p in spool.iterdir())
    holder = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer holds the lock: every write of ours times out
    try:
        with pytest.raises(SQLAlchemyError, match="locked"):
            replay(engine, [spool.parent])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in spool.iterdir()) == before and not (spool / "quarantine").exists()
    res = replay(engine, [spool.parent])  # the store is back: the next run completes
    assert res.taken == len(GOOD) and res.quarantined == []
    engine.dispose()


def test_an_unusable_store_moves_not_even_the_bad_files(tmp_path, spool):
    """A store that fails on its first read (its file overwritten by something that is not a
    database): the replay stops before any file is looked at."""
    bad_summaries(spool)
    engine = store(tmp_path)
    engine.dispose()
    (tmp_path / "store.db").write_bytes(b"not a database at all" * 100)
    for side in ("-wal", "-shm"):
        (tmp_path / f"store.db{side}").unlink(missing_ok=True)
    before = sorted(p.name for p in spool.iterdir())
    with pytest.raises(SQLAlchemyError, match="not a database"):
        replay(engine, [spool.parent])
    assert sorted(p.name for p in spool.iterdir()) == before and not (spool / "quarantine").exists()


def test_the_ingest_command_reports_each_quarantined_file(tmp_path, spool):
    import subprocess
    import sys

    put(spool, "c.900.0.vm.1", doc(job_id=900, devices="GPU0"))
    url = f"sqlite:///{tmp_path}/store.db"
    store(tmp_path).dispose()
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", url, "ingest", "--sacct-file",
                        str(FX.parent / "sacct" / "22.05.8" / "completed.ingest.txt"), "--spool", str(spool.parent)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if "quarantine" in ln and "c.900.0.vm.1" in ln]
    assert line == [f"piqc-slurm ingest: bad summary moved to quarantine/: {spool}/c.900.0.vm.1.summary.json: "
                    'devices: expected a list, got "GPU0"']


def test_quarantine_never_goes_through_a_symlink(tmp_path, spool):
    """A quarantine/ that is a symlink is refused: the bad file stays, reported; nothing lands where
    the link points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (spool / "quarantine").symlink_to(elsewhere)
    path = put(spool, "c.900.0.vm.1", doc(job_id=900, devices="x"))
    engine = store(tmp_path)
    res = replay(engine, [spool.parent])
    assert res.taken == len(GOOD) and res.quarantined == []
    assert len(res.bad) == 1 and res.bad[0].startswith(f"{path}: devices: expected a list")
    assert "could not move it to quarantine/" in res.bad[0]
    assert path.exists() and list(elsewhere.iterdir()) == []
    engine.dispose()


def test_symlinked_summaries_are_not_read(tmp_path, spool):
    secret = tmp_path / "secret.summary.json"
    secret.write_text(json.dumps(doc(job_id=960)))
    (spool / "c.960.0.vm.1.summary.json").symlink_to(secret)
    engine = store(tmp_path)
    res = replay(engine, [spool.parent])
    assert res.taken == len(GOOD) and ("piqc", 960) not in runs(engine) and res.quarantined == []
    engine.dispose()


def test_torn_timeline_lines_are_skipped_and_the_summary_kept(tmp_path, spool):
    """A line a crash or a full disk tore (not JSON, or bytes that are not UTF-8) in the middle of a
    timeline: the summary and the other bins go in."""
    lines = (FX / "4gpu-2idle.timeline.jsonl").read_bytes().splitlines(keepends=True)
    torn = b"".join(lines[:3]) + b'{"t":17958688\n' + b"\xff\xfe\x00garbage\n" + b"".join(lines[3:])
    d = doc(job_id=970)
    put(spool, out_name(d), d, torn)
    engine = store(tmp_path)
    res = replay(engine, [spool.parent])
    assert res.taken == len(GOOD) + 1 and res.quarantined == []
    with Session(engine) as s:
        sid = s.execute(select(NodeSummary.id).where(NodeSummary.job_id_raw == 970)).scalar_one()
        rows = s.execute(select(GpuTimeline).where(GpuTimeline.summary_id == sid)).scalars().all()
        got = sorted((b["t"], b["gpu"]) for r in rows for b in unpack(r))
    assert len(lines) == 8 and got == [(t, g) for t in (1795868820, 1795868880) for g in range(4)]
    engine.dispose()


def test_a_file_fixed_and_moved_back_is_taken_in(tmp_path, spool):
    path = put(spool, "c.900.0.vm.1", doc(job_id=900, devices="x"))
    engine = store(tmp_path)
    replay(engine, [spool.parent])
    q = spool / "quarantine" / path.name
    assert q.exists()
    path.write_text(json.dumps(doc(job_id=900)))  # the admin's fix
    q.unlink()
    res = replay(engine, [spool.parent])
    assert res.taken == 1 and ("piqc", 900) in runs(engine)
    with Session(engine) as s:
        assert s.get(SpoolReplay, f"vm/{path.name}") is not None
    engine.dispose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_an_unreadable_file_is_quarantined(tmp_path, spool):
    path = put(spool, "c.900.0.vm.1", doc(job_id=900))
    path.chmod(0)
    engine = store(tmp_path)
    res = replay(engine, [spool.parent])
    assert res.taken == len(GOOD)
    assert [i.split(": ", 1)[1] for i in res.quarantined] == ["unreadable: Permission denied"]
    engine.dispose()
