"""Hostile users on the real cluster. Root runs the hooks; users control job names, comments,
output paths, their environment and the SPANK option. None of it may make a hook run a shell,
write where the user could not, or reach another job's data.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PIQC = str(REPO / ".venv" / "bin" / "piqc-slurm")
MARKERS = Path("/var/tmp/piqc-pwned")


def workload(seconds, gpus, util=80):
    load = json.dumps([{"gpus": gpus, "util": util, "mem_gib": 10, "process": True}])
    return f"fakegpu-work --seconds {seconds} --load '{load}'"


def uid_of(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)


def test_shell_metacharacters_in_job_fields_run_nothing_and_round_trip(cluster, tmp_path):
    MARKERS.mkdir(exist_ok=True)
    os.chmod(MARKERS, 0o1777)
    for p in MARKERS.iterdir():
        p.unlink()
    name = f"x; touch {MARKERS}/1 $(touch {MARKERS}/2) `touch {MARKERS}/3` | <script>'\"../"
    comment = f"c; touch {MARKERS}/4 && $(id > {MARKERS}/5)"
    job = cluster.submit(workload(2, [0]), "--gres=gpu:1", f"--comment={comment}", "-o", "meta-%j.out",
                         name=name)
    cluster.wait(job, timeout=60)
    assert cluster.wait_hook("prolog", job).endswith("rc=0 exit=0")
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
    s = cluster.wait_summary(job)
    assert s["job_id"] == job and not s["partial"]
    assert list(MARKERS.iterdir()) == [], "a hook ran a shell built from a job field"
    assert f"piqc-slurm GPU report: job {job}" in (cluster.home / f"meta-{job}.out").read_text()
    # the name and comment reach the store and come back byte for byte as real sacct has them
    # (Slurm itself turns the name's `"` into a backtick, and keeps no comment without
    # AccountingStoreFlags=job_comment)
    real = cluster.run(["sacct", "-j", str(job), "-X", "-n", "-P", "--delimiter=\x1f", "-o", "JobName,Comment"]
                       ).stdout.rstrip("\n").split("\x1f")
    assert real[0].startswith(f"x; touch {MARKERS}/1 $(touch {MARKERS}/2) `touch {MARKERS}/3` | <script>")
    url = f"sqlite:///{tmp_path}/store.db"
    env = cluster.root_env()
    assert subprocess.run([PIQC, "--db", url, "db", "init"], env=env, capture_output=True).returncode == 0
    r = subprocess.run([PIQC, "--db", url, "ingest", "-q", "--since", "now-1hours"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([PIQC, "--db", url, "sacct", "-j", str(job), "-X", "-n", "-P", "--delimiter=\x1f",
                        "-o", "JobName,Comment"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n").split("\x1f") == real
    assert list(MARKERS.iterdir()) == []


def test_output_path_swapped_for_a_symlink_during_the_job_writes_nothing_of_roots(cluster):
    """The user's script replaces its output directory with a symlink to a root-owned directory
    while the job runs: the report, written as the user with O_NOFOLLOW, cannot reach it."""
    rootdir = Path("/var/tmp/piqc-rootdir")
    rootdir.mkdir(exist_ok=True)
    os.chmod(rootdir, 0o755)
    target = rootdir / "out.txt"
    target.write_text("root's file\n")
    os.chmod(target, 0o644)
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    work = cluster.home / "swap"
    subprocess.run(["rm", "-rf", str(work), str(work) + ".old"], check=True)
    subprocess.run(cluster.user_argv(["mkdir", "-p", str(work)]), check=True)
    script = f"{workload(2, [0])}; mv {work} {work}.old; ln -s {rootdir} {work}"
    try:
        job = cluster.submit(script, "--gres=gpu:1", "-o", f"{work}/out.txt", name="t-swap")
        cluster.wait(job, timeout=60)
        assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
        cluster.wait_summary(job)
        assert (target.read_bytes(), target.stat().st_mtime_ns) == before
        line = next(ln for ln in cluster.hook_lines(job) if "epilog job=" in ln and "report:" in ln)
        assert "report: ok" not in line, line
        # the job's own output (written by slurmstepd before the swap) is still the user's
        old = Path(f"{work}.old/out.txt")
        assert old.stat().st_uid == uid_of(cluster.user)
    finally:
        subprocess.run(["rm", "-rf", str(work), str(work) + ".old"], check=False)
        target.unlink(missing_ok=True)


def test_a_users_environment_cannot_point_the_hooks_at_another_job(cluster):
    """Job B exports another job's id, GPUs, spool and config paths and a hostile SPANK value; the
    hooks read slurmd's environment, so B's run is B's and A's is untouched."""
    a = cluster.submit(workload(12, [0]), "--gres=gpu:1", "-o", "/dev/null", name="t-victim")
    cluster.wait_running(a)
    evil = Path("/var/tmp/piqc-evil")
    evil.mkdir(exist_ok=True)
    os.chmod(evil, 0o1777)
    exports = ",".join([
        "ALL", f"SLURM_JOB_ID={a}", "SLURM_JOB_GPUS=0,1,2,3,4,5,6,7", f"PIQC_CONFIG={evil}/x.toml",
        f"PIQC_SPOOL={evil}", f"SPANK_PIQC_GPU_MONITOR=../../{evil}", "SLURM_JOB_UID=0",
        "SLURM_JOB_USER=root", f"PIQC_HOOK_LOG={evil}/log"])
    b = cluster.submit(workload(2, [0]), "--gres=gpu:1", f"--export={exports}", "-o", "/dev/null",
                       name="t-attacker")
    cluster.wait(b, timeout=60)
    cluster.wait(a, timeout=60)
    sa, sb = cluster.wait_summary(a), cluster.wait_summary(b)
    assert sa["job_id"] == a and sb["job_id"] == b
    assert not sa["partial"] and not sb["partial"], (sa["partial_reason"], sb["partial_reason"])
    assert sb["user"] == cluster.user and sb["uid"] == uid_of(cluster.user)
    assert len(sb["gpus"]) == 1 and sa["devices"][0]["samples"] >= 10
    assert list(evil.iterdir()) == [], "a hook wrote where the user's environment pointed"


def test_spool_and_shared_spool_are_root_only(cluster):
    piqc = cluster.dir / "piqc"
    for d in (piqc / "spool", piqc / "spool" / "outbox", piqc / "spool" / "run",
              piqc / "shared-spool" / cluster.node):
        st = d.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{d} is {oct(stat.S_IMODE(st.st_mode))}"
    newest = sorted((piqc / "shared-spool" / cluster.node).glob("*.summary.json"),
                    key=lambda p: p.stat().st_mtime)[-5:]
    for p in newest:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


def test_hooks_refuse_a_world_writable_spool_and_the_job_still_runs(cluster):
    spool = cluster.dir / "piqc" / "spool"
    mode = stat.S_IMODE(spool.stat().st_mode)
    os.chmod(spool, 0o777)
    try:
        job = cluster.submit(workload(2, [0]), "--gres=gpu:1", "-o", "/dev/null", name="t-badspool")
        assert cluster.wait(job, timeout=60) == "COMPLETED"
        assert cluster.wait_hook("prolog", job).endswith("rc=0 exit=0")
        assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
        lines = cluster.hook_lines(job)
        assert any("writable" in ln and "spool" in ln for ln in lines), lines
        assert not (spool / "run" / f"{cluster.cluster_name}.{job}.0.{cluster.node}").exists()
    finally:
        os.chmod(spool, mode)
    assert cluster.node_state() in ("idle", "mixed", "allocated")


def test_store_created_by_db_init_is_not_world_readable(cluster):
    top = Path(tempfile.mkdtemp(prefix="piqc-store-", dir="/var/tmp"))
    os.chmod(top, 0o755)  # users may look in: only the store's own modes keep them out
    db = top / "sub" / "store.db"
    try:
        r = subprocess.run([PIQC, "--db", f"sqlite:///{db}", "db", "init"], env=cluster.root_env(),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(db.stat().st_mode) == 0o640
        assert stat.S_IMODE(db.parent.stat().st_mode) & 0o007 == 0
        r = subprocess.run(cluster.user_argv(["cat", str(db)]), capture_output=True)
        assert r.returncode != 0, "an ordinary user read the store's file"
    finally:
        shutil.rmtree(top, ignore_errors=True)
