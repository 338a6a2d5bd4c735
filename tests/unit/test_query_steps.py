"""`piqc-slurm sacct` without -X and with every field, against real sacct 22.05.8.

tests/fixtures/steps/<version>/ holds real output for a CPU job with two srun steps, a GPU job
with four (one failing, one killed for memory), a 3-task array, a 4-GPU job and an OOM job
(tests/fixtures/steps/capture.py). store.sacct.txt is what `piqc-slurm ingest` asks sacct for;
each case is real sacct's stdout for its `# argv:` line. Step lines must come out byte for byte;
for `-o ALL` the first 109 columns are sacct's, the rest ours."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_query_sacct_fixtures import read_case as read_recorded

from piqc_slurm.ingest import ingest
from piqc_slurm.query.access import Caller
from piqc_slurm.query.command import parse_args
from piqc_slurm.query.fields import ADDED_FIELDS, SACCT_FIELD_ORDER
from piqc_slurm.query.run import Settings, run
from piqc_slurm.store import open_engine

pytestmark = pytest.mark.unit

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "steps" / "22.05.8"
ROOT = Caller(0, "root")
BYTE_CASES = ["steps_default", "steps_shared_P", "steps_shared_table", "new_P", "new_table", "new_X_P",
              "state_f_steps_P", "array_task_P", "step_id_P", "nosuchaccount"]


def read_case(name: str) -> tuple[dict, bytes]:
    return read_recorded(FIX / f"{name}.txt")


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    u = f"sqlite:///{tmp_path_factory.mktemp('steps')}/piqc.db"
    engine = open_engine(u, mode="create")
    res = ingest(engine, cluster="piqc", sacct_file=str(FIX / "store.sacct.txt"), file_tz="UTC")
    engine.dispose()
    assert res.errors == [] and res.jobs == 7
    return u


def ours(url: str, meta: dict) -> bytes:
    buf = io.BytesIO()
    run(parse_args(meta["argv"][1:] if meta["argv"][:1] == ["-a"] else meta["argv"]), url=url,
        settings=Settings(), caller=ROOT, out=buf, env=meta["env"], now=meta["now"])
    return buf.getvalue()


@pytest.mark.parametrize("case", BYTE_CASES)
def test_steps_and_fields_byte_identical_to_real_sacct(case, url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    meta, expected = read_case(case)
    got = ours(url, meta)
    assert got == expected, f"--- real sacct\n{expected.decode()}\n--- ours\n{got.decode()}"


@pytest.mark.parametrize("case", ["all_P", "all_X_P"])
def test_all_fields_are_sacct_s_in_its_order_then_ours(case, url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    meta, expected = read_case(case)
    want = expected.decode().splitlines()
    got = ours(url, meta).decode().splitlines()
    assert len(got) == len(want)
    n = len(SACCT_FIELD_ORDER)
    assert want[0].split("|") == list(SACCT_FIELD_ORDER)  # sacct's -o ALL: its 109 fields
    assert got[0].split("|") == list(SACCT_FIELD_ORDER) + list(ADDED_FIELDS)
    for w, g in zip(want, got, strict=True):
        # a free-text value could hold "|", but none of these jobs' do
        assert g.split("|")[:n] == w.split("|"), w.split("|")[0]


def test_step_lines_leave_the_gpu_fields_empty(url, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    meta = {"argv": ["-P", "-j", "11", "-o", "JobID,AllocGPUs,GPUType,CostUSD"], "env": {"TZ": "UTC"},
            "now": 1796214000}
    lines = ours(url, meta).decode().splitlines()
    # job 11: AllocTRES gres/gpu:h100=4 (store.sacct.txt); its steps hold no GPU figure of their own
    assert lines[1].startswith("11|4|h100|")
    assert lines[2:] == ["11.batch|||", "11.extern|||"]
