"""Which processes belong to which Slurm job, read from a /proc tree.

NVML lists the pids on a GPU but knows nothing of jobs; the kernel does:
Slurm puts every process of a job into a cgroup whose path names the job
(`job_<id>`), under cgroup v1 and v2 alike. The environment's SLURM_JOB_ID is
only a fallback (proctrack/linuxproc sites): a user can set it, and a job
started from inside another job inherits its parent's value.

Every reader takes `proc_root` so that tests pass recorded fixture trees
(tests/fixtures/proc/) instead of patching globals. A process can exit
between listing and reading: every read treats a vanished or unreadable file
as "no information", never as an error.
"""

from __future__ import annotations

import os
import re

_JOB_SEGMENT = re.compile(r"job_(\d+)")
_ENV_JOB = b"SLURM_JOB_ID="


def job_of_cgroup(text: str) -> int | None:
    """The job id named by the contents of a /proc/<pid>/cgroup file, or None.

    Lines are `hierarchy:controllers:path` (v1: one per controller, e.g.
    `6:freezer:/slurm_vm/uid_1001/job_2/step_batch`; v2: the single line
    `0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0`). A
    `job_<digits>` path segment counts only below a segment that mentions
    slurm (`slurm`, `slurm_<node>`, `slurmstepd.scope`,
    `<node>_slurmstepd.scope`), so an unrelated cgroup that happens to be
    called job_9 is not mistaken for a Slurm job.
    """
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        seen_slurm = False
        for seg in parts[2].split("/"):
            if seen_slurm:
                m = _JOB_SEGMENT.fullmatch(seg)
                if m:
                    return int(m.group(1))
            if "slurm" in seg:
                seen_slurm = True
    return None


def job_of_environ(data: bytes) -> int | None:
    """SLURM_JOB_ID from a NUL-separated /proc/<pid>/environ, or None."""
    for var in data.split(b"\0"):
        if var.startswith(_ENV_JOB):
            value = var[len(_ENV_JOB):]
            return int(value) if value.isascii() and value.isdigit() else None
    return None


def pid_names(proc_root: str = "/proc") -> list[str]:
    """The process directories' names under proc_root (none if it cannot be listed)."""
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    return [name for name in entries if name.isascii() and name.isdigit()]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:   # vanished, permission, not a process
        return None


def job_of_pid(pid: int, proc_root: str = "/proc") -> int | None:
    """The Slurm job `pid` belongs to: its cgroup first, its environment second."""
    base = os.path.join(proc_root, str(pid))
    cgroup = _read(os.path.join(base, "cgroup"))
    if cgroup is not None:
        job = job_of_cgroup(cgroup.decode("utf-8", "replace"))
        if job is not None:
            return job
    environ = _read(os.path.join(base, "environ"))
    return job_of_environ(environ) if environ is not None else None


def is_stepd_of(cmdline: bytes, job_id: int) -> bool:
    """True when a cmdline is a slurmstepd's process title for `job_id`.

    slurmstepd retitles itself `slurmstepd: [<job>.<step>]` (`2.batch`,
    `2.extern`, `2.0`); a bare `[<job>]` is accepted too, as older releases
    wrote it.
    """
    prefix = b"slurmstepd: [%d" % job_id
    return cmdline.startswith(prefix) and cmdline[len(prefix):len(prefix) + 1] in (b".", b"]")


def stepd_pids(job_id: int, proc_root: str = "/proc") -> list[int]:
    """Pids of every slurmstepd of `job_id`, by process title."""
    found = []
    for name in pid_names(proc_root):
        cmdline = _read(os.path.join(proc_root, name, "cmdline"))
        if cmdline and is_stepd_of(cmdline, job_id):
            found.append(int(name))
    return sorted(found)


def _step_of(cmdline: bytes, job_id: int) -> bytes:
    """The step name in a slurmstepd title of `job_id` (`batch`, `extern`, `0`; b"" for `[<job>]`)."""
    rest = cmdline[len(b"slurmstepd: [%d" % job_id):]
    return rest[1:].split(b"]", 1)[0] if rest.startswith(b".") else b""


class JobWatch:
    """Whether a job is still running on this node, by its slurmstepds, checked cheaply on repeat.

    A batch job ends when its batch step does: the extern step's slurmstepd
    (PrologFlags=Alloc/Contain) lives on until slurmd ends the job, and with
    slurmd dead it would live for ever. So once a `[<job>.batch]` was seen,
    the extern stepd alone does not keep the job alive. Without a batch step
    seen, the extern stepd alone keeps the job alive (salloc, or a batch job
    whose batch step has not started yet) only while a slurmd runs on the node:
    slurmd killed between the Prolog and the batch launch leaves the job with
    its extern stepd for ever, and no step will ever start without a slurmd.

    The first check scans /proc; later ones re-read the cmdline of the
    slurmstepd found last time and scan only when it is gone, so a check is one
    small read in the common case rather than a read per process on the node.
    """

    def __init__(self, job_id: int, proc_root: str = "/proc"):
        self.job_id, self.proc_root = job_id, proc_root
        self._last: int | None = None
        self._batch_seen = False

    def _keeps_alive(self, step: bytes) -> bool:
        return step != b"extern" or not self._batch_seen

    def __call__(self) -> bool:
        if self._last is not None:
            cmdline = _read(os.path.join(self.proc_root, str(self._last), "cmdline"))
            if cmdline and is_stepd_of(cmdline, self.job_id):
                step = _step_of(cmdline, self.job_id)
                if step != b"extern":
                    return True
                if self._keeps_alive(step) and slurmd_running(self.proc_root):
                    return True
        steps = {}
        for pid in stepd_pids(self.job_id, self.proc_root):
            cmdline = _read(os.path.join(self.proc_root, str(pid), "cmdline")) or b""
            steps[pid] = _step_of(cmdline, self.job_id)
        if b"batch" in steps.values():
            self._batch_seen = True
        live = [pid for pid, step in steps.items() if self._keeps_alive(step)]
        # re-read a step that outlives the others next time: the batch step, else any but extern
        live.sort(key=lambda pid: (steps[pid] != b"batch", steps[pid] == b"extern", pid))
        self._last = live[0] if live else None
        if live and all(steps[pid] == b"extern" for pid in live):
            return slurmd_running(self.proc_root)
        return bool(live)


def slurmd_running(proc_root: str = "/proc") -> bool:
    """True if a process whose argv[0] is `slurmd` (any directory) exists under proc_root."""
    for name in pid_names(proc_root):
        cmdline = _read(os.path.join(proc_root, name, "cmdline"))
        if cmdline and os.path.basename(cmdline.split(b"\0", 1)[0]) == b"slurmd":
            return True
    return False


def job_alive(job_id: int, proc_root: str = "/proc") -> bool:
    """True if any process titled `slurmstepd: [<job_id>.` exists under proc_root."""
    return bool(stepd_pids(job_id, proc_root))
