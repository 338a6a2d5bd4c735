"""Run-dir files: context.json (in), checkpoint.json and timeline.jsonl (out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piqc_slurm.errors import PiqcError, SpoolFormatError
from piqc_slurm.sampler import CheckpointError, ContextError, load_checkpoint, load_context
from piqc_slurm.sampler.aggregate import GpuAggregate, Sample
from piqc_slurm.sampler.checkpoint import (
    CHECKPOINT_FORMAT,
    aggregates,
    append_lines,
    build_checkpoint,
    read_timeline,
    sampler_pid,
    validate_checkpoint,
    write_atomic,
    write_checkpoint,
)
from piqc_slurm.sampler.context import Context, context_from_dict
from piqc_slurm.sampler.source import DeviceInfo

pytestmark = pytest.mark.unit

CONTEXT = {"format": "piqc-context/1", "cluster": "c1", "job_id": 42, "restart_count": 1, "node": "gpu01",
           "uid": 1000, "user": "alice", "gpus": [0, 3], "interval": 1, "process_interval": 10.0,
           "checkpoint_interval": 30.0, "timeline_bin": 60, "active_util": 5.0, "orphan_check": 60.0,
           "started": 1_764_000_000.5}


def checkpoint_doc(**kw: Any) -> dict[str, Any]:
    agg = GpuAggregate(1.0)
    agg.add(0.0, Sample(util=50.0, power_w=100.0, energy_mj=1000.0))
    agg.add(1.0, Sample(util=70.0, power_w=120.0, energy_mj=121_000.0))
    dev = DeviceInfo(minor=3, index=2, uuid="GPU-x", name="NVIDIA A10G", mem_total_mib=23028.0,
                     power_limit_w=300.0)
    lost = DeviceInfo(minor=5, lost=True, error="minor 5 not found among 4 NVML devices")
    base: dict[str, Any] = dict(job_id=42, started=1.0, updated=2.0, final=False, exit_reason=None,
                                nvml_ok=True, nvml_error=None, driver_version="550.54.15", interval=1.0,
                                gpus=[(dev, agg), (lost, GpuAggregate(1.0))], timeline_bins=3)
    base.update(kw)
    return build_checkpoint(**base)


# ---- context ----

def test_context_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "context.json"
    path.write_text(json.dumps(CONTEXT))
    ctx = load_context(path)
    assert ctx.gpus == (0, 3) and ctx.interval == 1.0 and isinstance(ctx.interval, float)
    # max_device_errors and watch came later: a context without them (an older Prolog's) means 5, off
    assert json.loads(ctx.to_json()) == {**CONTEXT, "interval": 1.0, "max_device_errors": 5, "watch": None}
    assert context_from_dict(json.loads(ctx.to_json())) == ctx
    assert context_from_dict({**CONTEXT, "max_device_errors": 2}).max_device_errors == 2
    watched = context_from_dict({**CONTEXT, "watch": {"idle_minutes": 0.5}})
    assert watched.watch.idle_minutes == 0.5 and watched.watch.gpu_idle_minutes == 60.0
    assert context_from_dict(json.loads(watched.to_json())) == watched
    with pytest.raises(ContextError, match="watch: unknown key"):
        context_from_dict({**CONTEXT, "watch": {"idle": 1}})


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "piqc-context/2"}, "unknown context format"),
    ({"extra": 1}, r"unknown key\(s\) extra"),
    ({"job_id": "42"}, "job_id"),
    ({"job_id": True}, "job_id"),
    ({"gpus": [0, 0]}, "named twice"),
    ({"gpus": "0,1"}, "gpus"),
    ({"interval": 0}, "interval"),
    ({"process_interval": -1}, "process_interval"),
    ({"timeline_bin": 0}, "timeline_bin"),
    ({"max_device_errors": 0}, "max_device_errors"),
    ({"max_device_errors": 2.5}, "max_device_errors"),
    ({"active_util": 101}, "active_util"),
    ({"started": None}, "started"),
    ({"user": 5}, "user"),
])
def test_context_rejects(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        context_from_dict({**CONTEXT, **change}, "ctx.json")


def test_context_missing_key_and_file(tmp_path: Path) -> None:
    doc = dict(CONTEXT)
    del doc["node"]
    with pytest.raises(ContextError, match="missing key.s. node"):
        context_from_dict(doc)
    with pytest.raises(ContextError, match="cannot read"):
        load_context(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ContextError, match="invalid JSON"):
        load_context(tmp_path / "bad.json")
    assert issubclass(ContextError, PiqcError)


# ---- checkpoint ----

def test_checkpoint_shape_exactly() -> None:
    doc = checkpoint_doc()
    assert list(doc) == ["format", "job_id", "started", "updated", "final", "exit_reason", "nvml",
                         "interval", "gpus", "timeline_bins", "partial_reason"]
    assert doc["partial_reason"] is None
    assert doc["format"] == CHECKPOINT_FORMAT == "piqc-checkpoint/1"
    assert list(doc["nvml"]) == ["ok", "error", "driver_version"]
    assert [list(g) for g in doc["gpus"]] == [["minor", "index", "uuid", "name", "mem_total_mib",
                                               "power_limit_w", "lost", "error", "errors", "skipped",
                                               "last_error", "agg"]] * 2
    assert doc["gpus"][0]["agg"]["energy_j"] == 120.0


def test_write_and_load(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    write_checkpoint(path, checkpoint_doc())
    doc = load_checkpoint(path)
    assert doc == json.loads(json.dumps(checkpoint_doc()))
    assert (path.stat().st_mode & 0o777) == 0o600
    assert list(tmp_path.iterdir()) == [path]                 # no temp file left
    aggs = aggregates(doc)
    assert sorted(aggs) == [3, 5] and aggs[3].samples == 2 and aggs[5].samples == 0


def test_write_atomic_replaces(tmp_path: Path) -> None:
    p = tmp_path / "f"
    write_atomic(p, b"one")
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and len(list(tmp_path.iterdir())) == 1


def mutated(fn) -> dict[str, Any]:
    doc = json.loads(json.dumps(checkpoint_doc()))
    fn(doc)
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (mutated(lambda d: d.update(format="piqc-checkpoint/2")), "unknown checkpoint format 'piqc-checkpoint/2'"),
    (mutated(lambda d: d.pop("format")), "unknown checkpoint format None"),
    (mutated(lambda d: d.update(job_id="42")), "job_id"),
    (mutated(lambda d: d.update(final="no")), "final"),
    (mutated(lambda d: d.pop("exit_reason")), "exit_reason"),
    (mutated(lambda d: d.update(nvml={"ok": 1})), "nvml"),
    (mutated(lambda d: d.update(timeline_bins=-1)), "timeline_bins"),
    (mutated(lambda d: d.update(gpus={})), "gpus"),
    (mutated(lambda d: d["gpus"][0].pop("lost")), r"gpus\[0\].lost"),
    (mutated(lambda d: d["gpus"][1].update(minor=None)), r"gpus\[1\].minor"),
    (mutated(lambda d: d["gpus"][0]["agg"].update(util_hist_ms=[1])), r"gpus\[0\].agg: .*util_hist_ms"),
    (mutated(lambda d: d.update(updated=float("nan"))), "updated"),
    (mutated(lambda d: d.update(partial_reason=1)), "partial_reason"),
    (mutated(lambda d: d["gpus"][0].update(errors=-1)), r"gpus\[0\].errors"),
    (mutated(lambda d: d["gpus"][0].update(skipped="3")), r"gpus\[0\].skipped"),
    (mutated(lambda d: d["gpus"][1].update(last_error=7)), r"gpus\[1\].last_error"),
    ([], "not a JSON object"),
])
def test_validate_rejects(doc: Any, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        validate_checkpoint(doc, "x.json")


def test_unknown_extra_keys_are_tolerated() -> None:
    doc = mutated(lambda d: d.update(future_field=1))
    assert validate_checkpoint(doc) is doc


def test_a_checkpoint_from_before_the_error_counts_is_valid() -> None:
    def old(d: dict[str, Any]) -> None:
        d.pop("partial_reason")
        for g in d["gpus"]:
            for key in ("errors", "skipped", "last_error"):
                g.pop(key)
    doc = mutated(old)
    assert validate_checkpoint(doc) is doc


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read") as info:
        load_checkpoint(tmp_path / "missing.json")
    assert info.value.path.endswith("missing.json")
    (tmp_path / "torn.json").write_text('{"format": "piqc-checkpoint/1", "job')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "torn.json")
    assert issubclass(CheckpointError, SpoolFormatError)


@given(st.booleans(), st.one_of(st.none(), st.sampled_from(["SIGTERM", "job gone", "error: x"])),
       st.integers(0, 10**6), st.lists(st.integers(0, 100), max_size=30))
@settings(max_examples=50, deadline=None)
def test_checkpoint_round_trip(final: bool, reason: str | None, bins: int, utils: list[int]) -> None:
    agg = GpuAggregate(0.5)
    for i, u in enumerate(utils):
        agg.add(i * 0.5, Sample(util=float(u)))
    doc = build_checkpoint(job_id=7, started=1.5, updated=9.25, final=final, exit_reason=reason,
                           nvml_ok=True, nvml_error=None, driver_version=None, interval=0.5,
                           gpus=[(DeviceInfo(minor=0), agg)], timeline_bins=bins)
    again = validate_checkpoint(json.loads(json.dumps(doc)))
    assert again == doc
    assert aggregates(again)[0] == agg


# ---- timeline ----

def test_timeline_append_and_torn_tail(tmp_path: Path) -> None:
    p = tmp_path / "timeline.jsonl"
    assert append_lines(p, []) == 0 and not p.exists()
    assert append_lines(p, [{"t": 0, "gpu": 0, "util": 1.0}, {"t": 0, "gpu": 1}]) == 2
    assert append_lines(p, [{"t": 60, "gpu": 0, "util": 2.0}]) == 1
    assert [r["t"] for r in read_timeline(p)] == [0, 0, 60]
    with open(p, "a") as f:
        f.write('{"t": 120, "gp')                          # a crash mid-append
    assert len(read_timeline(p)) == 3
    assert len(read_timeline(p, 2)) == 2                  # the checkpoint's count rules
    assert read_timeline(tmp_path / "none.jsonl") == []


# ---- pid file ----

def test_sampler_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    proc_root = tmp_path / "proc"
    (proc_root / "123").mkdir(parents=True)
    (proc_root / "123" / "cmdline").write_bytes(
        b"/opt/piqc/bin/python\0-m\0piqc_slurm.sampler\0" + bytes(run) + b"\0")
    (proc_root / "124").mkdir()
    (proc_root / "124" / "cmdline").write_bytes(b"bash\0")        # a recycled pid
    assert sampler_pid(run, str(proc_root)) is None               # no pid file
    (run / "sampler.pid").write_text("123\n")
    assert sampler_pid(run, str(proc_root)) == 123
    (run / "sampler.pid").write_text("124\n")
    assert sampler_pid(run, str(proc_root)) is None
    (run / "sampler.pid").write_text("999\n")
    assert sampler_pid(run, str(proc_root)) is None
    (run / "sampler.pid").write_text("junk\n")
    assert sampler_pid(run, str(proc_root)) is None


def test_sampler_usage() -> None:
    r = subprocess.run([sys.executable, "-m", "piqc_slurm.sampler"], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "PIQC_SAMPLER_LOG": "stderr"})
    assert r.returncode == 2 and "usage: python -m piqc_slurm.sampler RUN_DIR" in r.stderr


def test_context_dataclass_defaults_match_config_defaults() -> None:
    from piqc_slurm.config import SCHEMA

    sampler = SCHEMA["sampler"]
    assert isinstance(sampler, dict)
    ctx = Context(cluster="", job_id=1, restart_count=0, node="", uid=0, user="", gpus=())
    for key in ("interval", "process_interval", "checkpoint_interval", "timeline_bin", "active_util",
                "orphan_check", "max_device_errors"):
        assert getattr(ctx, key) == sampler[key].default, key


def test_read_timeline_one_pass_and_line_by_line_agree(tmp_path: Path) -> None:
    """The one-pass parse is taken only for one object per line; anything else is read line by line,
    stopping at the first line that is not JSON and skipping JSON that is not an object."""
    p = tmp_path / "timeline.jsonl"
    p.write_text('{"t": 0, "gpu": 0}\n{"t": 0, "gpu": 1}\n')
    assert read_timeline(p) == [{"t": 0, "gpu": 0}, {"t": 0, "gpu": 1}]
    p.write_text('{"t": 0, "gpu": 0}\n[1, 2]\n{"t": 60, "gpu": 0}\n')          # a list: skipped
    assert read_timeline(p) == [{"t": 0, "gpu": 0}, {"t": 60, "gpu": 0}]
    assert read_timeline(p, 2) == [{"t": 0, "gpu": 0}, {"t": 60, "gpu": 0}]   # the count is of objects
    p.write_text('{"t": 0, "gpu": 0}\n{"t": 6\n{"t": 60, "gpu": 0}\n')         # torn mid-file: stop there
    assert read_timeline(p) == [{"t": 0, "gpu": 0}]
    p.write_text('{"t": 0, "gpu": 0},{"t": 1, "gpu": 0}\n{"t": 60, "gpu": 0}\n')  # two on a line: not JSON
    assert read_timeline(p) == []
    p.write_bytes(b'{"t": 0, "gpu": 0}\n{"t": 60, "n": "\xff"}\n')              # not UTF-8: stop there
    assert read_timeline(p) == [{"t": 0, "gpu": 0}]
