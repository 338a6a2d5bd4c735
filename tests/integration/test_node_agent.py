"""The node agent on the real cluster: slurmd runs the Prolog/Epilog wrappers,
the sampler reads the fake GPUs through the real pynvml, summaries land in the
spool, reports in the users' output files. Jobs run as the unprivileged user.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def load_json(gpus, util=80, mem_gib=40):
    return json.dumps([{"gpus": gpus, "util": util, "mem_gib": mem_gib, "process": True}])


def workload(seconds, gpus, util=80, mem_gib=40):
    return f"fakegpu-work --seconds {seconds} --load '{load_json(gpus, util, mem_gib)}'"


def test_four_gpus_two_used_summary_and_user_report(cluster):
    job = cluster.submit(workload(40, [0, 1]), "--gres=gpu:4", "-o", "agent-%j.out", name="t-agent")
    assert cluster.wait(job, timeout=120) == "COMPLETED"
    s = cluster.wait_summary(job)
    assert s["format"] == "piqc-summary/1" and not s["partial"] and s["nvml"]["ok"]
    assert s["user"] == cluster.user and len(s["gpus"]) == 4
    used = [d for d in s["devices"] if d["did_work"]]
    idle = [d for d in s["devices"] if d["did_work"] is False]
    assert len(used) == 2 and len(idle) == 2
    for d in used:
        assert abs(d["util_mean"] - 80) <= 5, d
        assert abs(d["util_p50"] - 80) <= 5, d
        assert d["mem_used_max_mib"] == 40 * 1024
        assert d["job_process_seconds"] > 0, "the workload was seen as this job's process"
        assert d["energy_j"] > 0 and d["uuid"].startswith("GPU-")
    for d in idle:
        assert d["util_max"] == 0 and d["mem_used_max_mib"] == 0
    # The sampler outlived the Prolog that started it (slurmd kills a hook's
    # process group when the hook exits): it sampled the whole job.
    assert min(d["samples"] for d in s["devices"]) >= 30
    # The Prolog returned promptly: the job was not held up by it.
    prolog_line = next(ln for ln in cluster.hook_lines(job) if "prolog job=" in ln and "sampler pid" in ln)
    assert float(re.search(r"\((\d+) ms\)", prolog_line).group(1)) < 1000
    assert cluster.wait_hook("prolog", job).endswith("rc=0 exit=0")
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
    # The job's output file ends with the report and still belongs to the user.
    out = cluster.home / f"agent-{job}.out"
    text = out.read_text()
    assert f"piqc-slurm GPU report: job {job}" in text
    assert "IDLE_GPUS: 2 of 4 allocated GPUs did no work" in text
    assert text.rstrip().splitlines()[-1] == "  Advice: Request --gres=gpu:2."
    st = out.stat()
    assert st.st_uid == int(os.popen(f"id -u {cluster.user}").read()) and st.st_uid != 0


def test_output_symlink_to_root_file_is_not_followed(cluster, tmp_path_factory):
    target = Path("/var/tmp/piqc-root-owned-target")
    target.write_text("root's file\n")
    os.chmod(target, 0o644)
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    link = cluster.home / "evil.out"
    link.unlink(missing_ok=True)
    os.symlink(target, link)
    os.lchown(link, int(os.popen(f"id -u {cluster.user}").read()), -1)
    try:
        job = cluster.submit(workload(3, [0]), "--gres=gpu:1", "-o", str(link), name="t-symlink")
        cluster.wait(job, timeout=60)
        line = cluster.wait_hook("epilog", job)
        assert line.endswith("rc=0 exit=0")
        assert (target.read_bytes(), target.stat().st_mtime_ns) == before
        cluster.wait_summary(job)
        epilog = next(ln for ln in cluster.hook_lines(job) if "epilog job=" in ln and "report:" in ln)
        assert "report: ok" not in epilog
        assert cluster.node_state() in ("idle", "mixed", "allocated")
    finally:
        link.unlink(missing_ok=True)
        target.unlink(missing_ok=True)


def test_sampler_killed_mid_job_gives_partial_summary(cluster):
    job = cluster.submit(workload(15, [0]), "--gres=gpu:1", "-o", "/dev/null", name="t-kill")
    cluster.wait_running(job)
    run_dir = cluster.dir / "piqc" / "spool" / "run" / f"{cluster.cluster_name}.{job}.0.{cluster.node}"
    deadline = time.monotonic() + 20
    while not (run_dir / "checkpoint.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = int((run_dir / "sampler.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    cluster.wait(job, timeout=60)
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
    s = cluster.wait_summary(job)
    assert s["partial"] is True
    assert "sampler" in s["partial_reason"]


def test_driver_not_loaded_hooks_exit_0_and_summary_says_no_gpu_data(cluster):
    conf = cluster.dir / "fakenvml" / "fakenvml.conf"
    with cluster.patched(conf, lambda t: t + "fault driver_not_loaded\n"):
        job = cluster.submit("sleep 2", "--gres=gpu:2", "-o", "nodrv-%j.out", name="t-nodriver")
        cluster.wait(job, timeout=60)
        s = cluster.wait_summary(job)
    assert cluster.wait_hook("prolog", job).endswith("rc=0 exit=0")
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
    assert s["nvml"]["ok"] is False and s["devices"] == []
    assert "Driver Not Loaded" in s["nvml"]["error"] or "driver" in s["nvml"]["error"].lower()
    assert "No GPU data for this job" in (cluster.home / f"nodrv-{job}.out").read_text()


def test_gpu_falling_off_the_bus_is_marked_and_others_still_sampled(cluster):
    job = cluster.submit(workload(12, [0, 1]), "--gres=gpu:2", "-o", "/dev/null", name="t-lost")
    cluster.wait_running(job)
    minors = cluster.job_gpu_minors(job)
    time.sleep(3)
    lost = cluster.dir / "fakenvml" / "state" / f"gpu{minors[1]}.lost"
    lost.touch()
    try:
        cluster.wait(job, timeout=60)
        s = cluster.wait_summary(job)
    finally:
        lost.unlink()
    by_minor = {d["minor"]: d for d in s["devices"]}
    assert by_minor[minors[1]]["lost"] is True and "lost" in by_minor[minors[1]]["error"].lower()
    assert by_minor[minors[1]]["samples"] >= 2, "what was sampled before the loss is kept"
    assert by_minor[minors[0]]["lost"] is False and by_minor[minors[0]]["util_max"] >= 75
    assert by_minor[minors[0]]["samples"] > by_minor[minors[1]]["samples"]
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")


def test_store_unreachable_summary_stays_in_spool(cluster):
    cfg = Path(cluster.env["PIQC_CONFIG"])

    def to_push(text: str) -> str:
        text = text.replace('delivery = "shared-spool"', 'delivery = "push"')
        text = re.sub(r'^db = .*$', 'db = "postgresql+psycopg://piqc@127.0.0.1:1/nowhere"', text, flags=re.M)
        return text + "\n[epilog]\npush_jitter = 0.0\npush_connect_timeout = 1.0\n"

    with cluster.patched(cfg, to_push):
        job = cluster.submit(workload(2, [0]), "--gres=gpu:1", "-o", "/dev/null", name="t-push")
        cluster.wait(job, timeout=60)
        line = cluster.wait_hook("epilog", job)
    assert line.endswith("rc=0 exit=0")
    s = cluster.wait_summary(job, where="outbox")
    assert s["job_id"] == job
    # the push runs detached (epilog.push_detached): its failure is logged after the wrapper's End
    assert "detached push: delivery failed, stays spooled" in cluster.wait_hook_line(job, "delivery failed")
    assert any("push detached (pid " in ln for ln in cluster.hook_lines(job))


def test_a_detached_push_outlives_the_epilog_and_lands_in_the_store(cluster, tmp_path):
    """Under the real slurmd (which kills the Epilog's process group when the wrapper exits): the
    Epilog hands the push to a child in its own session and returns; the child still pushes the
    summary into the store, moves it to delivered/ and logs its line."""
    import sqlite3

    cfg = Path(cluster.env["PIQC_CONFIG"])
    store = tmp_path / "push.db"
    r = cluster.run([cluster.env["PIQC_BIN"], "--db", f"sqlite:///{store}", "db", "init"], check=False)
    assert r.returncode == 0, r.stderr
    os.chmod(tmp_path, 0o755)

    def to_push(text: str) -> str:
        text = text.replace('delivery = "shared-spool"', 'delivery = "push"')
        text = re.sub(r'^db = .*$', f'db = "sqlite:///{store}"', text, flags=re.M)
        return text + "\n[epilog]\npush_jitter = 0.5\n"

    with cluster.patched(cfg, to_push):
        job = cluster.submit(workload(2, [0]), "--gres=gpu:1", "-o", "/dev/null", name="t-push-ok")
        cluster.wait(job, timeout=60)
        assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
        line = cluster.wait_hook_line(job, "detached push")
    assert "detached push: pushed to the store" in line, line
    assert any("push detached (pid " in ln for ln in cluster.hook_lines(job))
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT count(*) FROM node_summaries WHERE job_id_raw = ?", (job,)).fetchone()[0]
    assert rows == 1
    delivered = Path(cluster.dir / "piqc" / "spool" / "delivered")
    assert list(delivered.glob(f"{cluster.cluster_name}.{job}.0.*.summary.json"))


def spank_loaded(cluster) -> bool:
    return "piqc.so" in (cluster.dir / "etc" / "plugstack.conf").read_text()


def test_gpu_monitor_off_and_interval(cluster):
    if not spank_loaded(cluster):
        pytest.skip("spank/piqc.so is not built")
    off = cluster.submit("sleep 1", "--gres=gpu:1", "--gpu-monitor=off", "-o", "/dev/null", name="t-off")
    five = cluster.submit(workload(12, [0]), "--gres=gpu:1", "--gpu-monitor=5", "-o", "/dev/null", name="t-five")
    cluster.wait(off, timeout=60)
    cluster.wait(five, timeout=60)
    s_off = cluster.wait_summary(off)
    assert s_off["monitor"] == "off" and s_off["devices"] == []
    assert not any("sampler pid" in ln for ln in cluster.hook_lines(off))
    s5 = cluster.wait_summary(five)
    assert s5["interval"] == 5.0
    assert all(2 <= d["samples"] <= 5 for d in s5["devices"]), s5["devices"]
    r = cluster.sbatch("true", "--gres=gpu:1", "--gpu-monitor=bogus", check=False)
    assert r.returncode != 0 and "gpu-monitor" in r.stderr


def test_node_not_drained_after_agent_tests(cluster):
    assert cluster.node_state() in ("idle", "mixed", "allocated")
