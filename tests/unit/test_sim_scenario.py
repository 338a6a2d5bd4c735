"""The scenario loader (piqc_slurm.sim.scenario): DESIGN.md's own example read
by hand, every error message pinned exactly, times with and without a zone,
phase spans worked out by hand, and hypothesis over arbitrary valid documents
(they load) and the same documents with one unknown key (rejected, naming the
key's path). The examples/ scenarios load, and their READMEs' hand-computed
totals and the cluster-week generator's published totals hold."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piqc_slurm.sim.scenario import (
    JOB_STATES,
    LOAD_KEYS,
    Job,
    Load,
    Node,
    Phase,
    Scenario,
    ScenarioError,
    iter_spans,
    live_load,
    load_scenario,
    parse_scenario,
)

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# DESIGN.md "Scenario format", written out as a file (its // comments dropped: they are not JSON)
DESIGN_EXAMPLE = """\
{
  "cluster": "sim",
  "prices":  {"h100": 4.00, "a10g": 1.00},
  "catalog": {"a10g": {"mem_gib": 24, "tflops": 125, "mem_bw_gbs": 600}},
  "nodes": [{"name": "gpu01", "gpu_type": "h100", "gpus": 8}],
  "jobs": [{
    "job_id": 1001, "name": "nightly-classify", "user": "alice",
    "account": "nlp", "partition": "gpu", "node": "gpu01",
    "gpu_indices": [0,1,2,3],
    "submit": "2026-11-27T01:55:00", "start": "2026-11-27T02:00:00",
    "end": "2026-11-27T04:00:00", "state": "COMPLETED", "exit_code": "0:0",
    "cpus": 16, "cpu_util": 0.30,
    "gpu_load": [
      {"gpus": [0,1], "util": 92, "util_jitter": 5, "mem_gib": 71,
       "mem_util": 60, "process": true},
      {"gpus": [2,3], "util": 0, "mem_gib": 0, "process": false}
    ]
  }]
}
"""


def test_design_example_by_hand() -> None:
    sc = load_scenario(DESIGN_EXAMPLE)
    assert sc == Scenario(
        cluster="sim",
        prices={"h100": 4.0, "a10g": 1.0},
        partition_prices={},
        catalog={"a10g": {"mem_gib": 24, "tflops": 125, "mem_bw_gbs": 600}},
        nodes=(Node("gpu01", "h100", 8, None),),
        jobs=(Job(
            job_id=1001, name="nightly-classify", user="alice", account="nlp", partition="gpu",
            node="gpu01", gpu_indices=(0, 1, 2, 3),
            submit=1795744500,       # 2026-11-27 01:55:00 UTC
            eligible=1795744500,     # default: submit
            start=1795744800, end=1795752000,  # 02:00, 04:00: two hours
            state="COMPLETED", exit_code="0:0", exit_signal=None, cpus=16, cpu_util=0.30,
            sampled=True, timelimit=None, restarts=0, comment="",
            gpu_load=(
                Load(gpus=(0, 1), util=92.0, util_jitter=5.0, mem_gib=71.0, mem_util=60.0, process=True),
                Load(gpus=(2, 3), util=0.0, util_jitter=0.0, mem_gib=0.0, mem_util=None, process=False),
            ),
            req_gpus=4,
        ),),
    )
    assert sc.jobs[0].end - sc.jobs[0].start == 2 * 3600
    assert sc.jobs[0].started
    assert sc.node("gpu01") == sc.nodes[0] and sc.node("gpu99") is None
    assert epoch("2026-11-27T01:55:00") == sc.jobs[0].submit


def test_parse_scenario_takes_a_decoded_document() -> None:
    assert parse_scenario(json.loads(DESIGN_EXAMPLE)) == load_scenario(DESIGN_EXAMPLE)


def test_defaults() -> None:
    doc = {"cluster": "c", "nodes": [{"name": "n1", "gpu_type": "h100", "gpus": 2, "partition": "big"},
                                     {"name": "n2", "gpu_type": "h100", "gpus": 2}],
           "jobs": [{"job_id": 1, "user": "u", "node": "n1", "gpu_indices": [1, 0], "submit": "2026-01-01T00:00:00",
                     "start": "2026-01-01T00:00:00", "end": "2026-01-01T01:00:00", "state": "FAILED",
                     "exit_code": "1:0", "timelimit": 90, "gpu_load": [{"gpus": [1]}]},
                    {"job_id": 2, "user": "u", "node": "n2", "submit": "2026-01-01T00:00:00",
                     "start": "2026-01-01T00:00:00", "end": "2026-01-01T01:00:00", "state": "COMPLETED"}]}
    a, b = parse_scenario(doc).jobs
    assert (a.name, a.account, a.partition, a.eligible, a.cpus, a.sampled, a.restarts, a.comment) == \
        ("", "", "big", a.submit, 1, True, 0, "")
    assert a.gpu_indices == (0, 1)          # stored ascending, as Slurm lists them
    assert a.timelimit == 90 * 60           # minutes in the file, seconds in the Job
    assert a.gpu_load == (Load(gpus=(1,), util=0.0, process=True),)  # a named load runs a process
    assert b.partition == "gpu" and b.gpu_indices == () and b.req_gpus == 0 and b.exit_code == "0:0"


def test_never_started_jobs() -> None:
    doc = {"cluster": "c", "nodes": [], "jobs": [
        {"job_id": 7, "user": "u", "submit": "2026-01-01T00:00:00", "eligible": "2026-01-01T00:10:00",
         "state": "PENDING", "req_gpus": 4, "partition": "a100"},
        {"job_id": 8, "user": "u", "submit": "2026-01-01T00:00:00", "end": "2026-01-01T00:05:00",
         "state": "CANCELLED", "gpu_indices": []},
        {"job_id": 9, "user": "u", "submit": "2026-01-01T00:00:00", "state": "CANCELLED"},
    ]}
    pending, cancelled, cancelled_no_end = parse_scenario(doc).jobs
    assert (pending.node, pending.start, pending.end, pending.req_gpus, pending.partition) == \
        (None, None, None, 4, "a100")
    assert pending.eligible - pending.submit == 600 and not pending.started
    assert (cancelled.start, cancelled.end - cancelled.submit, cancelled.gpu_indices) == (None, 300, ())
    assert cancelled_no_end.end is None


def test_running_job_may_lack_end() -> None:
    doc = json.loads(DESIGN_EXAMPLE)
    doc["jobs"][0]["state"] = "RUNNING"
    del doc["jobs"][0]["end"]
    assert parse_scenario(doc).jobs[0].end is None


# ---- error messages ----

def base() -> dict:
    """Five two-hour jobs on gpu01, a day apart, each with two loads."""
    jobs = []
    for k in range(5):
        day = 21 + k
        jobs.append({"job_id": 100 + k, "user": "u", "node": "gpu01", "gpu_indices": [0, 1, 3, 4],
                     "submit": f"2026-11-{day}T01:00:00", "start": f"2026-11-{day}T02:00:00",
                     "end": f"2026-11-{day}T04:00:00", "state": "COMPLETED",
                     "gpu_load": [{"gpus": [0, 1], "util": 90}, {"gpus": [4], "util": 0, "mem_gib": 0.5}]})
    return {"cluster": "sim", "prices": {"h100": 4.0}, "catalog": {"a10g": {"mem_gib": 24}},
            "nodes": [{"name": "gpu01", "gpu_type": "h100", "gpus": 8},
                      {"name": "gpu02", "gpu_type": "a10g", "gpus": 1},
                      {"name": "cpu01", "gpu_type": "none", "gpus": 0}],
            "jobs": jobs}


def setting(path: str, value: object):
    """A mutation: set doc[path] (dotted, [i] for lists) to value; value DELETE removes the key."""
    def apply(doc: dict) -> None:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        target = doc
        for part in parts[:-1]:
            target = target[int(part[1:-1])] if part.startswith("[") else target[part]
        last = parts[-1]
        key: int | str = int(last[1:-1]) if last.startswith("[") else last
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
    return apply


DELETE = object()


def several(*mutations):
    def apply(doc: dict) -> None:
        for m in mutations:
            m(doc)
    return apply


ERRORS = [
    # the brief's own examples
    (setting("jobs[3].gpu_load[0].util", 140), "jobs[3].gpu_load[0].util: expected 0..100, got 140"),
    (several(setting("jobs[0].gpu_indics", [0]), setting("jobs[0].gpu_indices", DELETE)),
     "jobs[0]: unknown key 'gpu_indics'"),
    (setting("jobs[2].end", "2026-11-23T01:59:59"), "jobs[2].end: before start"),
    (setting("jobs[1].node", "gpu09"), "jobs[1].node: 'gpu09' is not in nodes"),
    (setting("jobs[1].gpu_indices", [0, 1, 3, 9]), "jobs[1].gpu_indices: 9 is not a GPU of gpu01 (0..7)"),
    (setting("jobs[4].gpu_load[1].gpus", [5]), "jobs[4].gpu_load[1].gpus: 5 is not in gpu_indices"),
    # document level
    (setting("cluster", DELETE), "missing key 'cluster'"),
    (setting("clusters", "x"), "unknown key 'clusters'"),
    (setting("cluster", ""), "cluster: expected a non-empty string, got ''"),
    (setting("prices", {"h100": -1}), "prices.h100: expected >= 0, got -1"),
    (setting("partition_prices", {"gpu": "cheap"}), "partition_prices.gpu: expected a number, got 'cheap'"),
    (setting("catalog", {"a10g": {"match": ["A10G"]}}),
     "catalog.a10g.match: expected a number or true/false, got [\"A10G\"]"),
    (setting("catalog", {"a10g": 24}), "catalog.a10g: expected an object, got 24"),
    (setting("nodes", {}), "nodes: expected a list, got {}"),
    # nodes
    (setting("nodes[1].name", "gpu01"), "nodes[1].name: 'gpu01' repeats nodes[0]"),
    (setting("nodes[1].name", "gpu 2"), "nodes[1].name: expected a host name like 'gpu01', got 'gpu 2'"),
    (setting("nodes[0].gpus", -1), "nodes[0].gpus: expected >= 0, got -1"),
    (setting("nodes[0].gpus", 8.0), "nodes[0].gpus: expected an integer, got 8.0"),
    (setting("nodes[0].gpu_type", DELETE), "nodes[0]: missing key 'gpu_type'"),
    # jobs
    (setting("jobs[0].user", DELETE), "jobs[0]: missing key 'user'"),
    (setting("jobs[0].start", DELETE), "jobs[0]: missing key 'start'"),
    (several(setting("jobs[0].state", "RUNNING"), setting("jobs[0].node", DELETE)), "jobs[0]: missing key 'node'"),
    (setting("jobs[0].end", DELETE), "jobs[0]: missing key 'end'"),
    (setting("jobs[0].state", "DONE"), "jobs[0].state: expected one of CANCELLED, COMPLETED, FAILED, NODE_FAIL, "
                                       "OUT_OF_MEMORY, PENDING, PREEMPTED, RUNNING, TIMEOUT, got 'DONE'"),
    (setting("jobs[0].job_id", 0), "jobs[0].job_id: expected >= 1, got 0"),
    (setting("jobs[0].job_id", "100"), "jobs[0].job_id: expected an integer, got '100'"),
    (several(setting("jobs[3].job_id", 101), setting("jobs[3].submit", "2026-11-22T01:00:00")),
     "jobs[3].job_id: 101 repeats jobs[1] (same submit)"),
    (setting("jobs[0].eligible", "2026-11-21T00:59:00"), "jobs[0].eligible: before submit"),
    (setting("jobs[0].eligible", "2026-11-21T02:00:01"), "jobs[0].start: before eligible"),
    (setting("jobs[0].submit", "2026-11-21 25:00"),
     "jobs[0].submit: expected an ISO-8601 time like '2026-11-27T02:00:00', got '2026-11-21 25:00'"),
    (setting("jobs[0].submit", 1795700000), "jobs[0].submit: expected an ISO-8601 time, got 1795700000"),
    (setting("jobs[0].start", "2026-11-21T02:00:00.5"),
     "jobs[0].start: expected whole seconds, got '2026-11-21T02:00:00.5'"),
    (setting("jobs[0].exit_code", "1"), "jobs[0].exit_code: expected 'N:M' like '1:0', got '1'"),
    (setting("jobs[0].exit_signal", 300), "jobs[0].exit_signal: expected 0..255, got 300"),
    (setting("jobs[0].cpus", 0), "jobs[0].cpus: expected >= 1, got 0"),
    (setting("jobs[0].cpu_util", 1.5), "jobs[0].cpu_util: expected 0..1, got 1.5"),
    (setting("jobs[0].sampled", "no"), "jobs[0].sampled: expected true or false, got 'no'"),
    (setting("jobs[0].timelimit", 0), "jobs[0].timelimit: expected >= 1, got 0"),
    (setting("jobs[0].restarts", -1), "jobs[0].restarts: expected >= 0, got -1"),
    (setting("jobs[0].req_gpus", 8), "jobs[0].req_gpus: 8, but gpu_indices holds 4"),
    (setting("jobs[0].gpu_indices", [0, 1, 1, 4, 5]), "jobs[0].gpu_indices: 1 named twice"),
    (setting("jobs[0].gpu_indices", [0, "1"]), "jobs[0].gpu_indices[1]: expected an integer, got '1'"),
    (several(setting("jobs[0].node", "cpu01"), setting("jobs[0].gpu_load", [])),
     "jobs[0].gpu_indices: 0 is not a GPU of cpu01 (it has none)"),
    (several(setting("jobs[1].submit", "2026-11-21T01:00:00"), setting("jobs[1].start", "2026-11-21T03:59:59")),
     "jobs[1].gpu_indices: GPU 0 of gpu01 is also held by jobs[0] (job 100) at that time"),
    # never started
    (several(setting("jobs[0].state", "PENDING"), setting("jobs[0].start", DELETE)),
     "jobs[0].end: a PENDING job has no end"),
    (setting("jobs[0].state", "PENDING"), "jobs[0].start: a PENDING job has no start"),
    (several(setting("jobs[0].state", "CANCELLED"), setting("jobs[0].start", DELETE)),
     "jobs[0].node: a job cancelled before it started (no start) has no node"),
    (several(setting("jobs[0].state", "PENDING"), setting("jobs[0].start", DELETE), setting("jobs[0].end", DELETE),
             setting("jobs[0].node", DELETE)),
     "jobs[0].gpu_indices: a PENDING job holds no GPUs"),
    (several(setting("jobs[0].state", "CANCELLED"), setting("jobs[0].start", DELETE), setting("jobs[0].node", DELETE),
             setting("jobs[0].gpu_indices", DELETE), setting("jobs[0].gpu_load", DELETE),
             setting("jobs[0].end", "2026-11-21T00:00:00")),
     "jobs[0].end: before submit"),
    # loads
    (setting("jobs[4].gpu_load[1].gpus", [1]), "jobs[4].gpu_load[1].gpus: 1 is already in gpu_load[0]"),
    (setting("jobs[4].gpu_load[1].gpus", [4, 4]), "jobs[4].gpu_load[1].gpus: 4 named twice"),
    (setting("jobs[4].gpu_load[1].gpus", []), "jobs[4].gpu_load[1].gpus: expected a non-empty list of GPU indices, "
                                              "got []"),
    (setting("jobs[4].gpu_load[1].gpus", DELETE), "jobs[4].gpu_load[1]: missing key 'gpus'"),
    (setting("jobs[4].gpu_load[1].util", True), "jobs[4].gpu_load[1].util: expected a number, got true"),
    (setting("jobs[4].gpu_load[1].util", float("nan")), "jobs[4].gpu_load[1].util: expected a number, got NaN"),
    (setting("jobs[4].gpu_load[1].util", []), "jobs[4].gpu_load[1].util: expected a number or a non-empty list of "
                                              "phases"),
    (setting("jobs[4].gpu_load[1].util", [{"seconds": 0, "util": 5}]),
     "jobs[4].gpu_load[1].util[0].seconds: expected > 0, got 0"),
    (setting("jobs[4].gpu_load[1].util", [{"seconds": 60}]), "jobs[4].gpu_load[1].util[0]: missing key 'util'"),
    (setting("jobs[4].gpu_load[1].util", [{"seconds": 60, "util": 5, "utl": 1}]),
     "jobs[4].gpu_load[1].util[0]: unknown key 'utl'"),
    (setting("jobs[4].gpu_load[1].util_jitter", -1), "jobs[4].gpu_load[1].util_jitter: expected 0..100, got -1"),
    (setting("jobs[4].gpu_load[1].mem_gib", -0.5), "jobs[4].gpu_load[1].mem_gib: expected >= 0, got -0.5"),
    (setting("jobs[4].gpu_load[1].mem_util", 101), "jobs[4].gpu_load[1].mem_util: expected 0..100, got 101"),
    (setting("jobs[4].gpu_load[1].process", 1), "jobs[4].gpu_load[1].process: expected true or false, got 1"),
    (setting("jobs[4].gpu_load[1].power_frac", 25), "jobs[4].gpu_load[1].power_frac: expected 0..1, got 25"),
    (setting("jobs[4].gpu_load[1].tensor_active", -0.1),
     "jobs[4].gpu_load[1].tensor_active: expected 0..1, got -0.1"),
    (setting("jobs[4].gpu_load", {"gpus": [0]}), "jobs[4].gpu_load: expected a list, got {\"gpus\": [0]}"),
    (several(setting("jobs[4].node", "gpu02"), setting("jobs[4].gpu_indices", [0]),
             setting("jobs[4].gpu_load", [{"gpus": [0], "mem_gib": 30}])),
     "jobs[4].gpu_load[0].mem_gib: 30 exceeds the a10g's 24 GiB"),
]


@pytest.mark.parametrize(("mutate", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_messages(mutate, message: str) -> None:
    doc = base()
    parse_scenario(copy.deepcopy(doc))  # the base is valid
    mutate(doc)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (f"{info.value.path}: {info.value.problem}" if info.value.path else info.value.problem)


@pytest.mark.parametrize(("text", "message"), [
    ('{"cluster": "sim",\n  "nodes": [}', "line 2 column 13: Expecting value"),
    ("", "line 1 column 1: Expecting value"),
    ('{"cluster": "s", "nodes": [], "jobs": []} x', "line 1 column 43: Extra data"),
    ("[1]", "expected a JSON object at the top level, got [1]"),
    ('{"cluster": "s", "nodes": [], "jobs": [], "cluster": "t"}', "key 'cluster' given twice"),
    ('{"cluster": "s", "nodes": [{"name": "n", "gpu_type": "h100", "gpus": 1, "gpus": 2}], "jobs": []}',
     "nodes[0]: key 'gpus' given twice"),
    ('{"cluster": "s", "prices": {"h100": Infinity}, "nodes": [], "jobs": []}',
     "prices.h100: expected a number, got Infinity"),
])
def test_text_errors(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(text)
    assert str(info.value) == message


# ---- times ----

@pytest.mark.parametrize(("text", "seconds"), [
    ("2026-11-27T02:00:00", 1795744800),          # no zone: UTC
    ("2026-11-27 02:00:00", 1795744800),
    ("2026-11-27T02:00:00Z", 1795744800),
    ("2026-11-27T02:00:00+00:00", 1795744800),
    ("2026-11-27T03:00:00+01:00", 1795744800),    # the zone is honoured
    ("2026-11-26T21:00:00-05:00", 1795744800),
    ("2026-11-27T07:30:00+05:30", 1795744800),
    ("2026-11-27", 1795737600),                   # midnight UTC
])
def test_iso_times(text: str, seconds: int) -> None:
    doc = json.loads(DESIGN_EXAMPLE)
    job = doc["jobs"][0]
    job.update(submit=text, start=text, end=text)
    parsed = parse_scenario(doc).jobs[0]
    assert (parsed.submit, parsed.start, parsed.end) == (seconds, seconds, seconds)


@given(st.integers(0, 4_000_000_000), st.integers(-14 * 60, 14 * 60))
def test_time_round_trip(seconds: int, offset_min: int) -> None:
    zone = timezone(timedelta(minutes=offset_min))
    text = datetime.fromtimestamp(seconds, zone).isoformat()
    doc = {"cluster": "c", "nodes": [], "jobs": [{"job_id": 1, "user": "u", "submit": text, "state": "PENDING"}]}
    assert parse_scenario(doc).jobs[0].submit == seconds


# ---- spans and the live form ----

def test_spans_phases_by_hand() -> None:
    load = Load(gpus=(0,), util=(Phase(600, 90), Phase(300, 0)))
    assert list(iter_spans(load, 1000, 3000)) == [(600, 90), (300, 0), (600, 90), (300, 0), (200, 90)]


def test_spans_cut_inside_the_second_phase_and_exact_cycles() -> None:
    load = Load(gpus=(0,), util=(Phase(600, 90), Phase(300, 0)))
    assert list(iter_spans(load, 0, 700)) == [(600, 90), (100, 0)]
    assert list(iter_spans(load, 0, 1800)) == [(600, 90), (300, 0), (600, 90), (300, 0)]
    assert list(iter_spans(load, 0, 100)) == [(100, 90)]
    assert list(iter_spans(load, 5, 5)) == []


def test_spans_constant_util_is_one_span_whatever_the_jitter() -> None:
    assert list(iter_spans(Load(gpus=(0,), util=85.0, util_jitter=10.0), 0, 6 * 3600)) == [(21600, 85)]
    with pytest.raises(ValueError):
        list(iter_spans(Load(gpus=(0,), util=85.0), 10, 5))


@given(st.lists(st.tuples(st.floats(10, 5000), st.floats(0, 100)), min_size=1, max_size=5),
       st.integers(0, 100_000))
@settings(max_examples=200)
def test_spans_cover_the_job(phases: list[tuple[float, float]], duration: int) -> None:
    load = Load(gpus=(0,), util=tuple(Phase(s, u) for s, u in phases))
    spans = list(iter_spans(load, 1000, 1000 + duration))
    assert sum(s for s, _ in spans) == pytest.approx(duration, abs=1e-6 * max(1, duration))
    assert all(s > 0 for s, _ in spans)
    for i, (seconds, util) in enumerate(spans[:-1]):  # every span but the last is a whole phase, in order
        assert (seconds, util) == phases[i % len(phases)]


def test_live_load_relative_indices() -> None:
    doc = json.loads(DESIGN_EXAMPLE)
    doc["jobs"][0]["gpu_indices"] = [6, 2, 3, 5]
    doc["jobs"][0]["gpu_load"] = [
        {"gpus": [5, 2], "util": [{"seconds": 600, "util": 90}, {"seconds": 300, "util": 0}], "mem_gib": 40,
         "power_frac": 0.5, "sm_active": 0.4},
        {"gpus": [6], "util": 0, "mem_gib": 0.5, "process": True, "mem_util": 0},
    ]
    job = parse_scenario(doc).jobs[0]
    assert job.gpu_indices == (2, 3, 5, 6)
    assert live_load(job) == [
        {"gpus": [0, 2], "util": [{"seconds": 600, "util": 90}, {"seconds": 300, "util": 0}], "util_jitter": 0,
         "mem_gib": 40, "process": True, "power_frac": 0.5, "sm_active": 0.4},
        {"gpus": [3], "util": 0, "util_jitter": 0, "mem_gib": 0.5, "process": True, "mem_util": 0},
    ]
    json.dumps(live_load(job))


def test_live_load_speaks_fakegpu_works_vocabulary() -> None:
    """Whatever keys fakegpu-work accepts today (it rejects unknown ones), live_load emits no other."""
    source = (Path(__file__).resolve().parents[2] / "docker-slurm" / "fakegpu-work").read_text()
    accepted: set[str] = set()
    for name in ("LOAD_KEYS", "FRACTION_KEYS"):
        found = re.search(rf"^{name} = [{{(](.*?)[)}}]$", source, re.M)
        accepted |= set(re.findall(r'"(\w+)"', found.group(1))) if found else set()
    assert {"gpus", "util", "process"} <= accepted
    doc = json.loads(DESIGN_EXAMPLE)
    doc["jobs"][0]["gpu_load"][1].update(power_frac=0.1, sm_active=0, tensor_active=0, dram_active=0, mem_util=0)
    for entry in live_load(parse_scenario(doc).jobs[0]):
        assert set(entry) <= accepted


# ---- hypothesis: arbitrary valid documents, and one unknown key ----

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
T0 = 1_790_000_000


def iso(seconds: int, offset_min: int) -> str:
    return datetime.fromtimestamp(seconds, timezone(timedelta(minutes=offset_min))).isoformat()


@st.composite
def valid_docs(draw) -> tuple[dict, dict]:
    """(document, a few expected values) with every optional key sometimes present."""
    zone = st.sampled_from([0, 60, -300, 330])
    nodes = []
    for i in range(draw(st.integers(1, 3))):
        node = {"name": f"gpu{i:02d}", "gpu_type": draw(st.sampled_from(["h100", "a10g", "l40s"])),
                "gpus": draw(st.integers(0, 8))}
        if draw(st.booleans()):
            node["partition"] = draw(st.sampled_from(["gpu", "big", "inference"]))
        nodes.append(node)
    doc: dict = {"cluster": draw(names), "nodes": nodes, "jobs": []}
    if draw(st.booleans()):
        doc["prices"] = {"h100": draw(st.floats(0, 10)), "default": 2.0}
    if draw(st.booleans()):
        doc["partition_prices"] = {"gpu": draw(st.floats(0, 10))}
    if draw(st.booleans()):
        doc["catalog"] = {"a10g": {"mem_gib": 24, "tflops": 125, "mig": False}}
    expect: dict = {"submits": []}
    count = draw(st.integers(0, 5))
    for k in range(count):
        state = draw(st.sampled_from(sorted(JOB_STATES)))
        submit = T0 + k * 86400 + draw(st.integers(0, 3600))  # a day each: no GPU is shared
        job: dict = {"job_id": draw(st.integers(1, 10**9)), "user": draw(names), "submit": iso(submit, draw(zone)),
                     "state": state}
        expect["submits"].append(submit)
        eligible = submit + draw(st.integers(0, 600))
        if draw(st.booleans()):
            job["eligible"] = iso(eligible, draw(zone))
        else:
            eligible = submit
        for key, strategy in (("name", names), ("account", names), ("partition", names),
                              ("exit_code", st.sampled_from(["0:0", "1:0", "0:15", "137:9"])),
                              ("exit_signal", st.integers(0, 255)), ("cpus", st.integers(1, 256)),
                              ("cpu_util", st.floats(0, 1)), ("sampled", st.booleans()),
                              ("timelimit", st.integers(1, 10**5)), ("restarts", st.integers(0, 5)),
                              ("comment", st.text(max_size=20))):
            if draw(st.booleans()):
                job[key] = draw(strategy)
        never = state == "PENDING" or (state == "CANCELLED" and draw(st.booleans()))
        if never:
            if draw(st.booleans()):
                job["req_gpus"] = draw(st.integers(0, 16))
            if draw(st.booleans()):
                job["gpu_indices"] = []
            if state == "CANCELLED" and draw(st.booleans()):
                job["end"] = iso(submit + draw(st.integers(0, 7200)), draw(zone))
        else:
            node = draw(st.sampled_from(nodes))
            job["node"] = node["name"]
            start = eligible + draw(st.integers(0, 3600))
            job["start"] = iso(start, draw(zone))
            if state != "RUNNING" or k < count - 1 or draw(st.booleans()):  # no end: holds its GPUs on
                job["end"] = iso(start + draw(st.integers(0, 40000)), draw(zone))
            gpus = draw(st.lists(st.integers(0, node["gpus"] - 1), unique=True)) if node["gpus"] else []
            if gpus or draw(st.booleans()):
                job["gpu_indices"] = gpus
            if draw(st.booleans()):
                job["req_gpus"] = len(gpus)
            loads, rest = [], list(draw(st.permutations(gpus)))
            while rest and draw(st.booleans()):
                n = draw(st.integers(1, len(rest)))
                loads.append(draw(a_load(rest[:n])))
                rest = rest[n:]
            if loads or draw(st.booleans()):
                job["gpu_load"] = loads
        doc["jobs"].append(job)
    return doc, expect


@st.composite
def a_load(draw, gpus: list[int]) -> dict:
    load: dict = {"gpus": gpus}
    if draw(st.booleans()):
        load["util"] = draw(st.one_of(
            st.integers(0, 100), st.floats(0, 100),
            st.lists(st.fixed_dictionaries({"seconds": st.floats(0.1, 5000), "util": st.floats(0, 100)}),
                     min_size=1, max_size=3)))
    for key, strategy in (("util_jitter", st.floats(0, 100)), ("mem_gib", st.floats(0, 24)),
                          ("mem_util", st.floats(0, 100)), ("process", st.booleans()),
                          ("power_frac", st.floats(0, 1)), ("sm_active", st.floats(0, 1)),
                          ("tensor_active", st.floats(0, 1)), ("dram_active", st.floats(0, 1))):
        if draw(st.booleans()):
            load[key] = draw(strategy)
    return load


def strict_objects(doc: dict) -> list[tuple[str, dict]]:
    """Every object whose keys are a fixed vocabulary, with its path (prices and catalog take any key)."""
    found: list[tuple[str, dict]] = [("", doc)]
    found += [(f"nodes[{i}]", n) for i, n in enumerate(doc["nodes"])]
    for i, job in enumerate(doc["jobs"]):
        found.append((f"jobs[{i}]", job))
        for k, load in enumerate(job.get("gpu_load", [])):
            found.append((f"jobs[{i}].gpu_load[{k}]", load))
            if isinstance(load.get("util"), list):
                found += [(f"jobs[{i}].gpu_load[{k}].util[{p}]", ph) for p, ph in enumerate(load["util"])]
    return found


@given(valid_docs())
@settings(max_examples=300)
def test_valid_documents_load(drawn: tuple[dict, dict]) -> None:
    doc, expect = drawn
    text = json.dumps(doc)
    sc = load_scenario(text)
    assert sc == parse_scenario(json.loads(text))
    assert [j.submit for j in sc.jobs] == expect["submits"]
    assert len(sc.jobs) == len(doc["jobs"]) and len(sc.nodes) == len(doc["nodes"])
    for job in sc.jobs:
        assert (job.start is None) == (job.node is None)
        assert job.submit <= job.eligible
        if job.start is not None:
            assert job.eligible <= job.start and (job.end is None or job.start <= job.end)
            assert job.req_gpus == len(job.gpu_indices)
            assert len(live_load(job)) == len(job.gpu_load)
        named = [g for load in job.gpu_load for g in load.gpus]
        assert len(named) == len(set(named)) and set(named) <= set(job.gpu_indices)


unknown_keys = names.filter(lambda k: k not in {"cluster", "prices", "partition_prices", "catalog", "nodes", "jobs",
                                                "name", "gpu_type", "gpus", "partition", "seconds", "util",
                                                *LOAD_KEYS}
                            and k not in {"job_id", "user", "account", "node", "gpu_indices", "req_gpus", "submit",
                                          "eligible", "start", "end", "state", "exit_code", "exit_signal", "cpus",
                                          "cpu_util", "sampled", "timelimit", "restarts", "comment", "gpu_load"})


@given(valid_docs(), st.data(), unknown_keys)
@settings(max_examples=300)
def test_an_unknown_key_is_named_with_its_path(drawn: tuple[dict, dict], data: st.DataObject, key: str) -> None:
    doc, _ = drawn
    path, target = data.draw(st.sampled_from(strict_objects(doc)))
    target[key] = data.draw(st.one_of(st.integers(), names, st.none()))
    with pytest.raises(ScenarioError) as info:
        load_scenario(json.dumps(doc))
    assert str(info.value) == (f"{path}: unknown key {key!r}" if path else f"unknown key {key!r}")


# ---- examples/ ----

SCENARIOS = sorted(EXAMPLES.glob("*/scenario.json"))


def test_examples_exist() -> None:
    assert {p.parent.name for p in SCENARIOS} == {"eight-asked-three-used", "batch-of-one", "classifier-on-h100",
                                                  "gaps-2am"}


def plain_totals(sc: Scenario) -> tuple[float, float]:
    """GPU-hours and spend: GPUs x hours x the scenario's price for the node's type."""
    hours = spend = 0.0
    for job in sc.jobs:
        if job.start is None:
            continue
        h = len(job.gpu_indices) * (job.end - job.start) / 3600
        hours += h
        spend += h * sc.prices[sc.node(job.node).gpu_type]
    return hours, spend


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.parent.name for p in SCENARIOS])
def test_example_loads_and_matches_its_readme(path: Path) -> None:
    sc = load_scenario(path.read_text())
    assert all(sc.node(j.node).gpu_type in sc.prices for j in sc.jobs if j.node)  # explicit prices for every job
    hours, spend = plain_totals(sc)
    readme = (path.parent / "README.md").read_text()
    assert f"**Total: {hours:.2f} GPU-hours, ${spend:,.2f}**" in readme
    for job in sc.jobs:  # every job's expected cost is in the README
        assert re.search(rf"\b{job.job_id}\b", readme), job.job_id


def test_examples_cover_a_cpu_job_and_a_job_cancelled_while_pending() -> None:
    jobs = [j for p in SCENARIOS for j in load_scenario(p.read_text()).jobs]
    assert any(j.started and j.gpu_indices == () and j.cpus == 16 for j in jobs)
    assert any(j.state == "CANCELLED" and not j.started for j in jobs)


# ---- examples/cluster-week ----

WEEK_DIR = EXAMPLES / "cluster-week"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("cluster_week_generate", WEEK_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def week_text(generator) -> str:
    return generator.dumps(generator.generate(7))


def readme_blocks() -> tuple[str, str]:
    """The README's independent snippet and the output it states for seed 7."""
    text = (WEEK_DIR / "README.md").read_text()
    section = text.split("## Totals for seed 7", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    output = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return code, output


def test_week_is_deterministic(generator, week_text: str) -> None:
    assert generator.dumps(generator.generate(7)) == week_text
    assert generator.dumps(generator.generate(8)) != week_text


def test_week_loads_and_books_no_gpu_twice(week_text: str) -> None:
    sc = load_scenario(week_text)
    assert len(sc.jobs) >= 2000
    assert sum(n.gpus for n in sc.nodes) == 100
    held: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for job in sc.jobs:
        if job.start is not None:
            for gpu in job.gpu_indices:
                held.setdefault((job.node, gpu), []).append((job.start, job.end))
    for spans in held.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    states = {j.state for j in sc.jobs}
    assert {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"} <= states
    assert any(not j.sampled for j in sc.jobs)
    assert any(j.state == "CANCELLED" and not j.started for j in sc.jobs)
    assert any(j.started and not j.gpu_indices for j in sc.jobs)
    assert any(j.restarts for j in sc.jobs)


def test_week_totals_are_the_readmes(week_text: str, tmp_path: Path) -> None:
    code, output = readme_blocks()
    (tmp_path / "week.json").write_text(week_text)
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert ran.stdout == output
    stated = dict(re.findall(r"^(.+?)\s{2,}(\S+)", output, re.M))
    sc = load_scenario(week_text)
    hours, spend = plain_totals(sc)
    assert stated["jobs"] == str(len(sc.jobs))
    assert stated["completed jobs"] == str(sum(j.state == "COMPLETED" for j in sc.jobs))
    assert stated["GPUs"] == str(sum(n.gpus for n in sc.nodes))
    assert stated["GPU-hours"] == f"{hours:.2f}"
    assert stated["spend USD"] == f"{spend:.2f}"
    for readme in (WEEK_DIR / "README.md", EXAMPLES / "README.md"):
        text = readme.read_text()
        assert f"{len(sc.jobs):,} jobs" in text and f"${spend:,.2f}" in text, readme


def test_week_cli_writes_the_same(generator, week_text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert generator.main(["--seed", "7"]) == 0
    assert capsys.readouterr().out == week_text
