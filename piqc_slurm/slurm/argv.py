"""The sacct command line and environment for ingest: pure, no subprocess here.

Time window. `-S/-E` are given as `uts<epoch seconds>`, which Slurm's
parse_time() (src/common/parse_time.c) has accepted for many releases, though
the man page does not list it: the value is returned as-is, without mktime(),
so it means the same instant whatever TZ the sacct process has and has no DST
gap or repeated hour. Seen on the test cluster (Slurm 22.05.8, 2026-11-28):

    sacct -S 1795868096 ...                -> Invalid time specification (pos=0)
    sacct -S @1795868096 ...               -> Invalid time specification (pos=0)
    sacct -S uts1795868096 -E uts1795868100 -> jobs 5, 6, 7, 9 (same under
        TZ=UTC, TZ=America/New_York, TZ=Asia/Kolkata)
    TZ=America/New_York sacct -S 2026-11-28T12:14:56 -E 2026-11-28T12:14:57 -> nothing
    TZ=America/New_York sacct -S 2026-11-28T07:14:56 -E 2026-11-28T07:14:57 -> jobs 5, 6, 7
        (so the ISO form is read in the querying process's local zone)
    sacct -S uts1 / uts86400 / uts0        -> Invalid time specification
        (parse_time rejects uts values below 1000000)

Output times: SLURM_TIME_FORMAT=%s makes sacct print epoch seconds (no zone,
no DST ambiguity). TZ=UTC is set as well so that nothing sacct prints can
depend on the zone of the host that runs ingest."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from piqc_slurm.slurm.fields import DELIMITER, INGEST_FIELDS

# parse_time() refuses "uts" values below this (1970-01-12T13:46:40Z); no job predates it.
UTS_MIN = 1_000_000

_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:%-?[0-9]+)?", re.ASCII)
_JOB_RE = re.compile(r"[0-9]+(?:_[0-9]+|\+[0-9]+)?(?:\.[A-Za-z0-9]+)?", re.ASCII)
_CLUSTER_RE = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)


def sacct_argv(start: int | None, end: int | None, *, fields: Sequence[str] = INGEST_FIELDS,
               delimiter: str = DELIMITER, clusters: Iterable[str] | None = None,
               jobs: Iterable[int | str] | None = None, sacct: str = "sacct") -> list[str]:
    """argv for `sacct -a -P -D` over [start, end] in epoch seconds.

    -D keeps every incarnation of a requeued job (each has its own Submit);
    steps are kept (no -X) so the records can fold them in. slurmdbd selects a
    job when Eligible < end and (End >= start or no End yet), so adjacent
    slices may both list a job that ends on their border: upsert, don't insert.
    A start below UTS_MIN is raised to it (same result: no job is older).
    start/end may be None only with `jobs` (sacct then has no time window)."""
    if not delimiter or "\n" in delimiter:
        raise ValueError(f"bad sacct delimiter {delimiter!r}")
    fields = list(fields)
    if not fields:
        raise ValueError("no sacct fields asked for")
    for f in fields:
        if not _FIELD_RE.fullmatch(f):
            raise ValueError(f"bad sacct field name {f!r}")
    argv = [sacct, "-a", "-P", "-D", f"--delimiter={delimiter}", f"--format={','.join(fields)}"]
    job_list = [str(j) for j in jobs] if jobs is not None else None
    if (start is None or end is None) and not job_list:
        raise ValueError("sacct_argv needs a time window (start and end) unless jobs are named")
    if start is not None:
        argv += ["-S", f"uts{max(int(start), UTS_MIN)}"]
    if end is not None:
        if int(end) < UTS_MIN:
            raise ValueError(f"sacct end time {end!r} is before {UTS_MIN} (1970-01-12), which sacct refuses")
        if start is not None and int(end) < int(start):
            raise ValueError(f"sacct window ends ({end!r}) before it starts ({start!r})")
        argv += ["-E", f"uts{int(end)}"]
    if clusters is not None:
        names = list(clusters)
        for c in names:
            if not _CLUSTER_RE.fullmatch(c):
                raise ValueError(f"bad cluster name {c!r}")
        if names:
            argv += ["-M", ",".join(names)]
    if job_list:
        for j in job_list:
            if not _JOB_RE.fullmatch(j):
                raise ValueError(f"bad job id {j!r}")
        argv += ["-j", ",".join(job_list)]
    return argv


def sacct_env(base_env: Mapping[str, str]) -> dict[str, str]:
    """base_env plus what makes sacct's output zone-free: epoch-second times, TZ=UTC."""
    env = dict(base_env)
    env["SLURM_TIME_FORMAT"] = "%s"
    env["TZ"] = "UTC"
    return env


def time_slices(start: int, end: int, slice_seconds: int) -> list[tuple[int, int]]:
    """[start, end) cut into consecutive windows of at most slice_seconds.

    Big windows load slurmdbd; ask slice by slice. Each slice's end is the next
    one's start (slurmdbd's rule makes a job ending exactly on a border appear
    in both: harmless with upserts). start >= end gives no slices."""
    if slice_seconds <= 0:
        raise ValueError(f"slice length must be positive, not {slice_seconds!r}")
    out = []
    t = start
    while t < end:
        nxt = min(t + slice_seconds, end)
        out.append((t, nxt))
        t = nxt
    return out
