"""Pid-to-job attribution and job liveness on recorded /proc trees.

tests/fixtures/proc/README.md says where each tree comes from: v1/ is a real
job on Slurm 22.05.8 with cgroup v1, v2/ follows Slurm's documented cgroup
v2 layout, other/ holds hand-written edge cases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from piqc_slurm.sampler.procs import (
    JobWatch,
    is_stepd_of,
    job_alive,
    job_of_cgroup,
    job_of_environ,
    job_of_pid,
    stepd_pids,
)

pytestmark = pytest.mark.unit

PROC = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
V1, V2, OTHER = str(PROC / "v1"), str(PROC / "v2"), str(PROC / "other")


@pytest.mark.parametrize(("root", "pid", "job"), [
    # v1, captured: tasks of the batch step and of step 0, and the stepds themselves
    (V1, 12285, 2), (V1, 12306, 2), (V1, 12260, 2), (V1, 12267, 2), (V1, 12301, 2),
    (V1, 10912, None),                                   # slurmd: no job
    # v2, from the documented layout
    (V2, 3010, 42), (V2, 3021, 42), (V2, 3001, 42), (V2, 3030, 42),
    (V2, 3040, 43),                                      # <node>_slurmstepd.scope
    (V2, 3050, None), (V2, 3060, None),
    # edge cases
    (OTHER, 1, None), (OTHER, 500, 77), (OTHER, 501, None), (OTHER, 502, None),
    (OTHER, 503, None), (OTHER, 999, None),
])
def test_job_of_pid(root: str, pid: int, job: int | None) -> None:
    assert job_of_pid(pid, root) == job


def test_cgroup_wins_over_environ(tmp_path: Path) -> None:
    d = tmp_path / "5"
    d.mkdir()
    (d / "cgroup").write_text("0::/system.slice/slurmstepd.scope/job_8/step_0/user/task_0\n")
    (d / "environ").write_bytes(b"SLURM_JOB_ID=7\0")    # inherited from an enclosing job
    assert job_of_pid(5, str(tmp_path)) == 8


def test_v1_file_as_captured() -> None:
    text = (PROC / "v1" / "12285" / "cgroup").read_text()
    assert "6:freezer:/slurm_vm/uid_1001/job_2/step_batch" in text
    assert job_of_cgroup(text) == 2


@pytest.mark.parametrize(("text", "job"), [
    ("4:freezer:/slurm/uid_1000/job_42/step_batch/task_0\n", 42),
    ("11:devices:/slurm/uid_1000/job_42/step_0/task_0\n", 42),
    ("0::/system.slice/slurmstepd.scope/job_42/step_batch/user/task_0\n", 42),
    ("0::/system.slice/slurmstepd.scope/job_42\n", 42),
    ("0::/docker/abc/slurm/uid_1/job_5/step_0\n", 5),      # Slurm inside a container
    ("0::/user.slice/job_9\n", None),                      # not below a slurm segment
    ("0::/slurm/uid_1/job_12abc/step_0\n", None),
    ("0::/slurmjob_3\n", None),
    ("nonsense\n", None),
    ("", None),
])
def test_job_of_cgroup(text: str, job: int | None) -> None:
    assert job_of_cgroup(text) == job


@pytest.mark.parametrize(("data", "job"), [
    (b"A=1\0SLURM_JOB_ID=42\0B=2\0", 42),
    (b"SLURM_JOB_ID=42", 42),
    (b"SLURM_JOBID=42\0", None),          # only SLURM_JOB_ID counts
    (b"SLURM_JOB_ID=\0", None),
    (b"X_SLURM_JOB_ID=4\0", None),
    (b"", None),
])
def test_job_of_environ(data: bytes, job: int | None) -> None:
    assert job_of_environ(data) == job


def test_job_alive_and_stepds() -> None:
    assert stepd_pids(2, V1) == [12260, 12267, 12301]
    assert stepd_pids(42, V2) == [3001, 3002, 3020]
    assert job_alive(2, V1) and job_alive(42, V2) and job_alive(77, OTHER)
    assert not job_alive(20, V1)        # [2.x] is not job 20 ...
    assert not job_alive(4, V2)         # ... nor [42.x] job 4
    assert not job_alive(43, V2)        # job 43 has a task but no stepd in the tree
    assert not job_alive(1, str(PROC / "missing"))


def test_is_stepd_of() -> None:
    assert is_stepd_of(b"slurmstepd: [2.batch]\0", 2)
    assert is_stepd_of(b"slurmstepd: [77]\0", 77)
    assert not is_stepd_of(b"slurmstepd: [27.0]\0", 2)
    assert not is_stepd_of(b"/usr/sbin/slurmstepd\0", 2)
    assert not is_stepd_of(b"sleep\0slurmstepd: [2.0]\0", 2)


def test_job_watch_rechecks_the_known_stepd_then_rescans(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    shutil.copytree(PROC / "v1", root)
    watch = JobWatch(2, str(root))
    assert watch() and watch._last == 12267            # [2.batch]: the step that lasts
    shutil.rmtree(root / "12260")                      # the extern stepd exits
    assert watch() and watch._last == 12267
    for pid in (12267, 12301):
        shutil.rmtree(root / str(pid))
    assert not watch()


def test_a_batch_job_ends_with_its_batch_step_though_the_extern_stepd_lives_on(tmp_path: Path) -> None:
    """slurmd killed: the extern step's slurmstepd ([2.extern]) waits for slurmd for ever; the job
    itself ended when [2.batch] did (seen on the real cluster)."""
    root = tmp_path / "proc"
    shutil.copytree(PROC / "v1", root)
    watch = JobWatch(2, str(root))
    assert watch()
    for pid in (12267, 12301):                         # batch and step 0 end, extern stays
        shutil.rmtree(root / str(pid))
    assert not watch()


def test_without_a_batch_step_the_extern_stepd_keeps_an_allocation_alive(tmp_path: Path) -> None:
    """salloc: no batch step; between two sruns only [2.extern] is left, and the job is running."""
    root = tmp_path / "proc"
    shutil.copytree(PROC / "v1", root)
    shutil.rmtree(root / "12267")                      # never a batch step
    watch = JobWatch(2, str(root))
    assert watch()
    shutil.rmtree(root / "12301")                      # the srun step ends
    assert watch() and watch._last == 12260
    shutil.rmtree(root / "12260")
    assert not watch()


def test_extern_stepd_alone_keeps_a_job_alive_only_while_slurmd_runs(tmp_path: Path) -> None:
    """slurmd killed after the Prolog, before the batch launch (seen on the real cluster: the job
    stays RUNNING Reason=Prolog with only [2.extern]): no step can start without slurmd, so the
    job is over for the sampler; with slurmd back (salloc between sruns) it is alive again."""
    root = tmp_path / "proc"
    shutil.copytree(PROC / "v1", root)
    for pid in (12267, 12301):                         # no batch step yet, no srun step
        shutil.rmtree(root / str(pid))
    watch = JobWatch(2, str(root))
    assert watch() and watch._last == 12260            # slurmd 10912 runs
    slurmd = root / "10912"
    shutil.move(slurmd, tmp_path / "slurmd")
    assert not watch()                                 # fast path: extern alone, no slurmd
    assert not JobWatch(2, str(root))()                # full scan says the same
    shutil.move(tmp_path / "slurmd", slurmd)
    assert watch()


def test_slurmd_running_reads_argv0_of_any_directory(tmp_path: Path) -> None:
    from piqc_slurm.sampler.procs import slurmd_running
    assert slurmd_running(V1)                          # /usr/sbin/slurmd, captured
    assert slurmd_running(V2) and not slurmd_running(OTHER) and not slurmd_running(str(tmp_path / "none"))
    fake = tmp_path / "p" / "7"
    fake.mkdir(parents=True)
    (fake / "cmdline").write_bytes(b"/opt/slurm/sbin/slurmdbd\0")   # not slurmd
    assert not slurmd_running(str(tmp_path / "p"))
    (fake / "cmdline").write_bytes(b"/opt/slurm/sbin/slurmd\0-D\0")
    assert slurmd_running(str(tmp_path / "p"))


def test_job_alive_on_the_live_proc() -> None:
    """A process titled like a slurmstepd (exec -a) is found in the real /proc."""
    job = 900_000 + os.getpid() % 99_999
    proc = subprocess.Popen(["bash", "-c", f'exec -a "slurmstepd: [{job}.batch]" sleep 30'])
    try:
        deadline = time.monotonic() + 5
        while not job_alive(job) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job_alive(job)
        assert stepd_pids(job) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert not job_alive(job)
