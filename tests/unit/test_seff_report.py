"""`piqc-slurm seff`: its report against REAL seff output, its GPU half, a running job with the
sampler's live checkpoint, --json, and its errors.

Inputs are recorded: tests/fixtures/steps/22.05.8 and tests/fixtures/seff/22.05.8 (real sacct
and real seff of the same jobs, the running job's real checkpoint.json copied from the node's
spool), tests/fixtures/summaries/4gpu-2idle.summary.json (a real Epilog summary). Expected
values come from the real seff text or are worked out by hand in the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from test_query_sacct_fixtures import read_case

from piqc_slurm import config as piqc_config
from piqc_slurm.commands.seff import read_live
from piqc_slurm.errors import UsageError
from piqc_slurm.ingest import ingest
from piqc_slurm.query.access import Caller, parse_slurm_conf
from piqc_slurm.report.seff import JSON_FORMAT, run
from piqc_slurm.store import open_engine, upsert_summary
from piqc_slurm.store.jobs import upsert_jobs

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
RECORDED = [FIXTURES / "steps" / "22.05.8", FIXTURES / "seff" / "22.05.8"]
CASES = sorted(p for d in RECORDED for p in d.glob("seff_*.txt"))
SEFF_JOBS = json.loads((FIXTURES / "seff" / "22.05.8" / "jobs.json").read_text())
CHECKPOINT = FIXTURES / "seff" / "22.05.8" / "running.checkpoint.json"
ROOT = Caller(0, "root")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("seffreport")
    (d / "piqc.toml").write_text('cluster = "piqc"\n[prices]\nh100 = 4.0\n')  # our price, never /etc/piqc's
    cfg = piqc_config.load(str(d / "piqc.toml"), None, env={})
    url = f"sqlite:///{d}/piqc.db"
    engine = open_engine(url, mode="create")
    for rec in RECORDED:
        res = ingest(engine, cluster="piqc", sacct_file=str(rec / "store.sacct.txt"), file_tz="UTC")
        assert res.errors == []
    summary = json.loads((FIXTURES / "summaries" / "4gpu-2idle.summary.json").read_text())
    with engine.begin() as conn:
        upsert_jobs(conn, [dict(cluster="piqc", job_id_raw=summary["job_id"], submit=int(summary["started"]) - 5,
                                job_id=str(summary["job_id"]), name="t", user="piqcuser", state="COMPLETED",
                                exit_code="0:0", start=int(summary["started"]), end=int(summary["ended"]),
                                elapsed=int(summary["ended"] - summary["started"]), alloc_gpus=4, alloc_cpus=1,
                                gpu_type="h100", timelimit=600)])
    with Session(engine) as session, session.begin():
        upsert_summary(session, summary, [])
    yield {"engine": engine, "url": url, "cfg": cfg, "dir": d, "summary": summary}
    engine.dispose()


def report(store, jobid: str, now: int, **kw) -> str:
    return run(store["url"], store["cfg"], jobid, cluster=None, caller=kw.pop("caller", ROOT), now=now, **kw)


def spool_with_checkpoint(root: Path, job: int) -> Path:
    run_dir = root / "run" / f"piqc.{job}.0.vm"
    run_dir.mkdir(parents=True)
    for d in (root, root / "run", run_dir):
        os.chmod(d, 0o700)
    shutil.copyfile(CHECKPOINT, run_dir / "checkpoint.json")
    return run_dir


# --- seff's own lines, byte for byte -------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_the_seff_lines_are_real_seff_s(case, store):
    meta, out = read_case(case)
    want = out.decode().splitlines()
    got = report(store, meta["argv"][-1], meta["now"]).splitlines()
    assert got[:len(want)] == want, "\n".join(got)


def test_a_cpu_job_gets_the_whole_cpu_half(store):
    meta, _ = read_case(FIXTURES / "steps" / "22.05.8" / "seff_cpu.txt")
    text = report(store, "8", meta["now"])
    # store.sacct.txt: job 8 ran 7 s of its 00:10:00 limit: 7 / 600 = 1.1667 %
    assert "Time Limit: 00:10:00 (wall-clock time is 1.17% of it)\n" in text
    assert "GPUs: none allocated\n" in text
    assert "Cost: $0.00 (CPU-only job)\n" in text
    assert "no GPU data" not in text and "Findings" not in text


def test_an_unlimited_job_shows_its_limit_without_a_share(store):
    meta, _ = read_case(FIXTURES / "steps" / "22.05.8" / "seff_oom.txt")
    assert "Time Limit: UNLIMITED\n" in report(store, "12", meta["now"])


def test_a_pending_job(store):
    meta, _ = read_case(FIXTURES / "seff" / "22.05.8" / "seff_pending.txt")
    text = report(store, str(SEFF_JOBS["pending"]), meta["now"])
    assert "Efficiency not available for jobs in the PENDING state.\n" in text
    assert "Time Limit" not in text and "CPU Utilized" not in text


# --- the GPU half ---------------------------------------------------------------------------------
def test_per_gpu_figures_from_the_sampler(store):
    s = store["summary"]
    text = report(store, str(s["job_id"]), int(s["ended"]) + 60)
    rows = {int(m[1]): m[0] for m in re.finditer(r"^vm +(\d) .*$", text, re.M)}
    assert sorted(rows) == [0, 1, 2, 3], text
    # by hand from 4gpu-2idle.summary.json: GPU 0 util_mean 77.766, p95 80; 40960 of 81559 MiB = 40.0 of
    # 79.6 GiB, 50.2 %; power 557.701 of 700 W; 22889.299 J = 0.006 kWh
    assert re.search(r"77\.8% +80\.0% +40\.0 of 79\.6 GiB \(50\.2%\) +558 of 700 W +0\.006 kWh$", rows[0]), rows[0]
    assert re.search(r" 0\.0 of 79\.6 GiB \(0\.0%\) +60 of 700 W +0\.001 kWh  did no work$", rows[2]), rows[2]
    # 4 GPUs x 40 s x $4/h = $0.18; (77.766 + 77.766) / 4 = 38.9 %; peak 40960 MiB = 40.00 GiB;
    # energy (22889.299 + 22888.996 + 2 x 2409.003) J / 3.6e6 = 0.014 kWh
    assert "GPU cost: $0.18 (4 GPU x 00:00:40 at $4.00/GPU-hour)\n" in text
    assert "GPU utilization over the allocation: 38.9%   GPUs that did work: 2 of 4\n" in text
    assert "GPU memory peak: 40.00 GiB   GPU energy: 0.014 kWh\n" in text
    assert "$0.09 of $0.18 bought idle GPUs." in text       # IDLE_GPUS, by the analysis rules
    assert "Waste: $0.09 of $0.18\n" in text


# --- a running job ------------------------------------------------------------------------------
def test_a_running_job_is_labelled_and_gets_the_live_checkpoint(store, tmp_path):
    job = SEFF_JOBS["running"]
    meta, out = read_case(FIXTURES / "seff" / "22.05.8" / "seff_running.txt")
    wall = re.search(r"^Job Wall-clock time: (\d\d):(\d\d):(\d\d)$", out.decode(), re.M)
    elapsed = int(wall[1]) * 3600 + int(wall[2]) * 60 + int(wall[3])      # real seff's, while it ran
    spool_with_checkpoint(tmp_path / "spool", job)
    text = report(store, str(job), meta["now"],
                  live=lambda j, cfg, cat: read_live(j, cfg, cat, spool_dir=str(tmp_path / "spool")))
    assert "State: RUNNING\n" in text
    assert "WARNING: Efficiency statistics may be misleading for RUNNING jobs.\n" in text
    assert "Running: figures so far." in text
    # of the job's 00:10:00 limit (store.sacct.txt), and 2 GPUs x that time x $4/h (77 s: $0.1711)
    assert f"(wall-clock time is {elapsed / 600 * 100:.2f}% of it so far)" in text
    hms = f"00:{elapsed // 60:02d}:{elapsed % 60:02d}"
    assert f"GPU cost so far: ${2 * elapsed / 3600 * 4:.2f} (2 GPU x {hms} at $4.00/GPU-hour)\n" in text
    assert "Live GPU figures so far (sampler checkpoint on vm," in text
    rows = {int(m[1]): m[0] for m in re.finditer(r"^vm +(\d) .*$", text, re.M)}
    # by hand from running.checkpoint.json: GPU 0 util_mean 68.852, p95 70, 12288 of 81559 MiB = 12.0 of
    # 79.6 GiB (15.1 %), 500.655 of 700 W, 30432.616 J = 0.008 kWh; GPU 1 idle at 60 W
    assert re.search(r"68\.9% +70\.0% +12\.0 of 79\.6 GiB \(15\.1%\) +501 of 700 W +0\.008 kWh$", rows[0]), rows[0]
    assert rows[1].endswith("no work so far"), rows[1]
    # both GPUs sampled 60.995 s: (68.852 + 0) / 2 = 34.4 %
    assert "GPU utilization over the allocation so far: 34.4%   GPUs that did work so far: 1 of 2\n" in text
    assert "Findings" not in text and "Waste" not in text and "ExitCode" not in text

    doc = json.loads(report(store, str(job), meta["now"], as_json=True,
                            live=lambda j, cfg, cat: read_live(j, cfg, cat, spool_dir=str(tmp_path / "spool"))))
    assert doc["running"] is True and doc["elapsed_s"] == elapsed and doc["findings"] is None
    assert doc["live"]["node"] == "vm" and doc["live"]["util_avg_pct"] == 34.4 and doc["live"]["used"] == 1
    assert [d["mem_used_pct"] for d in doc["live"]["devices"]] == [15.1, 0.0]


def test_live_figures_are_refused_from_an_unsafe_or_missing_spool(store, tmp_path):
    cfg = store["cfg"]
    from piqc_slurm.query.jobids import parse_jobs
    from piqc_slurm.query.store import Reader
    from piqc_slurm.report.seff import load_job

    reader = Reader(store["url"])
    try:
        job = load_job(reader, parse_jobs([str(SEFF_JOBS["running"])])[0]).job
    finally:
        reader.close()
    cat = None
    got, note = read_live(job, cfg, cat, spool_dir=str(tmp_path / "nowhere"))
    assert got is None and "none on this host" in note and f"seff {job['job_id']}` as root on vm" in note

    root = tmp_path / "spool"
    run_dir = spool_with_checkpoint(root, job["job_id_raw"])
    os.chmod(run_dir, 0o777)                              # writable by others: refused, as the hooks do
    got, note = read_live(job, cfg, cat, spool_dir=str(root))
    assert got is None and "writable by group or others" in note
    os.chmod(run_dir, 0o700)
    (run_dir / "checkpoint.json").rename(run_dir / "elsewhere.json")
    got, note = read_live(job, cfg, cat, spool_dir=str(root))
    assert got is None and note.startswith("none yet (no checkpoint")
    (run_dir / "checkpoint.json").symlink_to(run_dir / "elsewhere.json")   # never followed
    got, note = read_live(job, cfg, cat, spool_dir=str(root))
    assert got is None and "checkpoint.json" in note
    (run_dir / "checkpoint.json").unlink()
    (run_dir / "checkpoint.json").write_text('{"format": "piqc-checkpoint/9"}')
    got, note = read_live(job, cfg, cat, spool_dir=str(root))
    assert got is None and "unknown checkpoint format" in note


def test_a_running_job_without_live_figures_says_why(store):
    meta, _ = read_case(FIXTURES / "seff" / "22.05.8" / "seff_running.txt")
    text = report(store, str(SEFF_JOBS["running"]), meta["now"], live=lambda j, cfg, cat: (None, "NOTE"))
    assert "Live GPU figures: NOTE\n" in text


# --- --json -----------------------------------------------------------------------------------
def documented_keys() -> list[str]:
    """The keys docs/seff.md's table lists, in its order."""
    text = (REPO / "docs" / "seff.md").read_text().partition("## --json")[2]
    return re.findall(r"^\| `([a-z0-9_.\[\]]+)` \|", text, re.M)


def flat_keys(doc: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in doc.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += flat_keys(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out += flat_keys(v[0], f"{prefix}{k}[].")
    return out


def test_json_of_a_finished_gpu_job_has_the_documented_keys(store):
    s = store["summary"]
    doc = json.loads(report(store, str(s["job_id"]), int(s["ended"]) + 60, as_json=True))
    assert doc["format"] == JSON_FORMAT
    assert set(flat_keys(doc)) <= set(documented_keys()), set(flat_keys(doc)) - set(documented_keys())
    assert doc["gpus"]["allocated"] == 4 and doc["gpus"]["util_avg_pct"] == 38.9 and doc["cost_usd"] == 0.18
    assert doc["gpus"]["devices"][0]["mem_used_pct"] == 50.2 and doc["gpus"]["devices"][2]["did_work"] is False
    assert [f["code"] for f in doc["findings"]] == ["IDLE_GPUS"] and doc["findings_source"] == "rules"


def test_every_documented_key_is_there(store, tmp_path):
    doc_keys = documented_keys()
    assert len(doc_keys) > 40 and len(doc_keys) == len(set(doc_keys))
    s = store["summary"]
    meta, _ = read_case(FIXTURES / "seff" / "22.05.8" / "seff_running.txt")
    spool_with_checkpoint(tmp_path / "spool", SEFF_JOBS["running"])
    seen = set(flat_keys(json.loads(report(store, str(s["job_id"]), int(s["ended"]) + 60, as_json=True))))
    seen |= set(flat_keys(json.loads(report(
        store, str(SEFF_JOBS["running"]), meta["now"], as_json=True,
        live=lambda j, cfg, cat: read_live(j, cfg, cat, spool_dir=str(tmp_path / "spool"))))))
    seen |= set(flat_keys(json.loads(report(store, str(SEFF_JOBS["running"]), meta["now"], as_json=True,
                                            live=lambda j, cfg, cat: (None, "why")))))
    assert seen == set(doc_keys), set(doc_keys) ^ seen


def test_json_figures_of_a_cpu_job_are_real_seff_s(store):
    meta, out = read_case(FIXTURES / "steps" / "22.05.8" / "seff_cpu.txt")
    doc = json.loads(report(store, "8", meta["now"], as_json=True))
    # real seff: CPU Efficiency 21.43% of 00:00:14 core-walltime; 3.26 MB used (3340 KiB), 0.82% of 400.00 MB
    assert (doc["cpu_used_s"], doc["core_walltime_s"], doc["cpu_efficiency_pct"]) == (3, 14, 21.43)
    assert (doc["mem_used_kib"], doc["mem_request_kib"], doc["mem_efficiency_pct"]) == (3340.0, 409600.0, 0.82)
    assert (doc["cores"], doc["nodes"], doc["cores_per_node"], doc["mem_estimated"]) == (2, 1, 2, False)
    assert doc["mem_request_per"] == "node" and doc["mem_request_per_known"] is True   # SubmitLine: --mem=400M
    assert doc["time_limit_pct"] == 1.17 and doc["gpus"] is None and doc["state"] == "COMPLETED"


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("jobid, message", [
    ("abc", "Bad job/step specified: abc"),       # real seff 22.05.8: "fatal: Bad job/step specified: abc", rc 1
    ("12x", "Bad job/step specified: 12x"),       # real seff reads it as 12 (atoi); we refuse it
    ("8,9", "Bad job/step specified: 8,9 (seff takes one job id"),
    ("", "Bad job/step specified: ''"),
    ("99", "job 99 not found in the store"),
    ("9.7", "job 9 has no step 7 in the store"),
])
def test_bad_job_ids(store, jobid, message):
    with pytest.raises(UsageError) as e:
        report(store, jobid, 1796213920)
    assert str(e.value).startswith(message)


def test_someone_else_s_job_follows_private_data(store):
    """As sacct: with PrivateData=jobs another user's job is not there; without it, it is."""
    conf = (FIXTURES / "slurmconf" / "piqc-cluster.slurm.conf").read_text()
    private = Caller(4242, "mallory", privacy=parse_slurm_conf(conf + "PrivateData=jobs\n"))
    with pytest.raises(UsageError, match="not found in the store"):
        report(store, "8", 1796213920, caller=private)
    open_ = Caller(4242, "mallory", privacy=parse_slurm_conf(conf))
    assert report(store, "8", 1796213920, caller=open_).startswith("Job ID: 8\n")


def test_the_command_line_exit_status(store):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(store["dir"] / "piqc.toml"), "--db", store["url"]]
    r = subprocess.run(base + ["seff", "abc"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "piqc-slurm: Bad job/step specified: abc\n")
    r = subprocess.run(base + ["seff", "99"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.startswith("piqc-slurm: job 99 not found in the store")
    r = subprocess.run(base + ["seff", "--json", "8"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["cpu_efficiency_pct"] == 21.43
