"""The store on both backends (SQLite and a real PostgreSQL): ingest of the
recorded real sacct output, idempotence, updates of changed records, spool
replay and joining summaries to jobs, an unreachable store.

Every test takes `store_url`, which runs it once per backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm.errors import StoreError
from piqc_slurm.ingest import ingest
from piqc_slurm.store import open_engine
from piqc_slurm.store.models import GpuUsage, Job, NodeSummary

FX = Path(__file__).resolve().parents[1] / "fixtures"
SACCT = FX / "sacct" / "22.05.8"
TABLES = ["jobs", "node_summaries", "gpu_usage", "timeline", "spool_replays"]


@pytest.fixture
def engine(store_url):
    e = open_engine(store_url)
    yield e
    e.dispose()


def dump(engine) -> dict[str, list[tuple]]:
    from piqc_slurm.store.models import Base

    out = {}
    with engine.connect() as c:
        for t in TABLES:
            table = Base.metadata.tables[t]
            cols = [col for col in table.columns if col.name != "at"]
            out[t] = sorted(tuple(str(v) for v in r) for r in c.execute(select(*cols)).all())
    return out


def ingest_all(engine, spool: Path | None = None):
    results = []
    for f in sorted(SACCT.glob("*.ingest.txt")):
        results.append(ingest(engine, cluster="piqc", sacct_file=str(f), strict=True,
                              spool_dirs=[spool] if spool else None))
    return results


def test_recorded_sacct_ingests_with_every_shape(engine):
    ingest_all(engine)
    with Session(engine) as s:
        jobs = {j.job_id: j for j in s.execute(select(Job)).scalars()}
    assert jobs["6"].state == "FAILED" and jobs["6"].exit_code == "3:0"
    assert jobs["8"].start is None and jobs["8"].nodelist in ("", "None assigned")
    assert jobs["13"].alloc_gpus == 8 and jobs["13"].gpu_type == "h100"  # --exclusive: all GPUs
    assert {"10_1", "10_2", "10_3"} <= set(jobs)
    assert jobs["10_1"].job_id_raw == 14 and jobs["10_1"].array_job_id == 10
    assert jobs["12"].name == "a|b<b>x</b>&'q`../z"
    assert jobs["19"].state == "TIMEOUT"


def test_ingest_twice_leaves_the_store_identical(engine, tmp_path):
    spool = tmp_path / "spool" / "vm"
    spool.mkdir(parents=True)
    for f in (FX / "summaries").glob("*"):
        shutil.copy(f, spool / f.name)
    ingest_all(engine, spool.parent)
    first = dump(engine)
    ingest_all(engine, spool.parent)
    assert dump(engine) == first
    assert len(first["node_summaries"]) == len(list((FX / "summaries").glob("*.summary.json")))


def test_running_row_is_updated_when_the_job_ends(engine, tmp_path):
    head = "JobID|JobIDRaw|Cluster|User|Account|Partition|State|ExitCode|Submit|Start|End|Elapsed|AllocTRES|JobName"
    running = tmp_path / "running.txt"
    running.write_text(f"{head}\n77|77|piqc|alice|a|gpu|RUNNING|0:0|1795868000|1795868010|Unknown|00:01:00|"
                       "gres/gpu=2,gres/gpu:h100=2|train\n")
    done = tmp_path / "done.txt"
    done.write_text(f"{head}\n77|77|piqc|alice|a|gpu|COMPLETED|0:0|1795868000|1795868010|1795869010|00:16:40|"
                    "gres/gpu=2,gres/gpu:h100=2|train\n")
    ingest(engine, cluster="piqc", sacct_file=str(running), strict=True)
    ingest(engine, cluster="piqc", sacct_file=str(done), strict=True)
    with Session(engine) as s:
        rows = s.execute(select(Job)).scalars().all()
    assert len(rows) == 1
    assert (rows[0].state, rows[0].end, rows[0].elapsed, rows[0].alloc_gpus) == ("COMPLETED", 1795869010, 1000, 2)


def test_summary_before_its_job_waits_then_joins(engine, tmp_path):
    spool = tmp_path / "spool" / "vm"
    spool.mkdir(parents=True)
    for f in (FX / "summaries").glob("4gpu-2idle.*"):
        shutil.copy(f, spool / f.name)
    r = ingest(engine, cluster="piqc", sacct_file=str(SACCT / "completed.ingest.txt"), spool_dirs=[spool.parent])
    assert r.summaries_taken == 1
    with Session(engine) as s:
        summ = s.execute(select(NodeSummary)).scalar_one()
        assert summ.job_ref is None  # job 134 is not in that sacct file
        assert len(s.execute(select(GpuUsage)).scalars().all()) == 4
    head = "JobID|JobIDRaw|Cluster|User|Account|Partition|State|ExitCode|Submit|Start|End|Elapsed|AllocTRES|JobName"
    later = tmp_path / "later.txt"
    doc_start, doc_end = int(summ.started), int(summ.ended)
    later.write_text(f"{head}\n134|134|piqc|piqcuser|research|gpu|COMPLETED|0:0|{doc_start}|{doc_start}|{doc_end}|"
                     "00:00:40|gres/gpu=4,gres/gpu:h100=4|t-agent\n")
    r = ingest(engine, cluster="piqc", sacct_file=str(later), spool_dirs=[spool.parent])
    assert r.summaries_linked == 1
    with Session(engine) as s:
        assert s.execute(select(NodeSummary.job_ref)).scalar_one() is not None


def test_newer_summary_format_is_left_for_a_newer_ingest(engine, tmp_path):
    spool = tmp_path / "spool" / "vm"
    spool.mkdir(parents=True)
    f = spool / "c.1.0.vm.summary.json"
    f.write_text('{"format": "piqc-summary/2", "cluster": "c", "job_id": 1, "restart_count": 0, "node": "vm"}')
    bad = spool / "c.2.0.vm.summary.json"
    bad.write_text("{not json")
    r = ingest(engine, cluster="piqc", sacct_file=str(SACCT / "completed.ingest.txt"), spool_dirs=[spool.parent])
    # the newer one is left where it is; the malformed one is set aside with its reason
    assert r.summaries_newer and r.summaries_quarantined and f.exists() and not bad.exists()
    assert (spool / "quarantine" / bad.name).exists()


def test_unreachable_store_is_a_one_line_error(store_url):
    if store_url.startswith("sqlite"):
        url = "sqlite:////proc/nonexistent/dir/store.db"
    else:
        url = "postgresql+psycopg://piqc:x@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as exc:
        open_engine(url, connect_timeout=1)
    assert "\n" not in str(exc.value)


def test_ingest_with_the_store_down_keeps_the_spool_and_a_later_run_completes(store_url, tmp_path):
    import subprocess
    import sys

    spool = tmp_path / "spool" / "vm"
    spool.mkdir(parents=True)
    for f in (FX / "summaries").glob("*"):
        shutil.copy(f, spool / f.name)
    before = sorted((p.name, p.read_bytes()) for p in spool.iterdir())
    down = "postgresql+psycopg://piqc:x@127.0.0.1:1/nowhere" if "postgresql" in store_url \
        else "sqlite:////proc/nonexistent/store.db"
    argv = [sys.executable, "-m", "piqc_slurm", "--db", down, "ingest", "--create-store", "--sacct-file",
            str(SACCT / "completed.ingest.txt"), "--spool", str(spool.parent)]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith("piqc-slurm: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert sorted((p.name, p.read_bytes()) for p in spool.iterdir()) == before
    argv[argv.index(down)] = store_url
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "5 summaries taken in" in r.stderr or "summaries taken in" in r.stderr


def test_a_reused_job_id_keeps_both_runs(engine, tmp_path):
    """Slurm can hand out a job id again (a database reset): each run's summary is kept."""
    import json

    spool = tmp_path / "spool" / "vm"
    spool.mkdir(parents=True)
    first = json.loads((FX / "summaries" / "4gpu-2idle.summary.json").read_text())
    second = {**first, "started": first["started"] + 86400 * 30, "ended": first["ended"] + 86400 * 30}
    for doc in (first, second):
        name = f"piqc.{doc['job_id']}.0.vm.{int(doc['started'])}.summary.json"
        (spool / name).write_text(json.dumps(doc))
    r = ingest(engine, cluster="piqc", sacct_file=str(SACCT / "completed.ingest.txt"), spool_dirs=[spool.parent])
    assert r.summaries_taken == 2
    with Session(engine) as s:
        assert len(s.execute(select(NodeSummary)).scalars().all()) == 2
