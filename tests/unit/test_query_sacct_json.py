"""`piqc-slurm sacct --json` in sacct 22.05.8's own shape, against real `sacct --json`.

tests/fixtures/steps/22.05.8/json_<case>.json is real sacct's output for jobs 8-12 (capture.py);
the store is built from the same jobs' store.sacct.txt. Every key, its order, every type and every
value must match, but for one thing text cannot carry: sacct prints CPU times in milliseconds and
its JSON has microseconds, so ours are the real value cut to whole milliseconds."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsoncompare import differences

from piqc_slurm.ingest import ingest
from piqc_slurm.query import sacctjson
from piqc_slurm.query.access import Caller
from piqc_slurm.query.command import parse_args
from piqc_slurm.query.run import Settings, run
from piqc_slurm.store import open_engine

pytestmark = pytest.mark.unit

STEPS = Path(__file__).resolve().parent.parent / "fixtures" / "steps"
FIX = STEPS / "22.05.8"
CASES = {"cpu": 8, "steps": 9, "array": 10, "multigpu": 11, "oom": 12}


def recorded(name: str) -> tuple[dict, str]:
    text = (FIX / name).read_text()
    head = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# ") and ": " in line)
    return {k: json.loads(v) for k, v in head.items() if k in ("argv", "env", "now")}, \
        "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


IDS = sacctjson.parse_tres_ids(recorded("sacctmgr_tres.txt")[1])


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    u = f"sqlite:///{tmp_path_factory.mktemp('sjson')}/piqc.db"
    engine = open_engine(u, mode="create")
    res = ingest(engine, cluster="piqc", sacct_file=str(FIX / "store.sacct.txt"), file_tz="UTC")
    engine.dispose()
    assert res.errors == []
    return u


def ours(url: str, argv: list[str], now: int, **settings) -> dict:
    buf = io.BytesIO()
    run(parse_args(argv), url=url, settings=Settings(tres_ids=IDS, slurm_version="22.05.8", **settings),
        caller=Caller(0, "root"), out=buf, now=now)
    return json.loads(buf.getvalue())


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_shape_types_and_values_as_real_sacct_json(case, url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    meta, text = recorded(f"json_{case}.json")
    real = json.loads(text)
    got = ours(url, meta["argv"][1:], meta["now"])
    assert [j.pop("piqc") is not None for j in got["jobs"]] == [True] * len(real["jobs"])
    assert differences(real, got) == []


def test_our_gpu_figures_ride_under_one_key_with_the_typed_fields(url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    job = ours(url, ["--json", "-j", "11"], 1796213919)["jobs"][0]
    assert job["piqc"]["AllocGPUs"] == 4 and job["piqc"]["GPUType"] == "h100"   # gres/gpu:h100=4
    assert set(job) - set(json.loads(recorded("json_multigpu.json")[1])["jobs"][0]) == {"piqc"}


def test_a_script_written_for_sacct_json_reads_ours_the_same(url, monkeypatch):
    """tests/fixtures/steps/sacct_json_summary.py knows only sacct's shape; fed real sacct --json
    and ours for the same jobs, it prints the same lines."""
    monkeypatch.setenv("TZ", "UTC")
    script = STEPS / "sacct_json_summary.py"
    for case in sorted(CASES):
        meta, text = recorded(f"json_{case}.json")
        want = subprocess.run([sys.executable, str(script)], input=text, capture_output=True, text=True, check=True)
        got = subprocess.run([sys.executable, str(script)], input=json.dumps(ours(url, meta["argv"][1:], meta["now"])),
                             capture_output=True, text=True, check=True)
        assert got.stdout == want.stdout and want.stdout.count("\n") >= 3


def test_without_sacctmgr_the_static_tres_ids_and_gres_ids_null(url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    buf = io.BytesIO()
    run(parse_args(["--json", "-j", "11"]), url=url, settings=Settings(tres_ids=dict(sacctjson.STATIC_TRES),
        slurm_version="22.05.8"), caller=Caller(0, "root"), out=buf, now=1796213919)
    alloc = json.loads(buf.getvalue())["jobs"][0]["tres"]["allocated"]
    assert [(t["type"], t["name"], t["id"]) for t in alloc] == [
        ("cpu", None, 1), ("mem", None, 2), ("node", None, 4), ("billing", None, 5),
        ("gres", "gpu", None), ("gres", "gpu:h100", None)]


def test_no_jobs_is_the_empty_list_with_meta(url):
    doc = ours(url, ["--json", "-j", "999999"], 1796213919)
    assert doc["jobs"] == [] and doc["errors"] == []
    assert doc["meta"]["Slurm"] == {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"}


def test_exit_codes_decode_as_slurm_does():
    """parse.c _dump_job_exit_code over the wait status sacct prints as EXIT:SIGNAL."""
    assert sacctjson._exit_code("0:0") == {"status": "SUCCESS", "return_code": 0}
    assert sacctjson._exit_code("1:0") == {"status": "SUCCESS", "return_code": 0}   # sic: 22.05.8
    assert sacctjson._exit_code("0:9") == {"status": "SIGNALED", "return_code": None,
                                           "signal": {"signal_id": 9, "name": "Killed"}}
    assert sacctjson._exit_code("") == {"status": "PENDING", "return_code": None}


def test_flat_shape_behind_json_fields(url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    doc = ours(url, ["--json-fields", "-j", "8", "-o", "JobID,State,AllocGPUs"], 1796213919)
    assert doc == {"jobs": [{"JobID": "8", "State": "COMPLETED", "AllocGPUs": 0}]}


# --- reportseff's columns (usage/efficiency.py), hand-computed from the recorded sacct lines ---
@pytest.mark.parametrize(("job", "line"), [
    # 7 s of 00:10:00 = 1.2 %; TotalCPU 00:02.825 -> 2 s (reportseff drops ms) / 2 CPUs / 7 s = 14.3 %;
    # steps' MaxRSS x NTasks: 3340K, 1684K, 3128K x 2 = 6256K, 3156K -> 6256K / 400M = 1.5 %
    ("8", "8|1.2|14.3|1.5"),
    # 4 s of 10 min = 0.7 %; 00:02.335 -> 2 s / 1 / 4 s = 50.0 %; largest 3544K / 100M = 3.5 %
    ("9", "9|0.7|50.0|3.5"),
    # UNLIMITED: no TimeEff; 00:00.102 -> 0 s: reportseff's "---"; 3264K / 100M = 3.2 %
    ("12", "12|||3.2"),
])
def test_time_cpu_and_mem_eff_as_reportseff_computes_them(url, monkeypatch, job, line):
    monkeypatch.setenv("TZ", "UTC")
    buf = io.BytesIO()
    run(parse_args(["-X", "-P", "-n", "-j", job, "-o", "JobID,TimeEff,CPUEff,MemEff"]), url=url,
        settings=Settings(), caller=Caller(0, "root"), out=buf, now=1796213919)
    assert buf.getvalue().decode() == line + "\n"
    doc = ours(url, ["--json", "-j", job], 1796213919)["jobs"][0]["piqc"]
    want = [None if v == "" else float(v) for v in line.split("|")[1:]]
    assert [doc["TimeEff"], doc["CPUEff"], doc["MemEff"]] == want
