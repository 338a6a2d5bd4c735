"""Hook environment parsing, the monitoring decision, and output-path patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piqc_slurm.hooks.context import ContextError, decide_monitor, from_env, is_batch_host, parse_gpus
from piqc_slurm.hooks.userreport import PatternError, PatternInputs, expand_output_path

pytestmark = pytest.mark.unit

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


def test_opt_out_refused_by_policy_and_site_switch():
    d = decide_monitor((0,), "off", **{**SITE, "allow_opt_out": False})
    assert d.enabled and "refused" in d.note
    assert decide_monitor((0,), None, **{**SITE, "enabled": False}).mode == "disabled"
    assert decide_monitor((), "5", **SITE).mode == "cpu-only"


def test_batch_host_is_first_node():
    ctx = from_env({**PROLOG_ENV, "SLURM_NODELIST": "gpu[01-03]", "SLURMD_NODENAME": "gpu01"})
    assert is_batch_host(ctx)
    assert not is_batch_host(from_env({**PROLOG_ENV, "SLURM_NODELIST": "gpu[01-03]", "SLURMD_NODENAME": "gpu02"}))


V = PatternInputs(job_id=42, user="alice", node="gpu01", work_dir="/home/alice/run")


@pytest.mark.parametrize("pattern, expected", [
    ("/home/alice/out-%j.txt", "/home/alice/out-42.txt"),
    ("out-%u-%N-%j.log", "/home/alice/run/out-alice-gpu01-42.log"),
    ("o-%5j", "/home/alice/run/o-00042"),
    ("100%%-%j", "/home/alice/run/100%-42"),
    ("/x/a\\%j", "/x/a%j"),
    (None, "/home/alice/run/slurm-42.out"),
])
def test_expand_output_path(pattern, expected):
    assert expand_output_path(pattern, V) == expected


def test_expand_array_defaults():
    v = PatternInputs(job_id=57, user="a", node="n", work_dir="/w", array_job_id=50, array_task_id=7)
    assert expand_output_path(None, v) == "/w/slurm-50_7.out"
    assert expand_output_path("r-%A_%a.out", v) == "/w/r-50_7.out"


@pytest.mark.parametrize("pattern", ["out-%x.txt", "step-%s", "/dev/null"])
def test_unexpandable_patterns_mean_no_report(pattern):
    with pytest.raises(PatternError):
        expand_output_path(pattern, V)
