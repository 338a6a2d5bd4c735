"""`piqc-slurm ingest`: sacct accounting records and spooled sampler summaries
into the store. Idempotent: the same window ingested twice leaves the store
as it was.

sacct is asked for an explicit field list, all users, duplicates (-D), a
rare delimiter with free-text fields last, epoch-second times
(SLURM_TIME_FORMAT=%s, so no DST hour is ambiguous), in bounded time slices
(big windows load slurmdbd). Without --since the window starts at the last
ingest's end less an overlap, so records that changed after the fact
(a RUNNING job that ended, a CANCELLED whose "by uid" vanished) are read
again and updated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from piqc_slurm.errors import ParseError, SacctError, StoreError

OVERLAP = 6 * 3600  # re-read this much before the watermark
FIRST_WINDOW = 86400  # no watermark yet: the last day
SLICE = 86400
SACCT_TIMEOUT = 300


@dataclass
class IngestResult:
    jobs: int = 0
    lines_bad: int = 0
    errors: list[str] = field(default_factory=list)
    summaries_taken: int = 0
    summaries_unchanged: int = 0
    summaries_linked: int = 0
    summaries_newer: list[str] = field(default_factory=list)
    summaries_bad: list[str] = field(default_factory=list)
    window: tuple[int, int] | None = None


def run_sacct(argv: list[str], env: dict[str, str], timeout: float = SACCT_TIMEOUT) -> str:
    """Run sacct; its stdout, or SacctError with sacct's own last error line."""
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                           errors="surrogateescape")
    except FileNotFoundError:
        raise SacctError(f"{argv[0]} not found (install slurm-client, or use --sacct-file)") from None
    except subprocess.TimeoutExpired:
        raise SacctError(f"sacct did not finish within {timeout:g}s (is slurmdbd overloaded?)") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise SacctError(f"sacct failed: {last}")
    return r.stdout


def _watermark(engine: Engine, cluster: str) -> int | None:
    from piqc_slurm.store.models import Watermark

    with Session(engine) as s:
        row = s.get(Watermark, (cluster, "sacct"))
        return row.until if row else None


def _set_watermark(engine: Engine, cluster: str, until: int) -> None:
    from piqc_slurm.store.models import Watermark

    with Session(engine) as s, s.begin():
        row = s.get(Watermark, (cluster, "sacct"))
        if row is None:
            s.add(Watermark(cluster=cluster, source="sacct", until=until))
        elif until > row.until:
            row.until = until


def times_are_epoch(text: str) -> bool:
    """Was this sacct output printed with SLURM_TIME_FORMAT=%s? (Its Submit is all digits.)"""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 2:
        return False
    delim = "\x1f" if "\x1f" in lines[0] else "|"
    names = [n.strip().lower() for n in lines[0].split(delim)]
    if "submit" not in names:
        return False
    values = lines[1].split(delim)
    i = names.index("submit")
    return i < len(values) and values[i].isdigit()


def _store_records(engine: Engine, text: str, source: str, *, epoch: bool, tz, strict: bool, cluster: str,
                   res: IngestResult) -> None:
    from piqc_slurm.slurm.records import parse_sacct
    from piqc_slurm.store.jobs import upsert_jobs

    parsed = parse_sacct(text, source=source, epoch_times=epoch, tz=tz, strict=strict, cluster=cluster)
    res.lines_bad += len(parsed.errors)
    res.errors.extend(str(e) for e in parsed.errors)
    try:
        with engine.begin() as conn:
            res.jobs += upsert_jobs(conn, parsed.records)
    except SQLAlchemyError as exc:
        raise StoreError(f"writing jobs failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None


def ingest(engine: Engine, *, cluster: str, since: int | None = None, until: int | None = None,
           sacct_file: str | None = None, file_tz: str | None = None, spool_dirs: list[Path] | None = None,
           strict: bool = False, env: dict[str, str] | None = None, slice_seconds: int = SLICE,
           progress: Callable[[str], None] | None = None) -> IngestResult:
    """One ingest run. cluster: the watermark's key (and records' cluster when sacct omits it)."""
    from piqc_slurm.slurm.argv import sacct_argv, sacct_env, time_slices

    say = progress or (lambda _m: None)
    res = IngestResult()
    if sacct_file is not None:
        try:
            text = Path(sacct_file).read_text(errors="surrogateescape") if sacct_file != "-" else sys.stdin.read()
        except OSError as exc:
            raise SacctError(f"{sacct_file}: {exc.strerror}") from None
        epoch = times_are_epoch(text)
        _store_records(engine, text, sacct_file, epoch=epoch, tz=file_tz, strict=strict, cluster=cluster, res=res)
        zone = "epoch seconds" if epoch else f"times read in zone {file_tz or 'UTC'}"
        say(f"{sacct_file}: {res.jobs} job record(s) ({zone})")
    else:
        now = int(time.time())
        end = until if until is not None else now
        if since is None:
            mark = _watermark(engine, cluster)
            start = (mark - OVERLAP) if mark is not None else end - FIRST_WINDOW
        else:
            start = since
        res.window = (start, end)
        base = sacct_env(os.environ if env is None else env)
        slices = time_slices(start, end, slice_seconds)
        for i, (a, b) in enumerate(slices, 1):
            text = run_sacct(sacct_argv(a, b), base)
            before = res.jobs
            _store_records(engine, text, f"sacct[{i}/{len(slices)}]", epoch=True, tz=None, strict=strict,
                           cluster=cluster, res=res)
            say(f"sacct slice {i}/{len(slices)} {_iso(a)} .. {_iso(b)}: {res.jobs - before} job record(s)")
        if until is None:
            _set_watermark(engine, cluster, end)
    if spool_dirs:
        from piqc_slurm.spoolreplay import replay

        try:
            r = replay(engine, spool_dirs)
        except SQLAlchemyError as exc:
            raise StoreError(f"replaying summaries failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") \
                from None
        res.summaries_taken, res.summaries_unchanged, res.summaries_linked = r.taken, r.unchanged, r.linked
        res.summaries_newer, res.summaries_bad = r.newer, r.bad
        say(f"spool: {r.taken} summaries taken in, {r.unchanged} unchanged, {r.linked} joined to their jobs")
    return res


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


__all__ = ["IngestResult", "ingest", "run_sacct", "ParseError"]
