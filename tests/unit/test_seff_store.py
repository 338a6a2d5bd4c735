"""`piqc-slurm seff`'s store reads (report/seff.py load_job, stored_findings) are text SQL through
query.store.Reader, as `piqc-slurm sacct` reads, not SQLAlchemy's ORM: on SQLite and PostgreSQL
their rows equal what the models read (JSON decoded, booleans as bool), which job a job id names
follows load_job's rule (checked on hand-made jobs), and the command imports neither SQLAlchemy
nor the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import JSON, Boolean, select
from sqlalchemy.orm import Session

from piqc_slurm.query.jobids import parse_jobs
from piqc_slurm.query.store import Reader
from piqc_slurm.report import seff as S
from piqc_slurm.store import open_engine, upsert_summary
from piqc_slurm.store.jobs import upsert_jobs
from piqc_slurm.store.models import AnalysisRun, Finding, GpuUsage, Job, NodeSummary

pytestmark = pytest.mark.unit

SUMMARIES = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
NAMES = ("4gpu-2idle", "gpu-lost", "monitor-off", "no-driver", "sampler-killed")
WINDOW = (1795000000, 1796000000)     # the analysed window: the summaries' jobs end in it


def job(cluster: str, raw: int, submit: int, job_id: str, **kw) -> dict:
    row = dict(cluster=cluster, job_id_raw=raw, submit=submit, job_id=job_id, name="t", user="piqcuser",
               state="COMPLETED", exit_code="0:0", start=submit + 1, end=submit + 11, elapsed=10, alloc_cpus=1)
    return {**row, **kw}


def hand_made_jobs() -> list[dict]:
    """Each selection rule's case (the `raw` column tells them apart in the tests below)."""
    return [
        job("piqc", 100, 1000, "100"), job("piqc", 100, 2000, "100"),     # job 100, and it again later
        job("other", 100, 3000, "100"),                                    # job 100 of another cluster, later
        # array 200: its raw id 200 is task 2 (as Slurm numbers them); tasks 0 and 1 are 201, 202
        job("piqc", 200, 5000, "200_2", array_job_id=200, array_task_id=2),
        job("piqc", 201, 5000, "200_0", array_job_id=200, array_task_id=0),
        job("piqc", 202, 5000, "200_1", array_job_id=200, array_task_id=1),
        # array 300 without a task of raw id 300: tasks 1 (305) and 0 (304)
        job("piqc", 305, 6000, "300_1", array_job_id=300, array_task_id=1),
        job("piqc", 304, 6000, "300_0", array_job_id=300, array_task_id=0),
        # het job 400 (leader 400 is component 0) and het job 600 without a job of raw id 600
        job("piqc", 400, 7000, "400+0", het_job_id=400, het_job_offset=0),
        job("piqc", 401, 7000, "400+1", het_job_id=400, het_job_offset=1),
        job("piqc", 601, 8000, "600+1", het_job_id=600, het_job_offset=1),
        job("piqc", 602, 8000, "600+0", het_job_id=600, het_job_offset=0),
    ]


def summary_jobs(docs: list[dict]) -> list[dict]:
    return [job(d["cluster"], d["job_id"], int(d["started"]) - 5, str(d["job_id"]), start=int(d["started"]),
                end=int(d["ended"]), elapsed=int(d["ended"] - d["started"]), alloc_gpus=len(d.get("gpus") or [1]),
                gpu_type="h100", timelimit=600, partition="gpu", alloc_tres="cpu=1,gres/gpu=4",
                extra={"Group": "piqcgroup", "Timelimit": "00:10:00"},
                steps=[{"step": "batch", "submit": int(d["started"]), "v": {"TotalCPU": "00:01.500"}}])
            for d in docs]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(request, tmp_path_factory):
    """A store holding the hand-made jobs, the summaries' jobs (134 has two nodes: b-node, then
    a-node, delivered in that order; b-node's GPU 0 has a histogram, its GPU 3 was lost), an
    analysis run over WINDOW and findings of job 134."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('seffstore')}/piqc.db"
        yield seed(url)
        return
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL store tests need root (postgres.sh starts the server)")
    from pg import fresh_database

    with fresh_database("piqc_seffstore") as url:
        yield seed(url)


def seed(url: str) -> str:
    docs = [json.loads((SUMMARIES / f"{n}.summary.json").read_text()) for n in NAMES]
    b = {**docs[0], "node": "b-node", "devices": [dict(d) for d in docs[0]["devices"]]}
    b["devices"][0]["util_hist_ms"] = [7] * 101          # the fixture has no histogram
    b["devices"][3]["lost"] = True
    two = [b, {**docs[0], "node": "a-node"}]
    engine = open_engine(url, mode="create")
    try:
        with engine.begin() as conn:
            upsert_jobs(conn, hand_made_jobs() + summary_jobs(docs))
        with Session(engine) as session, session.begin():
            for d in two + docs[1:]:
                upsert_summary(session, d, [])
            ref = session.execute(select(Job.id).where(Job.job_id_raw == 134)).scalar_one()
            session.add(AnalysisRun(since=WINDOW[0], until=WINDOW[1], at=WINDOW[1], jobs=6, findings=2,
                                    thresholds={}))
            for code, waste in (("NO_SAMPLES", 0.0), ("IDLE_GPUS", 0.09)):   # not in CODES' order
                session.add(Finding(job_ref=ref, code=code, waste_usd=waste, evidence={}, analyzed_at=WINDOW[1],
                                    sentence=f"{code} sentence", advice=f"{code} advice"))
    finally:
        engine.dispose()
    return url


def read(url: str, fn, *args):
    reader = Reader(url)
    try:
        return fn(reader, *args)
    finally:
        reader.close()


def view_of(url: str, jobid: str, cluster: str | None = None) -> S.JobView | None:
    return read(url, S.load_job, parse_jobs([jobid])[0], cluster)


# --- the rows, as the models read them ------------------------------------------------------------
def test_the_columns_read_are_the_models():
    def names(model, skip=()):
        return tuple(c.name for c in model.__table__.columns if c.name not in skip)

    assert S.JOB_COLUMNS == names(Job)
    assert S.SUMMARY_COLUMNS == names(NodeSummary, skip=("doc",))   # the delivered document: not shown
    assert S.GPU_COLUMNS == names(GpuUsage)
    for model, read_cols in ((Job, S.JOB_COLUMNS), (NodeSummary, S.SUMMARY_COLUMNS), (GpuUsage, S.GPU_COLUMNS)):
        cols = [c for c in model.__table__.columns if c.name in read_cols]
        assert {c.name for c in cols if isinstance(c.type, JSON)} == S.JSON_COLUMNS & set(read_cols), model
        assert {c.name for c in cols if isinstance(c.type, Boolean)} == S.BOOL_COLUMNS & set(read_cols), model


def orm_view(url: str, job_row_id: int) -> tuple[dict, list[dict], list[dict]]:
    """What the models read of one job: its row, its summaries by node, each one's GPUs by minor."""
    def cols(row, skip=()):
        return {c.name: getattr(row, c.name) for c in row.__table__.columns if c.name not in skip}

    engine = open_engine(url, mode="read")
    try:
        with Session(engine) as s:
            j = cols(s.get(Job, job_row_id))
            sums = s.execute(select(NodeSummary).where(NodeSummary.job_ref == job_row_id)
                             .order_by(NodeSummary.node)).scalars().all()
            gpus = [{**cols(g), "node": n.node} for n in sums
                    for g in s.execute(select(GpuUsage).where(GpuUsage.summary_id == n.id)
                                       .order_by(GpuUsage.minor)).scalars()]
            return j, [cols(n, skip=("doc",)) for n in sums], gpus
    finally:
        engine.dispose()


def typed(d: dict) -> dict:
    return {k: (type(v).__name__, v) for k, v in d.items()}


@pytest.mark.parametrize("jobid", ["134", "136", "137", "138", "140", "200_1", "400+1"])
def test_the_rows_are_the_models_values_and_types(store_url, jobid):
    view = view_of(store_url, jobid)
    j, sums, gpus = orm_view(store_url, view.job["id"])
    assert typed(view.job) == typed(j)
    assert [typed(s) for s in view.summaries] == [typed(s) for s in sums]
    assert [typed(g) for g in view.gpus] == [typed(g) for g in gpus]


def test_json_and_booleans_are_decoded(store_url):
    view = view_of(store_url, "134")
    assert view.job["extra"] == {"Group": "piqcgroup", "Timelimit": "00:10:00"}
    assert view.job["steps"] == [{"step": "batch", "submit": 1795868856, "v": {"TotalCPU": "00:01.500"}}]
    # two nodes, by name; each one's 4 GPUs (4gpu-2idle.summary.json: GPUs 2 and 3 idle) by minor
    assert [s["node"] for s in view.summaries] == ["a-node", "b-node"]
    assert [(g["node"], g["minor"], g["did_work"], g["lost"], g["util_hist"]) for g in view.gpus] == [
        (n, m, m < 2, (n, m) == ("b-node", 3), [7] * 101 if (n, m) == ("b-node", 0) else None)
        for n in ("a-node", "b-node") for m in range(4)]
    assert [(s["partial"], s["nvml_ok"]) for s in view.summaries] == [(False, True)] * 2
    assert [(s["partial"], s["nvml_ok"], s["nvml_error"]) for s in view_of(store_url, "137").summaries] == [
        (False, False, "NVIDIA driver not loaded: Driver Not Loaded")]
    assert view_of(store_url, "136").summaries[0]["partial"] is True                  # sampler-killed
    assert [g["did_work"] for g in view_of(store_url, "136").gpus] == [False]


# --- which job a job id names -----------------------------------------------------------------
@pytest.mark.parametrize("jobid, cluster, raw, submit", [
    ("100", None, 100, 3000),       # the newest allocation of that raw id, of any cluster
    ("100", "piqc", 100, 2000),     # of that cluster
    ("100", "other", 100, 3000),
    ("200", None, 200, 5000),       # the task that holds the raw id (as seff)
    ("201", None, 201, 5000),
    ("200_1", None, 202, 5000),     # a task
    ("300", None, 304, 6000),       # no job of raw id 300: the array's first task
    ("300_1", None, 305, 6000),
    ("400", None, 400, 7000),
    ("400+1", None, 401, 7000),     # a het component
    ("600", None, 602, 8000),       # no job of raw id 600: the het job's component 0
    ("600+1", None, 601, 8000),
    ("100.batch", None, 100, 3000),
])
def test_a_job_id_names_the_newest_allocation_by_seff_s_rule(store_url, jobid, cluster, raw, submit):
    view = view_of(store_url, jobid, cluster)
    assert (view.job["job_id_raw"], view.job["submit"]) == (raw, submit)
    assert view.steps == (("batch",) if jobid.endswith(".batch") else None)


@pytest.mark.parametrize("jobid, cluster", [("999", None), ("200_9", None), ("400+2", None), ("200", "other"),
                                            ("100", "nope")])
def test_a_job_id_the_store_lacks_names_nothing(store_url, jobid, cluster):
    assert view_of(store_url, jobid, cluster) is None


# --- the stored findings --------------------------------------------------------------------------
def test_stored_findings_in_the_order_waste_is_attributed(store_url):
    got = read(store_url, S.stored_findings, view_of(store_url, "134").job)
    assert got == [{"code": "IDLE_GPUS", "sentence": "IDLE_GPUS sentence", "advice": "IDLE_GPUS advice",
                    "waste_usd": 0.09},
                   {"code": "NO_SAMPLES", "sentence": "NO_SAMPLES sentence", "advice": "NO_SAMPLES advice",
                    "waste_usd": 0.0}]
    assert read(store_url, S.stored_findings, view_of(store_url, "138").job) == []   # analysed, clean
    assert read(store_url, S.stored_findings, view_of(store_url, "100").job) is None  # ended before WINDOW
    assert read(store_url, S.stored_findings, {"id": 1, "end": None}) is None       # not ended


# --- the command imports neither SQLAlchemy nor the models ----------------------------------------
def test_seff_imports_neither_sqlalchemy_nor_the_models(store_url, tmp_path):
    (tmp_path / "piqc.toml").write_text('cluster = "piqc"\n[prices]\nh100 = 4.0\n')
    code = ("import sys, json\nfrom piqc_slurm import cli\n"
            "for args in (['136'], ['--json', '134'], ['99']):\n"
            "    try:\n"
            f"        cli.main(['--config', {str(tmp_path / 'piqc.toml')!r}, '--db', {store_url!r}, 'seff', *args])\n"
            "    except SystemExit as e:\n"
            "        print('rc', e.code)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'pandas', 'numpy')"
            " or m.startswith('piqc_slurm.store.') and m != 'piqc_slurm.store.overrides')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # 136: the findings from the store's analysis (none: clean); 134 --json: its stored findings; 99: rc 2
    assert lines[0] == "Job ID: 136" and json.loads(next(x for x in lines if x.startswith("{")))["findings"] == [
        {"code": "IDLE_GPUS", "sentence": "IDLE_GPUS sentence", "advice": "IDLE_GPUS advice", "waste_usd": 0.09},
        {"code": "NO_SAMPLES", "sentence": "NO_SAMPLES sentence", "advice": "NO_SAMPLES advice", "waste_usd": 0.0}]
    assert [x for x in lines if x.startswith("rc ")] == ["rc 0", "rc 0", "rc 2"], r.stdout + r.stderr
    assert json.loads(lines[-1]) == []
