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

The watermark (how far sacct has been read) moves only over what was read:
after each slice completely written, to max(watermark, slice end), and only
when the window starts at or before the old watermark (contiguous with what
was read before, overlap allowed). A window that starts later leaves the
watermark where it was and warns about the hole, so the next default run
reads it. A --sacct-file or --spool-only run never moves it: a file says
nothing about which window it covered completely.
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

from piqc_slurm.errors import ParseError, SacctError, StoreError, UsageError, first_line

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
    summaries_quarantined: list[str] = field(default_factory=list)  # moved to quarantine/ this run
    window: tuple[int, int] | None = None
    watermark: int | None = None  # the sacct watermark after the run (None: no sacct run)
    warnings: list[str] = field(default_factory=list)


def _watermark(engine: Engine, cluster: str) -> int | None:
    from piqc_slurm.store.models import Watermark

    try:
        with Session(engine) as s:
            row = s.get(Watermark, (cluster, "sacct"))
            return row.until if row else None
    except SQLAlchemyError as exc:
        raise StoreError(f"reading the ingest watermark failed: {first_line(exc)}") from None


def _set_watermark(engine: Engine, cluster: str, until: int) -> int:
    """Move the watermark forward to `until` (never back); the watermark after."""
    from piqc_slurm.store.models import Watermark

    try:
        with Session(engine) as s, s.begin():
            row = s.get(Watermark, (cluster, "sacct"))
            if row is None:
                s.add(Watermark(cluster=cluster, source="sacct", until=until))
                return until
            if until > row.until:
                row.until = until
            return row.until
    except SQLAlchemyError as exc:
        raise StoreError(f"writing the ingest watermark failed: {first_line(exc)}") from None


_SURROGATE = re.compile("[\udc80-\udcff]")
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)
HEADER_EXAMPLE = "JobID|JobIDRaw|Cluster|User|...|Submit|..."


def _replace_undecodable(text: str, source: str, warn: Callable[[str], None]) -> str:
    """Text read with errors="surrogateescape": bytes that are not UTF-8 (a job name typed in
    Latin-1) become U+FFFD, with a warning naming the lines; the job itself is kept."""
    if not _SURROGATE.search(text):
        return text
    lines = [i for i, ln in enumerate(text.split("\n"), 1) if _SURROGATE.search(ln)]
    warn(f"{source}: {len(lines)} line(s) not UTF-8 (first: line {lines[0]}); "
         "the bytes that are not were replaced by U+FFFD")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_sacct_file(data: bytes, name: str, warn: Callable[[str], None]) -> str:
    """A --sacct-file's bytes as text, or SacctError (exit 4) when it cannot be sacct output:
    empty, binary, or without a header line that names JobID and Submit."""
    from piqc_slurm.slurm.fields import REQUIRED_FIELDS

    if not data.strip():
        raise SacctError(f"{name} is empty")
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        raise SacctError(f"{name}: binary data (a NUL byte on line {text.count(chr(10), 0, nul) + 1}), "
                         "not `sacct -P` output")
    lines = text.split("\n")
    h = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#")), None)
    no_header = (f"{name}: no sacct header line (expected `sacct -P` output with its header, "
                 f"e.g. {HEADER_EXAMPLE})")
    if h is None:
        raise SacctError(no_header)
    header = lines[h].removesuffix("\r")
    if _SURROGATE.search(header):
        raise SacctError(f"{name}: not text: line {h + 1} is not UTF-8 (expected `sacct -P` output)")
    delim = "\x1f" if "\x1f" in header else "|"
    names = header.split(delim)
    if len(names) > 1 and names[-1] == "":  # sacct -p: a trailing delimiter
        names.pop()
    lower = {n.lower() for n in names}
    if not all(_HEADER_NAME.fullmatch(n) for n in names) or not lower & {"jobid", "jobidraw"}:
        raise SacctError(no_header)
    missing = [f for f in REQUIRED_FIELDS if f.lower() not in lower]
    if missing:
        raise SacctError(f"{name}:{h + 1}: the sacct header lacks {', '.join(missing)}, needed to identify "
                         "a job (sacct prints every field it is asked for with -o/--format)")
    return _replace_undecodable(text, name, warn)


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
                   res: IngestResult, progress: Callable[[str], None] | None = None) -> int:
    """Parse and upsert; how many job records the text held."""
    from piqc_slurm.store.jobs import upsert_jobs

    total = text.count("\n")
    done = parsed = 0
    for rows, errors, lines in _parsed_pieces(text, source, epoch, tz, strict, cluster):
        res.errors.extend(errors)
        res.lines_bad += len(errors)
        parsed += len(rows)
        try:
            with engine.begin() as conn:
                res.jobs += upsert_jobs(conn, rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"writing jobs failed: {first_line(exc)}") from None
        done += lines
        if progress and total > CHUNK_LINES:
            progress(f"{source}: {done:,} of {total:,} lines, {res.jobs:,} jobs")
    return parsed


def ingest(engine: Engine, *, cluster: str, since: int | None = None, until: int | None = None,
           sacct_file: str | None = None, file_tz: str | None = None, spool_dirs: list[Path] | None = None,
           strict: bool = False, env: dict[str, str] | None = None, slice_seconds: int = SLICE,
           progress: Callable[[str], None] | None = None, spool_only: bool = False,
           warn: Callable[[str], None] | None = None) -> IngestResult:
    """One ingest run. cluster: the watermark's key (and records' cluster when sacct omits it).
    spool_only: only replay spool_dirs (no sacct, no watermark). warn: called with each warning
    as it arises (they are also in the result's `warnings`)."""
    from piqc_slurm.slurm.argv import sacct_argv, sacct_env, time_slices
    from piqc_slurm.slurm.run import run_sacct

    say = progress or (lambda _m: None)
    res = IngestResult()

    def warning(msg: str) -> None:
        res.warnings.append(msg)
        if warn:
            warn(msg)

    if spool_only:
        pass  # no sacct, no watermark: the summaries below only
    elif sacct_file is not None:
        try:
            data = Path(sacct_file).read_bytes() if sacct_file != "-" else sys.stdin.buffer.read()
        except OSError as exc:
            raise SacctError(f"{sacct_file}: {exc.strerror}") from None
        text = read_sacct_file(data, sacct_file, warning)
        del data
        epoch = times_are_epoch(text)
        if not cluster and not _has_field(text, "cluster"):
            raise SacctError(f"{sacct_file}: no Cluster column, and no cluster name is known: set `cluster` in "
                             "the config (or run where `scontrol show config` works)")
        parsed = _store_records(engine, text, sacct_file, epoch=epoch, tz=file_tz, strict=strict, cluster=cluster,
                                res=res, progress=say)
        if parsed == 0 and res.errors:
            raise SacctError(f"{sacct_file}: no job record could be read ({res.lines_bad} malformed line(s)); "
                             f"the first: {res.errors[0]}")
        zone = "epoch seconds" if epoch else f"times read in zone {file_tz or 'UTC'}"
        say(f"{sacct_file}: {res.jobs} job record(s) ({zone})")
    else:
        now = int(time.time())
        end = until if until is not None else now
        mark = _watermark(engine, cluster)
        if since is None:
            start = (mark - OVERLAP) if mark is not None else end - FIRST_WINDOW
            if until is not None and start >= end:
                raise UsageError(f"--until {_iso(end)} is not after the default window start {_iso(start)} "
                                 "(the last ingest's end less 6 h): give --since as well")
        else:
            start = since
            if start >= end:
                raise UsageError(f"--since ({_iso(start)}) must be before --until ({_iso(end)})")
        res.window = (start, end)
        res.watermark = mark
        # Contiguous with what was read before (overlap allowed): the watermark may move.
        contiguous = mark is None or start <= mark
        if not contiguous:
            warning(f"records between {_iso(mark)} and {_iso(start)} were not read; run "
                    f"`piqc-slurm ingest --since {_iso(mark)}` (the watermark stays at {_iso(mark)})")
        base = sacct_env(os.environ if env is None else env)
        slices = time_slices(start, end, slice_seconds)
        for i, (a, b) in enumerate(slices, 1):
            asked = int(time.time())  # sacct shows nothing eligible after it was asked
            source = f"sacct[{i}/{len(slices)}]"
            text = _replace_undecodable(run_sacct(sacct_argv(a, b), base), source, warning)
            before = res.jobs
            _store_records(engine, text, source, epoch=True, tz=None, strict=strict, cluster=cluster, res=res)
            say(f"sacct slice {i}/{len(slices)} {_iso(a)} .. {_iso(b)}: {res.jobs - before} job record(s)")
            if contiguous:  # this slice is completely written: the watermark moves over it
                res.watermark = _set_watermark(engine, cluster, min(b, asked))
                # a slice that ends after the moment sacct was asked read only up to that moment
                contiguous = b <= asked
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
        res.summaries_quarantined = r.quarantined
        say(f"spool: {r.taken} summaries taken in, {r.unchanged} unchanged, {r.linked} earlier ones joined to "
            f"jobs that arrived now, {len(r.quarantined)} malformed moved to quarantine/")
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
