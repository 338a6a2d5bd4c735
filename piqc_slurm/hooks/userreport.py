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

_PATTERN = re.compile(r"%(\d*)([%AaJjNnsStux])", re.ASCII)  # C's isdigit(): 0-9 only
MAX_PAD = 10  # Slurm's expand_stdio_fields/fname_create: "The maximum padding is 10"
_UNEXPANDABLE = set("JnsStx")  # step/task ids and the job name: unknown in a slurmd Epilog


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class PatternInputs:
    job_id: int
    user: str
    node: str
    work_dir: str | None
    array_job_id: int | None = None
    array_task_id: int | None = None


def expand_output_path(pattern: str | None, v: PatternInputs) -> str:
    """Slurm's filename pattern (man sbatch, "filename pattern") -> a path.

    %j job id, %u user, %N node, %A array master id, %a array task id, %%;
    a number after % zero-pads (%4j; at most 10 digits, as in Slurm). A backslash anywhere disables
    expansion. No pattern: Slurm's default slurm-%j.out (slurm-%A_%a.out for
    arrays) in the work dir. Patterns naming what the Epilog cannot know
    (%x job name, %s/%S step, %t task, %n node index, %J) raise PatternError.
    """
    if not pattern:
        pattern = "slurm-%A_%a.out" if v.array_task_id is not None else "slurm-%j.out"
    if "\\" in pattern:
        path = pattern.replace("\\", "")
    else:
        def sub(m: re.Match) -> str:
            width, letter = m.group(1), m.group(2)
            if letter == "%":
                return "%"
            if letter in _UNEXPANDABLE:
                raise PatternError(f"output pattern uses %{letter}, unknown in the Epilog")
            if letter == "j":
                value = v.job_id
            elif letter == "A":
                value = v.array_job_id if v.array_job_id is not None else v.job_id
            elif letter == "a":
                if v.array_task_id is None:
                    value = 4294967294  # what Slurm prints for %a outside an array (NO_VAL)
                else:
                    value = v.array_task_id
            elif letter == "u":
                return v.user
            else:  # N
                return v.node
            # clamped as Slurm does: `%99999999999j` must not build a huge string (nor int() 4,300 digits)
            pad = MAX_PAD if len(width.lstrip("0")) > 2 else min(int(width or 0), MAX_PAD)
            return str(value).zfill(pad)

        path = _PATTERN.sub(sub, pattern)
    if not path.startswith("/"):
        if not v.work_dir:
            raise PatternError("relative output path and no work dir")
        if not v.work_dir.startswith("/"):  # slurmd's is absolute; relative would be the Epilog's cwd
            raise PatternError(f"relative output path and a relative work dir {v.work_dir[:80]!r}")
        path = os.path.join(v.work_dir, path)
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
