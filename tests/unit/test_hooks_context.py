"""Hook environment parsing, the monitoring decision, and output-path patterns."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piqc_slurm.hooks.context import ContextError, decide_monitor, from_env, is_batch_host, parse_gpus
from piqc_slurm.hooks.userreport import NO_VAL, PatternError, PatternInputs, expand_output_path

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# The Prolog environment of a 2-GPU job as slurmd 22.05.8 passed it (SLURM-FACTS.md).
PROLOG_ENV = {
    "CUDA_VISIBLE_DEVICES": "0,1", "GPU_DEVICE_ORDINAL": "0,1", "SLURMD_NODENAME": "vm",
    "SLURM_CLUSTER_NAME": "piqc", "SLURM_JOB_ID": "42", "SLURM_JOBID": "42", "SLURM_JOB_ACCOUNT": "research",
    "SLURM_JOB_CPUS_PER_NODE": "1", "SLURM_JOB_GID": "1001", "SLURM_JOB_GPUS": "0,1",
    "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_PARTITION": "gpu", "SLURM_JOB_RESTART_COUNT": "0",
    "SLURM_JOB_STDOUT": "/home/u/out-%j.txt", "SLURM_JOB_UID": "1001", "SLURM_JOB_USER": "piqcuser",
    "SLURM_JOB_WORK_DIR": "/home/u", "SLURM_NODELIST": "vm", "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
    "SLURM_UID": "1001",
}

SITE = {"enabled": True, "interval": 1.0, "min_interval": 1.0, "max_interval": 300.0, "allow_opt_out": True}


def test_from_env():
    ctx = from_env(PROLOG_ENV)
    assert (ctx.cluster, ctx.job_id, ctx.node, ctx.gpus, ctx.uid) == ("piqc", 42, "vm", (0, 1), 1001)
    assert ctx.key == "piqc.42.0.vm"


@pytest.mark.parametrize("name, value", [("SLURM_JOB_ID", "42; rm -rf /"), ("SLURM_JOB_ID", ""),
                                         ("SLURMD_NODENAME", "../../etc"), ("SLURM_CLUSTER_NAME", "a/b"),
                                         ("SLURM_JOB_GPUS", "0,x"), ("SLURM_JOB_RESTART_COUNT", "-1")])
def test_hostile_or_broken_env_is_a_context_error(name, value):
    with pytest.raises(ContextError):
        from_env({**PROLOG_ENV, name: value})


@given(st.text(max_size=40))
def test_parse_gpus_never_raises_anything_else(raw):
    try:
        gpus = parse_gpus(raw)
    except ContextError:
        return
    assert all(isinstance(g, int) and g >= 0 for g in gpus)


@pytest.mark.parametrize("value, enabled, interval, mode", [
    (None, True, 1.0, "on"), ("on", True, 1.0, "on"), ("off", False, 1.0, "off"),
    ("5", True, 5.0, "on"), ("0.5", True, 1.0, "on"), ("100000", True, 300.0, "on"),
    ("bogus", True, 1.0, "on"), ("nan", True, 1.0, "on"), ("-3", True, 1.0, "on"), ("inf", True, 1.0, "on"),
])
def test_user_interval_is_revalidated_and_clamped(value, enabled, interval, mode):
    d = decide_monitor((0,), value, **SITE)
    assert (d.enabled, d.interval, d.mode) == (enabled, interval, mode)


@pytest.mark.parametrize("value, interval, nowatch", [
    ("nowatch", 1.0, True), ("on,nowatch", 1.0, True), ("5,NOWATCH", 5.0, True), ("0.5,nowatch", 1.0, True),
    ("5", 5.0, False), ("nowatchx", 1.0, False), (",nowatch", 1.0, True), ("bogus,nowatch", 1.0, True),
])
def test_nowatch_is_a_suffix_or_alone(value, interval, nowatch):
    """The SPANK plugin passes "<seconds>,nowatch"; a hand-set value is parsed the same way (a bad
    interval before it is ignored, as without it)."""
    d = decide_monitor((0,), value, **SITE)
    assert (d.enabled, d.interval, d.mode, d.nowatch) == (True, interval, "on", nowatch)


def test_opt_out_refused_by_policy_and_site_switch():
    d = decide_monitor((0,), "off", **{**SITE, "allow_opt_out": False})
    assert d.enabled and "refused" in d.note
    assert decide_monitor((0,), None, **{**SITE, "enabled": False}).mode == "disabled"
    assert decide_monitor((), "5", **SITE).mode == "cpu-only"


def test_batch_host_is_first_node():
    ctx = from_env({**PROLOG_ENV, "SLURM_NODELIST": "gpu[01-03]", "SLURMD_NODENAME": "gpu01"})
    assert is_batch_host(ctx)
    assert not is_batch_host(from_env({**PROLOG_ENV, "SLURM_NODELIST": "gpu[01-03]", "SLURMD_NODENAME": "gpu02"}))


V = PatternInputs(job_id=42, user="alice", host="gpu01", work_dir="/home/alice/run",
                  array_job_id=0, array_task_id=NO_VAL, job_name="train")


# Hand-computed from fname.c (_create_batch_fname, remove_path_slashes, fname_single_task_io) for
# what sbatch never sends: sbatch makes -o absolute, the recorded cases below are all absolute.
@pytest.mark.parametrize("pattern, expected", [
    ("out-%u-%N-%j.log", "/home/alice/run/out-alice-gpu01-42.log"),
    ("o-%5j", "/home/alice/run/o-00042"),
    ("a\\%j", "/home/alice/runa%j"),          # a backslash: cwd and name joined with no '/'
    ("0", "/home/alice/run/0"),                # one integer naming task 0: the batch step's own
    ("/o/%x-%s-%J-%n-%t", "/o/train-batch-42-0-0"),
    (None, "/home/alice/run/slurm-42.out"),
])
def test_expand_output_path_by_hand(pattern, expected):
    assert expand_output_path(pattern, V) == expected


def test_expand_array_defaults():
    v = PatternInputs(job_id=57, user="a", host="n", work_dir="/w", array_job_id=50, array_task_id=7)
    assert expand_output_path(None, v) == "/w/slurm-50_7.out"
    assert expand_output_path("r-%A_%a.out", v) == "/w/r-50_7.out"


@pytest.mark.parametrize("pattern, inputs, why", [
    ("/o/out-%x.txt", {"job_name": None, "unknown": "no jobinfo file"},
     "uses %x and the job name is unknown: no jobinfo file"),
    ("/o/x-%A_%a.out", {"array_job_id": None, "array_task_id": None, "unknown": "no jobinfo file"},
     "uses %A and the array ids are unknown: no jobinfo file"),
    ("/o/t-%a", {"array_job_id": None, "array_task_id": None}, "uses %a and the array ids are unknown"),
    ("/dev/null", {}, "output goes to '/dev/null': no report"),
    ("5", {}, "names one task: Slurm writes /dev/null"),
    ("rel-%j", {"work_dir": None}, "relative output path and no work dir"),
])
def test_unexpandable_patterns_mean_no_report(pattern, inputs, why):
    with pytest.raises(PatternError, match=re.escape(why)):
        expand_output_path(pattern, dataclasses.replace(V, **inputs))


def test_no_job_info_still_names_what_needs_none():
    """Without the SPANK plugin's file: %j %u %N %n %t %s %J patterns and the plain default still
    expand (the default as slurm-%J.out: a guess, array tasks are not known as such)."""
    v = PatternInputs(job_id=42, user="alice", host="gpu01", work_dir="/w")
    assert expand_output_path("/o/%u-%N-%j-%J-%s-%n-%t.out", v) == "/o/alice-gpu01-42-42-batch-0-0.out"
    assert expand_output_path(None, v) == "/w/slurm-42.out"


RECORDED = json.loads((FIXTURES / "reports" / "22.05.8" / "stdout-patterns.json").read_text())


@pytest.mark.parametrize("case", [c for c in RECORDED["cases"] if c["created"]], ids=lambda c: c["case"])
def test_expand_gives_the_file_slurm_created(case):
    """Real sbatch runs (tests/fixtures/reports/capture.py): the pattern as the hooks saw it, the
    ids as the job itself saw them, and the file Slurm really created for its stdout."""
    array = case["array_task_id"] is not None
    v = PatternInputs(job_id=case["job_id"], user=case["user"], host=case["host"], work_dir=case["work_dir"],
                      array_job_id=case["array_job_id"] if array else 0,
                      array_task_id=case["array_task_id"] if array else NO_VAL, job_name=case["job_name"])
    got = expand_output_path(case["stdout"], v)
    if "/../" in got:  # Slurm does not normalise: the file is where the kernel resolved the path
        assert os.path.normpath(got) == case["created"] and got != case["created"]
    else:
        assert got == case["created"]


def test_the_recorded_cases_cover_every_letter_and_quirk():
    patterns = " ".join(c["stdout"] or "" for c in RECORDED["cases"])
    for piece in ("%A", "%a", "%j", "%J", "%N", "%n", "%s", "%t", "%u", "%x", "%%", "%5j", "%012j", "%4z",
                  "%17", "\\", "\\\\"):
        assert piece in patterns, piece
    assert any(c["stdout"] is None and c["array_task_id"] is not None for c in RECORDED["cases"])
    assert any(c["stdout"] is None and c["array_task_id"] is None for c in RECORDED["cases"])
