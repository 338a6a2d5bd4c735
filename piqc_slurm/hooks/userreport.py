"""Append the GPU report to the job's own output file, as the job's user.

The Epilog runs as root and the output path is the user's to choose (and to
replace with a symlink to /etc/shadow), so root never opens it: a forked
child drops every privilege (supplementary groups, gid, uid) first, then
opens the file O_APPEND|O_NOFOLLOW without creating it, and writes only to a
regular file. The parent waits at most `timeout` seconds (a hung NFS mount
must not hold the Epilog), then kills the child and moves on.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from dataclasses import dataclass

MAX_WIDTH = 10  # fname.c: "Max zero-padding width"
NO_VAL = 0xFFFFFFFE  # Slurm's NO_VAL (hooks/jobinfo.py): the array task id of a job outside an array
_SINGLE_TASK = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", re.ASCII)  # strtoul(fmt) consuming it all


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class PatternInputs:
    """What the batch step's slurmstepd had when it named the output file (fname.c).

    array_task_id None means unknown (no job info: see `unknown`), NO_VAL means not an array
    task, as Slurm keeps it; job_name None means unknown."""
    job_id: int  # the raw id (SLURM_JOB_ID; an array task's own id)
    user: str
    host: str  # slurmd's short host name (gethostname up to the first '.'), for %N
    work_dir: str | None
    array_job_id: int | None = None
    array_task_id: int | None = None
    job_name: str | None = None
    unknown: str = "no job info"  # why array ids or job name are unknown


def _width(digits: str) -> int:
    """strtoul(digits) clamped to MAX_WIDTH, without int() of a 5,000-digit string."""
    digits = digits.lstrip("0")
    return MAX_WIDTH if len(digits) > 2 else min(int(digits or 0), MAX_WIDTH)


def _field(letter: str, width: int, v: PatternInputs) -> str | None:
    """fname.c _batch_path_check: one letter's text, or None where Slurm leaves it as written."""
    def num(value: int) -> str:
        return str(value).zfill(width)

    if letter in "Aa" and v.array_task_id is None:
        raise PatternError(f"output pattern uses %{letter} and the array ids are unknown: {v.unknown}")
    if letter == "a":
        return num(v.array_task_id)
    if letter == "A":
        return num(v.job_id if v.array_task_id == NO_VAL else v.array_job_id or 0)
    if letter in "jJ":  # %J of the batch step: the job id only (its step id is SLURM_BATCH_SCRIPT)
        return num(v.job_id)
    if letter in "nt":  # the batch step runs as task 0 on node 0 of its step
        return num(0)
    if letter == "N":
        return v.host
    if letter == "s":  # the batch step: "batch", never padded
        return "batch"
    if letter == "u":
        return v.user
    if letter == "x":
        if v.job_name is None:
            raise PatternError(f"output pattern uses %x and the job name is unknown: {v.unknown}")
        return v.job_name
    return None


def _batch_fname(path: str, v: PatternInputs) -> str:
    """A character-for-character port of Slurm 22.05.8's _create_batch_fname (fname.c),
    quirks included: `%%` is `%`; `%N` with N digits zero-pads (at most 10); an unknown
    letter is kept as written, but after a width its `%` is dropped (`%4z` -> `4z`); a
    width at the very end keeps only its last digit (`%17` -> `7`)."""
    out: list[str] = []
    n, p, q = len(path), 0, 0
    while p < n:
        if path[p] != "%":
            p += 1
            continue
        if p + 1 < n and path[p + 1] == "%":
            p += 1
            out.append(path[q:p])  # up to and including the first '%'
            p += 1
            q = p
            continue
        p += 1
        width = 0
        if p < n and path[p] in "0123456789":
            out.append(path[q:p - 1])
            end = p
            while end < n and path[end] in "0123456789":
                end += 1
            width, p = _width(path[p:end]), end
            q = p - 1
            if p >= n:
                break
        text = _field(path[p], width, v) if p < n else None
        if text is not None:
            out.append(path[q:p - 1])
            out.append(text)
            p += 1
            q = p
    if q != p:
        out.append(path[q:p])
    return "".join(out)


def _remove_path_slashes(path: str) -> str | None:
    """fname.c remove_path_slashes: with any backslash in the path, the path with each doubled
    backslash made one and every other backslash dropped, to be used with no % expansion at all;
    None without one."""
    if "\\" not in path:
        return None
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\":
            if path[i + 1:i + 2] == "\\":
                out.append("\\")
                i += 2
            else:
                i += 1
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _single_task(pattern: str) -> int:
    """fname.c fname_single_task_io: the task a pattern that is one integer names, else -1."""
    m = _SINGLE_TASK.fullmatch(pattern)
    if not m:
        return -1
    digits = m.group(2).lstrip("0")
    if len(digits) > 20 or int(digits or 0) >= 2**64:
        return -1  # strtoul's ULONG_MAX, sign or not; (int) of it is -1
    value = int(digits or 0)
    if m.group(1) == "-":
        value = -value % 2**64
    value &= 0xFFFFFFFF  # (int) of the unsigned long
    return value - 2**32 if value >= 2**31 else value


def expand_output_path(pattern: str | None, v: PatternInputs) -> str:
    """The file the batch step's stdout went to, as Slurm 22.05.8's slurmstepd names it
    (slurmstepd_job.c _batchfilename, fname.c fname_create for the batch step).

    `pattern` is SLURM_JOB_STDOUT as the Epilog sees it (sbatch made a relative -o absolute
    against the submit directory); none means Slurm's default, slurm-%J.out, or slurm-%A_%a.out
    for an array task, in the work dir. Letters: %A %a %J %j %N %n %s %t %u %x (man sbatch,
    "filename pattern"); a backslash anywhere disables expansion. PatternError where the file
    cannot be named (array ids or job name unknown, no work dir) or no report belongs
    (/dev/...)."""
    if not pattern:
        if v.array_task_id is None or v.array_task_id == NO_VAL:
            pattern = "slurm-%J.out"  # a guess when the array ids are unknown: most jobs are not arrays
        else:
            pattern = "slurm-%A_%a.out"
    if _single_task(pattern) not in (-1, 0):  # one task's output only, not the batch step's (task 0)
        raise PatternError(f"output pattern {pattern[:20]!r} names one task: Slurm writes /dev/null")
    esc = _remove_path_slashes(pattern)
    name = ""
    if not pattern.startswith("/"):
        if not v.work_dir:
            raise PatternError("relative output path and no work dir")
        if not v.work_dir.startswith("/"):  # slurmd's is absolute; relative would be the Epilog's cwd
            raise PatternError(f"relative output path and a relative work dir {v.work_dir[:80]!r}")
        name = v.work_dir
        if esc is None and not name.endswith("/"):
            name += "/"  # (with a backslash Slurm joins them with no '/': sbatch made -o absolute)
    path = name + (esc if esc is not None else _batch_fname(pattern, v))
    if path.startswith("/dev/"):
        raise PatternError(f"output goes to {path[:80]!r}: no report")
    if "\0" in path:  # no C string holds one; os.open would raise ValueError
        raise PatternError(f"output path has a NUL byte: {path[:80]!r}")
    return path


def _drop_and_append(path: str, text: bytes, uid: int, gid: int, user: str) -> int:
    """In the child: become the user entirely, then append. Returns an exit code."""
    try:
        try:
            os.initgroups(user, gid)
        except (OSError, KeyError):
            os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid or 0 in os.getgroups() and gid != 0:
            return 3
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return 4
            os.set_blocking(fd, True)
            from piqc_slurm.fsutil import write_all

            write_all(fd, text)
        finally:
            os.close(fd)
        return 0
    except OSError as exc:
        return {2: 5, 40: 6, 13: 7}.get(exc.errno, 8)  # ENOENT, ELOOP, EACCES


CHILD_REASONS = {1: "internal error", 3: "could not drop privileges", 4: "not a regular file",
                 5: "no such file", 6: "a symlink (not followed)", 7: "permission denied", 8: "write failed"}


def append_as_user(path: str, text: str, uid: int, gid: int, user: str, timeout: float) -> str:
    """Append `text` to `path` as uid/gid; return 'ok' or why not."""
    if uid == 0:
        return "job runs as root: no report (root never writes where users point)"
    data = text.encode()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(max(int(timeout) + 1, 1))
            code = _drop_and_append(path, data, uid, gid, user)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "ok" if code == 0 else CHILD_REASONS.get(code, f"writer exited {code}")
        if time.monotonic() >= deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return f"timed out after {timeout:g}s (file system hung?)"
        time.sleep(0.01)


def short_hostname() -> str:
    """slurmd's conf->hostname, which %N expands to: gethostname() up to the first '.'."""
    import socket

    return socket.gethostname().split(".", 1)[0]


def pattern_inputs(ctx, spool_dir: str) -> PatternInputs:
    """What the batch step's slurmstepd named the output file from: the hook environment, plus
    the array ids and job name the SPANK plugin recorded (hooks/jobinfo.py). Without that file,
    array ids from the environment where a Slurm passes them (22.05 does not), else unknown."""
    from piqc_slurm.hooks.jobinfo import read

    info, why = read(spool_dir, ctx.job_id, ctx.uid)
    base = {"job_id": ctx.job_id, "user": ctx.user, "host": short_hostname(), "work_dir": ctx.work_dir}
    if info is not None:
        return PatternInputs(**base, array_job_id=info.array_job_id, array_task_id=info.array_task_id,
                             job_name=info.job_name, unknown="job name not recorded by the SPANK plugin")
    if ctx.array_task_id is not None and ctx.array_job_id is not None:
        return PatternInputs(**base, array_job_id=ctx.array_job_id, array_task_id=ctx.array_task_id, unknown=why)
    return PatternInputs(**base, unknown=why)
