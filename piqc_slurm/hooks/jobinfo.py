"""The job info the SPANK plugin records for the Epilog's user report.

Slurm 22.05's slurmd Epilog is told neither the array ids nor the job name
(SLURM-FACTS.md), so it cannot expand `%A`, `%a` or `%x` in the job's output
pattern. The batch step's slurmstepd knows them: spank/piqc.c (loaded with
`spool=DIR`, DIR being this config's `spool_dir`) writes them at the start
of the batch step to `<spool_dir>/jobinfo/<jobid>`:

    piqc-jobinfo/1
    job_id=154
    uid=1001
    array_job_id=151          (0 outside an array)
    array_task_id=1           (4294967294, Slurm's NO_VAL, outside an array)
    job_name=6120627c63       (SLURM_JOB_NAME's bytes in hex; absent if not recorded)

The file is root's: it is read only from a root-only directory, never through
a symlink, only if it is a regular file of root's that others cannot write, at
most 4 KiB, parsed strictly (one version, known keys, uint32 ids), and only
for the job and uid it names. Anything else is a one-line reason and no info:
the report then still goes where the pattern needs no job info.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

FORMAT = "piqc-jobinfo/1"
DIRNAME = "jobinfo"
MAX_BYTES = 4096  # the plugin's PIQC_JOBINFO_MAX
NO_VAL = 0xFFFFFFFE  # Slurm's NO_VAL: S_JOB_ARRAY_TASK_ID of a job that is not an array task
_INT = re.compile(r"[0-9]{1,10}", re.ASCII)
_HEX = re.compile(r"(?:[0-9a-f]{2})*", re.ASCII)
_KEYS = ("job_id", "uid", "array_job_id", "array_task_id")
MISSING = "no jobinfo file (spank/piqc.so not loaded with spool= on this node, or it could not write)"


class JobInfoError(ValueError):
    """A jobinfo file that is not what the plugin writes."""


class JobInfo(NamedTuple):
    job_id: int
    uid: int
    array_job_id: int  # 0 outside an array, as S_JOB_ARRAY_ID
    array_task_id: int  # NO_VAL outside an array, as S_JOB_ARRAY_TASK_ID
    job_name: str | None  # None: not recorded (no SLURM_JOB_NAME, or longer than the plugin takes)


def path_for(spool_dir: str | Path, job_id: int) -> Path:
    return Path(spool_dir) / DIRNAME / str(int(job_id))


def _uint32(key: str, raw: str) -> int:
    if not _INT.fullmatch(raw) or int(raw) > 0xFFFFFFFF:
        raise JobInfoError(f"{key} is not a uint32: {raw[:20]!r}")
    return int(raw)


def parse(data: bytes) -> JobInfo:
    """The plugin's file -> JobInfo; JobInfoError saying what is wrong."""
    if len(data) > MAX_BYTES:
        raise JobInfoError(f"larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise JobInfoError("not ASCII") from None
    if not text.endswith("\n"):
        raise JobInfoError("truncated (no final newline)")
    first, *lines = text[:-1].split("\n")
    if first != FORMAT:
        raise JobInfoError(f"unknown format {first[:30]!r} (expected {FORMAT})")
    values: dict[str, str] = {}
    for line in lines:
        key, eq, value = line.partition("=")
        if not eq or key not in (*_KEYS, "job_name"):
            raise JobInfoError(f"unexpected line {line[:30]!r}")
        if key in values:
            raise JobInfoError(f"{key} given twice")
        values[key] = value
    missing = [k for k in _KEYS if k not in values]
    if missing:
        raise JobInfoError(f"no {', '.join(missing)}")
    ids = {k: _uint32(k, values[k]) for k in _KEYS}
    name = None
    if "job_name" in values:
        if not _HEX.fullmatch(values["job_name"]):
            raise JobInfoError("job_name is not lower-case hex")
        name = os.fsdecode(bytes.fromhex(values["job_name"]))  # as os.environ decodes the pattern
    return JobInfo(job_name=name, **ids)


def read(spool_dir: str | Path, job_id: int, uid: int | None) -> tuple[JobInfo | None, str]:
    """This job's info, or (None, why not) in one line. Never raises OSError."""
    from piqc_slurm.fsutil import unsafe_dir

    path = path_for(spool_dir, job_id)
    try:
        why = unsafe_dir(path.parent)
    except FileNotFoundError:
        return None, MISSING
    except OSError as exc:
        return None, f"jobinfo dir unreadable: {exc.strerror}"
    if why:
        return None, f"jobinfo refused: {why}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None, MISSING
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, f"jobinfo {path} is a symlink (not followed)"
        return None, f"jobinfo {path} unreadable: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"jobinfo {path} is not a regular file"
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None, f"jobinfo {path} refused: owned by uid {st.st_uid}, mode {st.st_mode & 0o777:o}"
        if st.st_size > MAX_BYTES:
            return None, f"jobinfo {path} refused: {st.st_size} bytes (at most {MAX_BYTES})"
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        return None, f"jobinfo {path} unreadable: {exc.strerror}"
    finally:
        os.close(fd)
    try:
        info = parse(data)
    except JobInfoError as exc:
        return None, f"jobinfo {path} refused: {exc}"
    if info.job_id != job_id:
        return None, f"jobinfo {path} refused: it names job {info.job_id}"
    if uid is not None and info.uid != uid:
        return None, f"jobinfo {path} refused: it names uid {info.uid}, the job runs as {uid}"
    return info, ""


def discard(spool_dir: str | Path, job_id: int) -> str:
    """Remove this job's file once its Epilog is done; '' or why not (a stale file is left to
    `spool prune`). Only in a directory that passes the spool's checks."""
    from piqc_slurm.fsutil import unsafe_dir

    path = path_for(spool_dir, job_id)
    try:
        if unsafe_dir(path.parent):
            return ""  # refused on reading already; nothing of ours to remove there
        os.unlink(path)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"jobinfo {path} not removed: {exc.strerror}"
    return ""
