"""The live watch on the real cluster (slurmd's Prolog starts the sampler, the real pynvml reads the
fake GPUs): with idle_minutes under a minute, a job whose GPUs stay idle gets one notice in its own
output file (still the user's), one syslog-format line in the hook log, its rule in the Prometheus
textfile while it runs (parsed with prometheus_client) and in its summary; the textfile is gone when
the job ends. A job idle only while it loads, then busy, gets nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slurm

IDLE_MINUTES = 0.2  # 12 s; buckets of 1.2 s


def with_watch(textfile_dir):
    def transform(text: str) -> str:
        return text + (f"\n[watch]\nidle_minutes = {IDLE_MINUTES}\ngpu_idle_minutes = 0.0\n"
                       f"underbatched_minutes = 0.0\ntextfile_dir = {json.dumps(str(textfile_dir))}\n"
                       "textfile_interval = 1.0\n")
    return transform


@pytest.fixture
def prom(cluster):
    d = cluster.dir / "prom-test"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_idle_gpus_notice_syslog_line_textfile_and_summary(cluster, prom):
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_watch(prom)):
        job = cluster.submit("sleep 30", "--gres=gpu:2", "-o", "watch-%j.out", name="t-watch-idle")
        cluster.wait_running(job)
        minors = cluster.job_gpu_minors(job)
        line = cluster.wait_hook_line(job, "piqc-slurm watch job=", timeout=60)
        time.sleep(2.5)  # the textfile is rewritten every second
        files = list(prom.glob("*.prom"))
        assert [f.name for f in files] == [f"piqc_job_{cluster.cluster_name}_{job}_0.prom"]
        families = {f.name: f for f in text_string_to_metric_families(files[0].read_text())}
        util = families["piqc_gpu_utilization_percent"].samples
        assert sorted(int(s.labels["gpu"]) for s in util) == sorted(minors)
        assert all(s.value == 0.0 and s.labels["jobid"] == str(job) and s.labels["user"] == cluster.user
                   and s.labels["uuid"].startswith("GPU-") and s.labels["partition"] for s in util)
        firing = {s.labels["rule"]: s.value for s in families["piqc_job_rule_firing"].samples}
        assert firing["IDLE_GPUS"] == 1.0
        assert all(s.value >= IDLE_MINUTES * 60 for s in families["piqc_gpu_idle_seconds"].samples)
        assert cluster.wait(job, timeout=90) == "COMPLETED"
        summary = cluster.wait_summary(job)
    gpus = ",".join(map(str, sorted(minors)))
    assert re.search(rf"piqc-slurm watch job={job} user={cluster.user} rule=IDLE_GPUS "
                     rf"since=\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ usd=\d+\.\d\d gpus={gpus}$", line), line
    [act] = summary["watch"]
    assert act["rule"] == "IDLE_GPUS" and act["notice"] == "ok" and act["at"] - act["since"] >= IDLE_MINUTES * 60
    out = cluster.home / f"watch-{job}.out"
    text = out.read_text()
    assert text.count("] IDLE_GPUS on GPUs") == 1 and f"scancel {job}" in text
    assert out.stat().st_uid == int(os.popen(f"id -u {cluster.user}").read()) != 0
    assert not list(prom.glob("*.prom")), "the job ended: its series are gone"
    assert len([ln for ln in cluster.hook_lines(job) if "piqc-slurm watch job=" in ln]) == 1


def test_a_job_idle_only_while_it_loads_gets_nothing(cluster, prom):
    load = json.dumps([{"gpus": [0], "util": 80, "mem_gib": 10, "process": True}])
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_watch(prom)):
        job = cluster.submit(f"sleep 4; exec fakegpu-work --seconds 25 --load '{load}'", "--gres=gpu:1",
                             "-o", "watch-%j.out", name="t-watch-loads")
        assert cluster.wait(job, timeout=90) == "COMPLETED"
        summary = cluster.wait_summary(job)
    assert summary["watch"] == []
    assert "] IDLE_GPUS on GPU" not in (cluster.home / f"watch-{job}.out").read_text()
    assert not [ln for ln in cluster.hook_lines(job) if "piqc-slurm watch" in ln]


def with_policy(textfile_dir, **extra):
    def transform(text: str) -> str:
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
        return with_watch(textfile_dir)(text) + ("cancel_after_minutes = 0.5\ncancel_warn_minutes = [0.25]\n"
                                                 + lines)
    return transform


def policy_lines(cluster, job):
    return [ln for ln in cluster.hook_lines(job) if "piqc-slurm watch job=" in ln and " action=" in ln]


def test_the_cancel_policy_warns_then_cancels_with_the_reason_in_sacct(cluster, prom):
    """idle 12 s -> IDLE_GPUS; held 15 s -> the warning (lead 0.25 min of 0.5); held 30 s -> cancel."""
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_policy(prom)):
        job = cluster.submit("sleep 120", "--gres=gpu:1", "-o", "watch-%j.out", name="t-watch-cancel")
        state = cluster.wait(job, timeout=120)
        cluster.wait_hook("epilog", job)
    assert state.startswith("CANCELLED")
    comment = cluster.run(["sacct", "-X", "-n", "-P", "-j", str(job), "-o", "AdminComment"]).stdout.strip()
    assert re.fullmatch(r"piqc-slurm: cancelled, IDLE_GPUS since \S+Z \(0\.5 min; \$\d+\.\d\d spent\)",
                        comment), comment
    lines = policy_lines(cluster, job)
    assert [re.search(r" action=(\S+)", ln).group(1) for ln in lines] == ["warn", "cancel"], lines
    assert lines[1].endswith("result=ok")
    text = (cluster.home / f"watch-{job}.out").read_text()
    assert "WARNING: this job will be cancelled at" in text and comment in text


def test_an_exempt_users_identical_job_is_left_alone_and_a_dry_run_only_logs(cluster, prom):
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_policy(prom, exempt_users=[cluster.user])):
        exempt = cluster.submit("sleep 45", "--gres=gpu:1", "-o", "watch-%j.out", name="t-watch-exempt")
        assert cluster.wait(exempt, timeout=120) == "COMPLETED"
        cluster.wait_hook("epilog", exempt)
    assert policy_lines(cluster, exempt) == []
    assert "] IDLE_GPUS on GPU" in (cluster.home / f"watch-{exempt}.out").read_text()  # still told
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_policy(prom, cancel_dry_run=True)):
        dry = cluster.submit("sleep 45", "--gres=gpu:1", "-o", "watch-%j.out", name="t-watch-dry")
        assert cluster.wait(dry, timeout=120) == "COMPLETED"
        cluster.wait_hook("epilog", dry)
    assert [re.search(r" action=(\S+)", ln).group(1) for ln in policy_lines(cluster, dry)] == [
        "dry-run-warn", "dry-run-cancel"]
    text = (cluster.home / f"watch-{dry}.out").read_text()
    assert "WARNING" not in text and "cancelled" not in text


def test_a_users_nowatch_through_the_spank_option_leaves_the_idle_job_untold(cluster, prom):
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_watch(prom)):
        job = cluster.submit("sleep 25", "--gres=gpu:1", "--gpu-monitor=nowatch", "-o", "watch-%j.out",
                             name="t-watch-nowatch")
        assert cluster.wait(job, timeout=90) == "COMPLETED"
        summary = cluster.wait_summary(job)
    prolog = next(ln for ln in cluster.hook_lines(job) if "prolog job=" in ln and "sampler pid" in ln)
    assert "no live watch: the user's nowatch" in prolog
    assert summary["monitor"] == "on" and summary["devices"] and "watch" not in summary
    text = (cluster.home / f"watch-{job}.out").read_text()
    assert "] IDLE_GPUS on GPU" not in text and "IDLE_GPUS: This job used no GPU" in text  # the end report only
    assert not [ln for ln in cluster.hook_lines(job) if "piqc-slurm watch" in ln]


def test_an_exempt_qos_is_asked_of_squeue_and_left_alone(cluster, prom):
    """Slurm 22.05's hook environment names no QOS: the Prolog asks squeue (detached, off the job's path)."""
    qos = cluster.run(["sacctmgr", "-n", "-P", "show", "qos", "format=Name"]).stdout.split()[0]
    with cluster.patched(cluster.dir / "etc" / "piqc.toml", with_policy(prom, exempt_qos=[qos.upper()])):
        job = cluster.submit("sleep 45", "--gres=gpu:1", f"--qos={qos}", "-o", "watch-%j.out", name="t-watch-qos")
        assert cluster.wait(job, timeout=120) == "COMPLETED"
        cluster.wait_hook("epilog", job)
    prolog = next(ln for ln in cluster.hook_lines(job) if "prolog job=" in ln and "sampler pid" in ln)
    assert f"cancel policy: exempt qos {qos}" in prolog
    assert policy_lines(cluster, job) == []
