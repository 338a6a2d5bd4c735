"""The sacct command line and environment for ingest (piqc_slurm.slurm.argv):
pure functions, checked without running sacct. What sacct 22.05 does with
these arguments was verified on the test cluster (see argv.py's docstring)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piqc_slurm.slurm.argv import UTS_MIN, sacct_argv, sacct_env, time_slices
from piqc_slurm.slurm.fields import DELIMITER, FREE_TEXT_FIELDS, INGEST_FIELDS

pytestmark = pytest.mark.unit


def test_ingest_fields_put_free_text_last():
    # every field of sacct 22.05.8's table (its `sacct -e`), free text at the end
    assert len(INGEST_FIELDS) == len(set(INGEST_FIELDS)) == 109
    assert {"JobName", "Comment", "WorkDir", "SubmitLine"} <= set(INGEST_FIELDS[-9:])
    free = [i for i, f in enumerate(INGEST_FIELDS) if f.lower() in FREE_TEXT_FIELDS]
    assert free == list(range(len(INGEST_FIELDS) - len(free), len(INGEST_FIELDS)))
    assert "AllocTRES" in INGEST_FIELDS and DELIMITER == "\x1f"


def test_default_argv():
    assert sacct_argv(1795868096, 1795868100) == [
        "sacct", "-a", "-P", "-D", "--delimiter=\x1f", "--format=" + ",".join(INGEST_FIELDS),
        "-S", "uts1795868096", "-E", "uts1795868100"]


def test_argv_options():
    argv = sacct_argv(1795868096, 1795868100, fields=["JobID", "Submit"], delimiter="|", clusters=["piqc", "b"],
                      jobs=[5, "10_1", "7.batch"], sacct="/usr/bin/sacct")
    assert argv == ["/usr/bin/sacct", "-a", "-P", "-D", "--delimiter=|", "--format=JobID,Submit",
                    "-S", "uts1795868096", "-E", "uts1795868100", "-M", "piqc,b", "-j", "5,10_1,7.batch"]
    assert sacct_argv(None, None, jobs=[5])[-2:] == ["-j", "5"]


def test_start_before_what_sacct_accepts_is_raised_to_it():
    # parse_time() refuses uts values below 1000000; no job is older than that
    assert sacct_argv(0, 1795868100)[-4:] == ["-S", f"uts{UTS_MIN}", "-E", "uts1795868100"]


@pytest.mark.parametrize("kw", [
    {"start": None, "end": 1795868100},
    {"start": 1795868100, "end": 1795868096},
    {"start": 0, "end": 5},
    {"start": 1795868096, "end": 1795868100, "fields": []},
    {"start": 1795868096, "end": 1795868100, "fields": ["JobID,State"]},
    {"start": 1795868096, "end": 1795868100, "delimiter": ""},
    {"start": 1795868096, "end": 1795868100, "delimiter": "\n"},
    {"start": 1795868096, "end": 1795868100, "jobs": ["5; rm -rf /"]},
    {"start": 1795868096, "end": 1795868100, "clusters": ["a,b"]},
])
def test_argv_rejects(kw):
    with pytest.raises(ValueError):
        sacct_argv(**kw)


def test_env():
    base = {"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_TIME_FORMAT": "relative",
            "TZ": "Europe/Berlin"}
    env = sacct_env(base)
    assert env == {"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_TIME_FORMAT": "%s",
                   "TZ": "UTC"}
    assert base["TZ"] == "Europe/Berlin"  # not modified


def test_time_slices_examples():
    assert time_slices(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert time_slices(0, 8, 4) == [(0, 4), (4, 8)]
    assert time_slices(5, 5, 4) == [] and time_slices(6, 5, 4) == []
    with pytest.raises(ValueError):
        time_slices(0, 10, 0)


@given(st.integers(0, 2**40), st.integers(0, 10**4), st.integers(1, 10**5))
def test_time_slices_cover_the_window(start, length, size):
    end = start + length
    s = time_slices(start, end, size)
    if length == 0:
        assert s == []
        return
    assert s[0][0] == start and s[-1][1] == end
    assert all(a < b <= a + size for a, b in s)
    assert all(s[i][1] == s[i + 1][0] for i in range(len(s) - 1))
