"""`piqc-slurm sacct` against real sacct, byte for byte, on recorded output.

tests/fixtures/query/<version>/store.sacct.txt is real `sacct -a -P -D`
output (ingest's field list) for a window of the test cluster; ingesting it
gives the store every case runs against. Each <case>.txt is real sacct's
stdout for the arguments in its `# argv:` line, under the `# env:` (TZ,
SLURM_TIME_FORMAT) and at the `# now:` it names (capture.py records them)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from piqc_slurm.ingest import ingest
from piqc_slurm.query.access import Caller
from piqc_slurm.query.command import parse_args
from piqc_slurm.query.run import Settings, run
from piqc_slurm.store import open_engine

pytestmark = pytest.mark.unit

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "query"
VERSIONS = sorted(p for p in FIX.iterdir() if p.is_dir())
CASES = sorted(p for d in VERSIONS for p in d.glob("*.txt") if p.name != "store.sacct.txt")
ROOT = Caller(0, "root")


def read_case(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    meta: dict = {}
    while data.startswith(b"# "):
        line, _, data = data.partition(b"\n")
        key, _, value = line[2:].decode().partition(": ")
        meta[key] = value
    return {"argv": json.loads(meta["argv"]), "env": json.loads(meta["env"]), "now": int(meta["now"]),
            "command": meta["command"]}, data


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[Path, str]:
    """One store per Slurm version, from its recorded store.sacct.txt."""
    out = {}
    for d in VERSIONS:
        url = f"sqlite:///{tmp_path_factory.mktemp('store')}/piqc.db"
        engine = open_engine(url)
        res = ingest(engine, cluster="piqc", sacct_file=str(d / "store.sacct.txt"), file_tz="UTC")
        engine.dispose()
        assert res.errors == [] and res.jobs > 100
        out[d] = url
    return out


@pytest.fixture
def tz(monkeypatch):
    """Set the process time zone (the querying host's, as sacct uses it); restored after."""
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


def ours(url: str, meta: dict, warnings: list[str] | None = None) -> bytes:
    buf = io.BytesIO()
    run(parse_args(meta["argv"]), url=url, settings=Settings(), caller=ROOT, out=buf, env=meta["env"],
        now=meta["now"], warn=(warnings.append if warnings is not None else None))
    return buf.getvalue()


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_byte_identical_to_real_sacct(case, stores, tz):
    meta, expected = read_case(case)
    tz(meta["env"].get("TZ", "UTC"))
    got = ours(stores[case.parent], meta)
    assert got == expected, f"{meta['command']}\n--- real sacct\n{expected.decode()}\n--- ours\n{got.decode()}"


def test_the_cases_cover_what_the_contract_promises():
    names = {p.stem for p in CASES}
    assert {"shared_P", "shared_p", "shared_table", "default_table"} <= names
    text = b"".join(p.read_bytes() for p in CASES)
    for needle in (b"CANCELLED by 0", b"None assigned", b"|None|", b"a|b<b>x</b>", b"10_3", b"151+1",
                   b"150_[1-5%2]", b"FAILED|3:0", b"TIMEOUT", b"REQUEUED"):
        assert needle in text, needle


def test_invalid_time_format_is_reported_once_and_the_standard_used(stores, tz):
    case = next(p for p in CASES if p.stem == "invalid_format_P")
    meta, expected = read_case(case)
    tz("UTC")
    warnings: list[str] = []
    assert ours(stores[case.parent], meta, warnings) == expected
    assert warnings == ["piqc-slurm sacct: error: invalid SLURM_TIME_FORMAT = 'abc'"]


def test_json_has_typed_values_and_the_design_fields(stores, tz):
    tz("UTC")
    url = stores[VERSIONS[-1]]
    meta = {"argv": ["-j", "7,8,10_3,35", "--json-fields"], "env": {}, "now": 1795870729}
    doc = json.loads(ours(url, meta))
    assert list(doc) == ["jobs"]
    jobs = {j["JobID"]: j for j in doc["jobs"]}
    assert list(jobs) == ["7", "8", "10_3", "35"]
    j7 = jobs["7"]
    assert list(j7) == ["JobID", "JobIDRaw", "JobName", "User", "Account", "Partition", "State", "ExitCode",
                        "Submit", "Start", "End", "Elapsed", "NodeList", "AllocGPUs", "GPUType", "GPUsUsed",
                        "GPUUtilAvg", "GPUMemPeak", "GPUEnergy", "CostUSD", "WasteUSD", "Findings", "AdviceGPUs",
                        "AdviceTier", "EstElapsed"]
    assert j7["JobIDRaw"] == 7 and isinstance(j7["Elapsed"], int)
    assert j7["Submit"].endswith("Z") and j7["State"].startswith("CANCELLED")
    assert j7["AllocGPUs"] == 2 and j7["GPUType"] == "h100" and isinstance(j7["CostUSD"], float)
    assert j7["GPUsUsed"] is None and j7["WasteUSD"] is None and j7["Findings"] == []   # no sampler data
    assert jobs["8"]["Start"] is None and jobs["8"]["NodeList"] is None and jobs["8"]["End"].endswith("Z")
    assert jobs["10_3"]["JobIDRaw"] == 10
    assert jobs["35"]["AllocGPUs"] == 0 and jobs["35"]["GPUType"] is None and jobs["35"]["CostUSD"] == 0.0


def test_json_with_format_keeps_the_asked_fields_in_order(stores, tz):
    tz("UTC")
    meta = {"argv": ["-j", "12", "--json-fields", "-o", "jobname,jobid,elapsedraw,AllocGPUs"], "env": {},
            "now": 1795870729}
    doc = json.loads(ours(stores[VERSIONS[-1]], meta))
    assert doc == {"jobs": [{"JobName": "a|b<b>x</b>&'q`../z", "JobID": "12", "ElapsedRaw": 0, "AllocGPUs": 1}]}


def test_json_of_nothing_is_an_empty_list(stores, tz):
    tz("UTC")
    meta = {"argv": ["-j", "999999", "--json-fields"], "env": {}, "now": 1795870729}
    assert ours(stores[VERSIONS[-1]], meta) == b'{"jobs": []}\n'


def test_a_file_without_eligible_shows_its_jobs_in_windows_as_real_sacct(tmp_path, tz):
    """`ingest --sacct-file` of output without an Eligible column takes Eligible = Submit (what Slurm records
    for a job that was never held). The recorded store with that column cut out, then every recorded -S/-E
    window: each job real sacct listed is listed; the only extra ones are the jobs real sacct never listed
    because they were held (Eligible Unknown in the recording: 8, 150): a file without Eligible cannot say so."""
    d = VERSIONS[0]
    lines = (d / "store.sacct.txt").read_text().splitlines(keepends=True)
    body = [ln for ln in lines if not ln.startswith("#")]
    names = body[0].rstrip("\n").split("|")
    cut = names.index("Eligible")

    def drop(line: str) -> str:
        parts = line.rstrip("\n").split("|")
        # free-text fields come last: a '|' inside a job name only adds fields after Eligible
        return "|".join(parts[:cut] + parts[cut + 1:]) + "\n"

    src = tmp_path / "no-eligible.txt"
    src.write_text("".join(drop(ln) for ln in body))
    url = f"sqlite:///{tmp_path}/piqc.db"
    engine = open_engine(url)
    res = ingest(engine, cluster="piqc", sacct_file=str(src), file_tz="UTC")
    engine.dispose()
    assert res.errors == []
    windows = [c for c in CASES if "-S" in read_case(c)[0]["argv"] and "-j" not in read_case(c)[0]["argv"]
               and "-P" in read_case(c)[0]["argv"] and "-n" not in read_case(c)[0]["argv"]]
    assert len(windows) >= 3
    for case in windows:
        meta, expected = read_case(case)
        tz(meta["env"].get("TZ", "UTC"))
        want = {ln.split("|")[0] for ln in expected.decode().splitlines()[1:]}
        got = {ln.split("|")[0] for ln in ours(url, meta).decode().splitlines()[1:]}
        assert want <= got, case.name
        assert {j.split(".")[0] for j in got - want} <= {"8", "150_[1-5%2]"}, case.name
