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
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from piqc_slurm.errors import ParseError, SacctError, StoreError, first_line

OVERLAP = 6 * 3600  # re-read this much before the watermark
FIRST_WINDOW = 86400  # no watermark yet: the last day
SLICE = 86400


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
    return i < len(values) and values[i].isascii() and values[i].isdigit()


def _has_field(text: str, name: str) -> bool:
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            delim = "\x1f" if "\x1f" in line else "|"
            return name in (n.strip().lower() for n in line.split(delim))
    return False


CHUNK_LINES = 50_000
_ALLOC_LINE = re.compile(r"^\d+(?:_\d+|_\[[^\]]*\]|\+\d+)?[\x1f|]")


def chunks(text: str, size: int | None = None) -> Iterator[tuple[str, int]]:
    """Cut big sacct output into pieces of about `size` lines, each headed by
    the header line. A piece ends only before a well-formed allocation line (an
    allocation JobID and exactly the header's field count), so a job's steps
    stay with it even around a malformed line. Yields (text, how many lines to
    add to a line number in it)."""
    size = size or CHUNK_LINES
    lines = text.splitlines(keepends=True)
    if len(lines) <= size:
        yield text, 0
        return
    h = 0
    while h < len(lines) and (lines[h].startswith("#") or not lines[h].strip()):
        h += 1
    header = lines[h] if h < len(lines) else ""
    delim = "\x1f" if "\x1f" in header else "|"
    fields = header.count(delim)

    def cut_before(line: str) -> bool:
        return bool(_ALLOC_LINE.match(line)) and line.count(delim) == fields

    start = h + 1
    while start < len(lines):
        end = min(start + size, len(lines))
        while end < len(lines) and not cut_before(lines[end]):
            end += 1
        yield header + "".join(lines[start:end]), start - 1
        start = end


def _parse_piece(piece: str, offset: int, source: str, epoch: bool, tz, strict: bool, cluster: str
                 ) -> tuple[list[dict], list[str]]:
    """Parse one piece (in a worker process for big inputs): store rows and error lines."""
    from piqc_slurm.slurm.records import parse_sacct

    try:
        parsed = parse_sacct(piece, source=source, epoch_times=epoch, tz=tz, strict=strict, cluster=cluster)
    except ParseError as exc:
        raise exc.shifted(offset) from None
    return [r.to_row() for r in parsed.records], [str(e.shifted(offset)) for e in parsed.errors]


def _parsed_pieces(text: str, source: str, epoch: bool, tz, strict: bool, cluster: str
                   ) -> Iterator[tuple[list[dict], list[str], int]]:
    """(rows, errors, lines) per piece, in input order. Big inputs are parsed by
    a pool of worker processes while this one writes to the store."""
    pieces = list(chunks(text))
    workers = min(len(pieces), os.cpu_count() or 1, 4)
    if workers <= 1:
        for piece, offset in pieces:
            rows, errors = _parse_piece(piece, offset, source, epoch, tz, strict, cluster)
            yield rows, errors, piece.count("\n") - 1
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_parse_piece, piece, offset, source, epoch, tz, strict, cluster)
                   for piece, offset in pieces]
        sizes = [piece.count("\n") - 1 for piece, _ in pieces]
        del pieces
        for fut, size in zip(futures, sizes, strict=True):
            rows, errors = fut.result()
            yield rows, errors, size


def _store_records(engine: Engine, text: str, source: str, *, epoch: bool, tz, strict: bool, cluster: str,
                   res: IngestResult, progress: Callable[[str], None] | None = None) -> None:
    from piqc_slurm.store.jobs import upsert_jobs

    total = text.count("\n")
    done = 0
    for rows, errors, lines in _parsed_pieces(text, source, epoch, tz, strict, cluster):
        res.errors.extend(errors)
        res.lines_bad += len(errors)
        try:
            with engine.begin() as conn:
                res.jobs += upsert_jobs(conn, rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"writing jobs failed: {first_line(exc)}") from None
        done += lines
        if progress and total > CHUNK_LINES:
            progress(f"{source}: {done:,} of {total:,} lines, {res.jobs:,} jobs")


def ingest(engine: Engine, *, cluster: str, since: int | None = None, until: int | None = None,
           sacct_file: str | None = None, file_tz: str | None = None, spool_dirs: list[Path] | None = None,
           strict: bool = False, env: dict[str, str] | None = None, slice_seconds: int = SLICE,
           progress: Callable[[str], None] | None = None) -> IngestResult:
    """One ingest run. cluster: the watermark's key (and records' cluster when sacct omits it)."""
    from piqc_slurm.slurm.argv import sacct_argv, sacct_env, time_slices
    from piqc_slurm.slurm.run import run_sacct

    say = progress or (lambda _m: None)
    res = IngestResult()
    if sacct_file is not None:
        try:
            text = Path(sacct_file).read_text(errors="surrogateescape") if sacct_file != "-" else sys.stdin.read()
        except OSError as exc:
            raise SacctError(f"{sacct_file}: {exc.strerror}") from None
        epoch = times_are_epoch(text)
        if not cluster and not _has_field(text, "cluster"):
            raise SacctError(f"{sacct_file}: no Cluster column, and no cluster name is known: set `cluster` in "
                             "the config (or run where `scontrol show config` works)")
        _store_records(engine, text, sacct_file, epoch=epoch, tz=file_tz, strict=strict, cluster=cluster, res=res,
                       progress=say)
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
        _inventory_from_scontrol(engine, cluster, base, say)
    if spool_dirs:
        from piqc_slurm.spoolreplay import replay

        try:
            r = replay(engine, spool_dirs)
        except SQLAlchemyError as exc:
            raise StoreError(f"replaying summaries failed: {first_line(exc)}") \
                from None
        res.summaries_taken, res.summaries_unchanged, res.summaries_linked = r.taken, r.unchanged, r.linked
        res.summaries_newer, res.summaries_bad = r.newer, r.bad
        say(f"spool: {r.taken} summaries taken in, {r.unchanged} unchanged, {r.linked} earlier ones joined to "
            "jobs that arrived now")
    return res


def _inventory_from_scontrol(engine: Engine, cluster: str, env: dict[str, str], say: Callable[[str], None]) -> None:
    """Node GPU counts and types from `scontrol show node` into the inventory; a failure only warns."""
    from piqc_slurm.slurm.parse import parse_node_gres
    from piqc_slurm.slurm.run import scontrol_nodes
    from piqc_slurm.store.inventory import from_scontrol

    try:
        gres = parse_node_gres(scontrol_nodes(env))
    except SacctError as exc:
        say(f"node inventory not updated: {exc}")
        return
    try:
        with Session(engine) as s, s.begin():
            n = from_scontrol(s, cluster, gres, int(time.time()))
    except SQLAlchemyError as exc:
        raise StoreError(f"writing the node inventory failed: {first_line(exc)}") from None
    say(f"node inventory: {len(gres)} GPU node(s) from scontrol, {n} GPU row(s) added or changed")


def resolve_cluster(configured: str, env: dict[str, str] | None = None) -> str:
    """The one rule for a cluster's name: the config's `cluster`, else Slurm's ClusterName
    (`scontrol show config`). Never a made-up literal: summaries carry SLURM_CLUSTER_NAME,
    and jobs stored under another name would never meet them."""
    if configured:
        return configured
    from piqc_slurm.slurm.run import scontrol_config_value

    try:
        name = scontrol_config_value("ClusterName", os.environ if env is None else env)
    except SacctError as exc:
        raise SacctError(f"cannot tell the cluster's name: set `cluster` in the config ({exc})") from None
    if not name:
        raise SacctError("cannot tell the cluster's name: scontrol shows no ClusterName; set `cluster` in the config")
    return name


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


__all__ = ["IngestResult", "ingest", "ParseError"]
