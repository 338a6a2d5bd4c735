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
        assert all(s.value == 0.0 and s.labels["job"] == str(job) and s.labels["user"] == cluster.user
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
    assert "IDLE_GPUS" not in (cluster.home / f"watch-{job}.out").read_text()
    assert not [ln for ln in cluster.hook_lines(job) if "piqc-slurm watch" in ln]
