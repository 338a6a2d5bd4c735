"""The watch in the sampler's loop (fake clock, scripted GPUs): a job whose GPUs stay idle gets one
notice in its own output file (written as its user), one syslog-format line, its rule state in the
checkpoint and in the Prometheus textfile (parsed with prometheus_client's parser), and the textfile
goes when the sampler ends. Needs root: the notice is written by a child that drops to the job's uid."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_sampler_run import FakeClock, ScriptedSource, context

from piqc_slurm.analyze.rules import Thresholds
from piqc_slurm.config import Config, defaults
from piqc_slurm.sampler import load_checkpoint
from piqc_slurm.sampler.oncall import notice_text, syslog_line
from piqc_slurm.sampler.run import Sampler
from piqc_slurm.sampler.watch import Event, WatchSettings
from piqc_slurm.summary import build as build_summary
from piqc_slurm.usage.catalog import load_catalog

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(os.geteuid() != 0, reason="the notice writer drops root to the job's uid")]
NOBODY = 65534
WALL = 1_700_000_000.0


@pytest.fixture
def job_dir():
    """A spool (SPOOL/run/KEY) and a user directory the unprivileged user can reach."""
    d = Path(tempfile.mkdtemp(prefix="piqc-watch-", dir="/tmp"))
    os.chmod(d, 0o755)
    (d / "user").mkdir()
    os.chown(d / "user", NOBODY, NOBODY)
    run = d / "spool" / "run" / "test.4242.0.n1"
    run.mkdir(parents=True)
    (d / "prom").mkdir()
    yield d, run
    shutil.rmtree(d)


def user_output(d: Path, text: str) -> Path:
    """The job's output file, the user's own (as slurmstepd leaves it)."""
    out = d / "user" / "slurm-4242.out"
    out.write_text(text)
    os.chown(out, NOBODY, NOBODY)
    return out


def job_record(out: Path) -> dict:
    return {"cluster": "test", "job_id": 4242, "restart_count": 0, "node": "n1", "uid": NOBODY, "gid": NOBODY,
            "user": "nobody", "account": "physics", "partition": "gpu", "gpus": [0, 1], "nodelist": "n1",
            "stdout": str(out), "work_dir": str(out.parent), "array_job_id": None, "array_task_id": None,
            "exit_code": None, "spank_monitor": None}


def settings(prom: Path, **kw) -> WatchSettings:
    cfg = Config(defaults())
    return WatchSettings(**{
        "idle_minutes": 0.5, "gpu_idle_minutes": 0.0, "underbatched_minutes": 0.0,
        "thresholds": Thresholds.from_config(cfg)._asdict(), "textfile_dir": str(prom), "textfile_interval": 5.0,
        "prices": {"prices": {"h100": 4.0}, "partition_prices": {}, "usage.cpu_core_hour_price": 0.0},
        "labels": {"account": "physics", "partition": "gpu"}, **kw})


class H100Source(ScriptedSource):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        for d in self._devices.values():
            d.name, d.power_limit_w, d.mem_total_mib = "NVIDIA H100 80GB HBM3", 700.0, 81559.0


def test_idle_gpus_notice_line_checkpoint_and_textfile(job_dir, caplog):
    d, run = job_dir
    out = user_output(d, "training...\n")
    clock = FakeClock(wall=WALL)
    source = H100Source(clock, [0, 1], util=lambda m, t: 0.0)
    seen: list[str] = []

    def look():  # the textfile while the job runs (t = 40.5 s: written every 5 s, last at 40 s; fired at 30)
        seen.append((d / "prom" / "piqc_job_test_4242_0.prom").read_text())

    clock.at(40.5, look)
    clock.at(70.0, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(uid=NOBODY, user="nobody", watch=settings(d / "prom")), source, run, clock=clock,
                      job=job_record(out))
    with caplog.at_level(logging.WARNING, logger="piqc-slurm.sampler"):
        assert sampler.run() == 0

    # idle_minutes 0.5: buckets of 3 s; idle from the first sample (WALL) -> 30 s at WALL + 30
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("piqc-slurm watch ")]
    usd = 2 * 4.0 * 30 / 3600  # two h100 at $4.00/GPU-hour for 30 s
    assert lines == [f"piqc-slurm watch job=4242 user=nobody rule=IDLE_GPUS since=2023-11-14T22:13:20Z "
                     f"usd={usd:.2f} gpus=0,1"]
    text = out.read_text()
    assert text.startswith("training...\n\n[piqc-slurm 2023-11-14T22:13:50Z] IDLE_GPUS on GPUs 0,1 since "
                           "2023-11-14T22:13:20Z: all 2 GPUs active under 5% of the time for 0.5 min.\n")
    assert text.count("IDLE_GPUS on GPUs") == 1 and "scancel 4242" in text
    assert os.stat(out).st_uid == NOBODY

    doc = load_checkpoint(run / "checkpoint.json")
    assert doc["watch"]["fired"] == {"IDLE_GPUS": {"since": WALL, "gpus": [0, 1]}}
    [act] = doc["watch"]["actions"]
    assert act["rule"] == "IDLE_GPUS" and act["notice"] == "ok" and act["usd"] == round(usd, 2)
    # the Epilog's summary carries it to the store (node_summaries.doc) and the digest
    summary = build_summary({**job_record(out), "prolog_time": WALL}, doc, ended=WALL + 70, partial=False,
                            partial_reason=None, monitor="on", interval=1.0, catalog=load_catalog())
    assert summary["watch"] == [act]

    families = {f.name: f for f in text_string_to_metric_families(seen[0])}
    util = families["piqc_gpu_utilization_percent"].samples
    assert {s.labels["gpu"] for s in util} == {"0", "1"} and all(s.value == 0.0 for s in util)
    assert util[0].labels == {"jobid": "4242", "user": "nobody", "account": "physics", "partition": "gpu",
                              "cluster": "test", "gpu": "0", "uuid": "GPU-0", "type": "NVIDIA H100 80GB HBM3"}
    firing = {s.labels["rule"]: s.value for s in families["piqc_job_rule_firing"].samples}
    assert firing == {"IDLE_GPUS": 1.0, "IDLE_GPU": 0.0, "UNDER_BATCHED": 0.0}
    [cost] = families["piqc_job_cost_usd"].samples
    assert cost.value == pytest.approx(2 * 4.0 * 40 / 3600)   # written at 40 s
    idle = {s.labels["gpu"]: s.value for s in families["piqc_gpu_idle_seconds"].samples}
    assert idle == {"0": 40.0, "1": 40.0}
    assert not any((d / "prom").iterdir())   # the job ended: its series are gone


def test_a_job_that_works_after_loading_is_left_alone(job_dir, caplog):
    d, run = job_dir
    out = user_output(d, "")
    clock = FakeClock(wall=WALL)
    source = H100Source(clock, [0, 1], util=lambda m, t: 0.0 if t < 20 else 85.0)
    clock.at(120.0, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(uid=NOBODY, user="nobody", watch=settings(d / "prom")), source, run, clock=clock,
                      job=job_record(out))
    with caplog.at_level(logging.WARNING, logger="piqc-slurm.sampler"):
        assert sampler.run() == 0
    assert out.read_text() == ""
    assert not [r for r in caplog.records if "piqc-slurm watch" in r.getMessage()]
    assert load_checkpoint(run / "checkpoint.json")["watch"] == {"fired": {}, "events": [], "actions": [], "warned": [],
                                                             "cancelled": None}


def test_the_syslog_line_cannot_be_forged_by_a_user_name():
    ev = Event("IDLE_GPUS", WALL + 60, WALL, (0, 1), "x")
    line = syslog_line(7, "eve rule=NONE usd=0\n", ev, None)
    assert line == ("piqc-slurm watch job=7 user=eve_rule_NONE_usd_0_ rule=IDLE_GPUS since=2023-11-14T22:13:20Z "
                    "usd=- gpus=0,1")
    assert re.fullmatch(r"piqc-slurm watch( \w+=\S+)+", line)
    assert "unknown (no price" in notice_text(7, ev, None, 2)


def test_notice_text_names_the_fix():
    ev = Event("IDLE_GPU", WALL + 3600, WALL, (2, 3), "2 of 4 GPUs idle for 60 min while 2 work")
    assert notice_text(9, ev, 12.5, 4) == (
        "\n[piqc-slurm 2023-11-14T23:13:20Z] IDLE_GPU on GPUs 2,3 since 2023-11-14T22:13:20Z: 2 of 4 GPUs idle "
        "for 60 min while 2 work.\n  Spent so far on this job: $12.50 (the nightly report will name this "
        "IDLE_GPUS).\n  Fix: ask for fewer GPUs next time (--gres=gpu:2), or make the code use all of them "
        "(torchrun --nproc-per-node, DDP, or CUDA_VISIBLE_DEVICES per task).\n")
    assert json.dumps(ev.to_dict())


def test_mail_goes_through_the_mail_prog_as_slurmctld_calls_it(job_dir, tmp_path):
    """mail_prog -s SUBJECT USER with the notice on stdin (a stand-in MailProg records its argv)."""
    d, run = job_dir
    got = d / "mail.txt"
    prog = d / "mailprog"
    prog.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {got}\ncat >> {got}\n')
    prog.chmod(0o755)
    out = user_output(d, "")
    clock = FakeClock(wall=WALL)
    source = H100Source(clock, [0, 1], util=lambda m, t: 0.0)
    clock.at(40.0, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(uid=NOBODY, user="nobody", watch=settings(d / "prom", mail_prog=str(prog))), source,
                      run, clock=clock, job=job_record(out))
    assert sampler.run() == 0
    lines = got.read_text().splitlines()
    assert lines[:3] == ["-s", "piqc-slurm: job 4242: IDLE_GPUS on GPUs 0,1 since 2023-11-14T22:13:20Z: all 2 "
                         "GPUs active under 5% of the time for 0.5 min.", "nobody"]
    assert "\n".join(lines[3:]).strip("\n") == out.read_text().strip("\n")  # the notice itself
    [act] = load_checkpoint(run / "checkpoint.json")["watch"]["actions"]
    assert act["notice"] == "ok; mail ok"


def test_no_mail_to_a_name_that_reads_as_an_option():
    from piqc_slurm.sampler.oncall import mail_user

    assert mail_user("/bin/true", "-froot", "s", "b").startswith("no mail to a user named")
    assert mail_user("/bin/true", "alice", "s", "b") == "ok"
