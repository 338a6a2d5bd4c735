"""Replay spooled sampler summaries into the store, set aside the ones that
cannot be, and prune the ones the store has.

Reads `<dir>/*.summary.json` and `<dir>/<node>/*.summary.json` (a node's
outbox, or a shared spool with one subdirectory per node). Each file is
recorded per store by name and content hash once taken in, and left where it
is: two stores reading one shared spool each get every summary, and a file
rewritten later (same name, new content) is taken in again. A summary of a
newer format version is left untouched for a newer ingest.

A summary that cannot be taken in because of what it holds (not JSON, not
UTF-8, a field of the wrong type, a value the store refuses, a timeline bin of
the wrong type, unreadable) is moved with its timeline into `quarantine/`
next to it (mode 0700, a rename on the same file system, never through a
symlink), with `<name>.reason` saying why in one line, and the replay goes on:
one bad file never blocks the others, and is not retried every night. Fix it
and move it back to have it read again. A failure of the store itself
(unreachable, locked, out of space: anything but a refused value) is not the
file's fault: it stops the replay, and nothing is moved.

A timeline line that is not JSON (a write torn by a crash or a full disk) is
skipped, as the sampler's reader does; the summary and the other bins are
kept.

`prune` deletes what the store has taken in once it is older than the
retention: summaries (and timelines) in a shared spool recorded in
`spool_replays` under the same name and hash, those a push moved to
`spool_dir/delivered/` whose run is in `node_summaries`, quarantined files,
and the outbox's `.reported` markers of delivered runs, and `spool_dir/jobinfo/` files the
SPANK plugin wrote for jobs whose Epilog never removed them. Never a summary the
store does not have.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.orm import Session

from piqc_slurm.errors import SpoolFormatError, first_line
from piqc_slurm.store.models import NodeSummary, SpoolReplay
from piqc_slurm.store.summaries import check_format, link_summaries, upsert_summary

QUARANTINE = "quarantine"
SUMMARY, TIMELINE, REASON = ".summary.json", ".timeline.jsonl", ".reason"
TIMELINE_FIELDS = ("util", "mem_mib", "power_w")
MAX_SUMMARY_BYTES = 64 << 20  # a summary is a few KiB; anything this big is not one


@dataclass
class ReplayResult:
    taken: int = 0
    unchanged: int = 0
    linked: int = 0
    newer: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # malformed, and could not be moved to quarantine/
    quarantined: list[str] = field(default_factory=list)  # "PATH: why", moved to quarantine/ this run


def timeline_of(summary: Path) -> Path:
    return summary.with_name(summary.name[: -len(SUMMARY)] + TIMELINE)


def _plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _summaries_in(d: Path) -> list[Path]:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.name.endswith(SUMMARY) and not e.name.startswith(".")
            and e.is_file(follow_symlinks=False)]


def summary_files(root: Path) -> list[Path]:
    """`root/*.summary.json` and `root/<node>/*.summary.json`: regular files only, never through a
    symlink, never what is in a quarantine/ directory."""
    root = Path(root)
    if not root.is_dir():
        return []
    files = _summaries_in(root)
    try:
        subdirs = [Path(e.path) for e in os.scandir(root) if e.name != QUARANTINE and e.is_dir(follow_symlinks=False)]
    except OSError:
        subdirs = []
    for d in subdirs:
        files += _summaries_in(d)
    return sorted(files)


def read_file(path: Path, limit: int = MAX_SUMMARY_BYTES) -> tuple[bytes, os.stat_result]:
    """A spool file's bytes (never through a symlink, regular files only) and its stat."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than a summary can be")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _is_int(v, top: int = 2 ** 63) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < top


def read_timeline(path: Path, bins: int | None) -> list[dict]:
    """A delivered timeline's bins, at most `bins` (the summary's count), each checked: `t` and
    `gpu` integers, the readings numbers or null (a SpoolFormatError names the line). A line that
    is not JSON or not UTF-8 is what a torn write leaves (a crash, a full disk): skipped."""
    import math

    try:
        data, _ = read_file(path, limit=1 << 31)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SpoolFormatError(f"timeline {path.name}: unreadable: {exc.strerror}") from None
    out: list[dict] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if bins is not None and len(out) >= bins:
            break
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:
            continue  # torn
        if not isinstance(row, dict) or not _is_int(row.get("t")) or not _is_int(row.get("gpu"), 2 ** 31):
            raise SpoolFormatError(f"timeline {path.name} line {n}: expected a bin with integer t and gpu, "
                                   f"got {raw[:60].decode('utf-8', 'replace')}")
        for k in TIMELINE_FIELDS:
            v = row.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise SpoolFormatError(f"timeline {path.name} line {n}: {k}: expected a number, got {v!r:.40}")
        out.append(row)
    return out


def _safe_dir(path: Path) -> None:
    """`path` exists (made 0700 if not) and is a plain directory owned by root or us, writable by
    no one else: OSError otherwise."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{path} is not a plain directory")
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{path} is owned by uid {st.st_uid} or writable by others "
                                   f"(mode {st.st_mode & 0o777:o})")


def quarantine(path: Path, reason: str) -> Path:
    """Move a summary and its timeline into quarantine/ beside it, with `<name>.reason` (one line);
    the summary's new path. OSError if it cannot (FileNotFoundError: it is gone already)."""
    qdir = path.parent / QUARANTINE
    _safe_dir(qdir)
    dest = qdir / path.name
    os.rename(path, dest)  # rename moves a symlink itself, never what it points to
    tl = timeline_of(path)
    try:
        os.rename(tl, qdir / tl.name)
    except FileNotFoundError:
        pass
    line = (reason.splitlines() or ["malformed"])[0].strip()[:1000]
    from piqc_slurm.fsutil import write_all

    fd = os.open(qdir / (path.name + REASON), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, (line + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return dest


def _why(exc: BaseException, path: Path) -> str:
    text = first_line(exc) if isinstance(exc, SQLAlchemyError) else (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError) and exc.strerror:
        text = f"unreadable: {exc.strerror}"
    elif isinstance(exc, UnicodeDecodeError):
        text = f"not UTF-8: {text}"
    elif isinstance(exc, json.JSONDecodeError):
        text = f"not JSON: {text}"
    elif isinstance(exc, SQLAlchemyError):
        text = f"the store refused it: {text}"
    text = text.removeprefix(f"{path}: ")
    return text or type(exc).__name__


def _set_aside(res: ReplayResult, path: Path, exc: BaseException) -> None:
    why = _why(exc, path)
    try:
        quarantine(path, why)
    except FileNotFoundError:
        return  # gone meanwhile (an Epilog's retry delivered it, a prune): nothing to set aside
    except OSError as err:
        res.bad.append(f"{path}: {why} (could not move it to {QUARANTINE}/: {err.strerror or err})")
        return
    res.quarantined.append(f"{path}: {why}")


def file_fault(exc: SQLAlchemyError) -> bool:
    """A store error caused by one summary's values (the store refused them), not by the store:
    a constraint, a value out of a column's range, one the driver cannot bind."""
    return isinstance(exc, (IntegrityError, DataError)) or (isinstance(exc, StatementError)
                                                           and not isinstance(exc, DBAPIError))


def replay(engine: Engine, roots: list[Path]) -> ReplayResult:
    """Take every new or changed summary under `roots` into the store. SQLAlchemyError (raised on)
    when the store itself fails: nothing is quarantined for that."""
    res = ReplayResult()
    with Session(engine) as session:
        known = dict(session.execute(select(SpoolReplay.name, SpoolReplay.sha256)).all())
    for root in roots:
        for path in summary_files(root):
            name = f"{path.parent.name}/{path.name}"
            try:
                data, _ = read_file(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                _set_aside(res, path, exc)
                continue
            digest = hashlib.sha256(data).hexdigest()
            if known.get(name) == digest:
                res.unchanged += 1
                continue
            try:
                doc = json.loads(data)  # bytes: UTF-8 (or -16/-32) or a UnicodeDecodeError, a ValueError
                fmt = doc.get("format", "") if isinstance(doc, dict) else ""
                if isinstance(fmt, str) and fmt.startswith("piqc-summary/") and fmt != "piqc-summary/1":
                    res.newer.append(f"{path}: {fmt}")
                    continue
                check_format(doc, str(path))
                timeline = read_timeline(timeline_of(path), doc.get("timeline_bins"))
            except (ValueError, RecursionError, SpoolFormatError) as exc:
                _set_aside(res, path, exc)
                continue
            try:
                with Session(engine) as session, session.begin():  # rolled back on any error
                    upsert_summary(session, doc, timeline)
                    row = session.get(SpoolReplay, name)
                    if row is None:
                        session.add(SpoolReplay(name=name, sha256=digest, at=int(time.time())))
                    else:
                        row.sha256, row.at = digest, int(time.time())
            except SQLAlchemyError as exc:
                if not file_fault(exc):
                    raise
                _set_aside(res, path, exc)
                continue
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # past check_format
                _set_aside(res, path, exc)
                continue
            known[name] = digest
            res.taken += 1
    with Session(engine) as session, session.begin():
        res.linked = link_summaries(session)
    return res


# ---------------------------------------------------------------------------------------------------
# prune


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)  # paths (to remove, with dry_run)
    kept: list[str] = field(default_factory=list)  # "PATH: why" for files old enough but kept
    recent: int = 0  # files newer than the retention, kept


def _entries(d: Path) -> list[os.DirEntry]:
    if not _plain_dir(d):
        return []
    try:
        return sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        return []


def _unlink(res: PruneResult, path: Path, dry_run: bool, st: os.stat_result | None = None) -> bool:
    """Remove one file (never through a symlink); with `st`, only if it is still that file."""
    if not dry_run:
        try:
            if st is not None:
                now = os.lstat(path)
                if (now.st_ino, now.st_dev, now.st_mtime_ns) != (st.st_ino, st.st_dev, st.st_mtime_ns):
                    res.kept.append(f"{path}: changed while pruning")
                    return False
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            res.kept.append(f"{path}: cannot remove: {exc.strerror}")
            return False
    res.removed.append(str(path))
    return True


class _Store:
    """The store, opened on first need (a spool with nothing old enough never opens it)."""

    def __init__(self, open_store: Callable[[], Engine]):
        self._open, self.engine = open_store, None

    def session(self) -> Session:
        if self.engine is None:
            self.engine = self._open()
        return Session(self.engine)

    def replayed(self, name: str) -> str | None:
        with self.session() as s:
            return s.execute(select(SpoolReplay.sha256).where(SpoolReplay.name == name)).scalar_one_or_none()

    def has_run(self, doc: dict) -> bool:
        with self.session() as s:
            return s.execute(select(NodeSummary.id).where(
                NodeSummary.cluster == doc["cluster"], NodeSummary.job_id_raw == doc["job_id"],
                NodeSummary.restart_count == doc["restart_count"], NodeSummary.node == doc["node"],
                NodeSummary.started_at == int(doc.get("started") or 0)).limit(1)).first() is not None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _prune_summaries(res: PruneResult, d: Path, cutoff: float, store: _Store, how: str, dry_run: bool) -> None:
    """Old summaries in `d` the store has (how: "replayed": spool_replays by name and hash;
    "pushed": node_summaries by the run's key), with their timelines."""
    for e in _entries(d):
        if not e.name.endswith(SUMMARY) or not e.is_file(follow_symlinks=False):
            continue
        path = Path(e.path)
        try:
            data, st = read_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            res.kept.append(f"{path}: unreadable: {exc.strerror}")
            continue
        if st.st_mtime >= cutoff:
            res.recent += 1
            continue
        if how == "replayed":
            taken = store.replayed(f"{d.name}/{e.name}") == hashlib.sha256(data).hexdigest()
        else:
            try:
                taken = store.has_run(check_format(json.loads(data), str(path)))
            except (ValueError, SpoolFormatError) as exc:
                res.kept.append(f"{path}: not a readable summary ({_why(exc, path)})")
                continue
        if not taken:
            res.kept.append(f"{path}: not taken in by the store")
            continue
        if _unlink(res, path, dry_run, st):
            tl = timeline_of(path)
            if _plain_file(tl):
                _unlink(res, tl, dry_run)


def _plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _prune_old(res: PruneResult, d: Path, cutoff: float, dry_run: bool, keep: Callable[[str], bool] = lambda n: False,
               suffixes: tuple[str, ...] = ()) -> None:
    """Regular files in `d` (those ending in `suffixes`, if given) older than `cutoff`, unless keep(name)."""
    for e in _entries(d):
        if suffixes and not e.name.endswith(suffixes):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_mtime >= cutoff:
            res.recent += 1
        elif keep(e.name):
            res.kept.append(f"{e.path}: its summary is still waiting in the outbox")
        else:
            _unlink(res, Path(e.path), dry_run, st)


def _prune_orphaned(res: PruneResult, d: Path, cutoff: float, dry_run: bool) -> None:
    """`orphaned/<key>/`: the run dirs of runs that ended without an Epilog (the sampler spooled
    their summary into the outbox itself, and left a `spooled` marker naming it). What is left in
    one is the sampler's working files: a dir whose newest file is older than `cutoff` goes; one
    without the marker (no summary was spooled from it) is kept and said."""
    from piqc_slurm.sampler.orphan import SPOOLED_NAME

    for e in _entries(d):
        if not e.is_dir(follow_symlinks=False):
            continue
        run = Path(e.path)
        files = _entries(run)
        if not any(f.name == SPOOLED_NAME for f in files):
            res.kept.append(f"{run}: no summary was spooled from it")
            continue
        try:
            newest = max([e.stat(follow_symlinks=False).st_mtime]
                         + [f.stat(follow_symlinks=False).st_mtime for f in files])
        except OSError:
            continue
        if newest >= cutoff:
            res.recent += 1
            continue
        for f in files:
            if not f.is_dir(follow_symlinks=False):
                _unlink(res, Path(f.path), dry_run)
        if not dry_run:
            try:
                run.rmdir()
            except OSError as exc:
                res.kept.append(f"{run}: cannot remove: {exc.strerror}")


def prune(*, spool_dir: Path | None, shared_spool_dir: Path | None, older_than: float,
          open_store: Callable[[], Engine], dry_run: bool = False, now: float | None = None) -> PruneResult:
    """Delete what is older than `older_than` seconds and safe to delete (see the module's doc).
    open_store: the store's engine, opened only if some file needs checking."""
    cutoff = (time.time() if now is None else now) - older_than
    res = PruneResult()
    store = _Store(open_store)
    try:
        if spool_dir is not None:
            delivered, outbox = Path(spool_dir) / "delivered", Path(spool_dir) / "outbox"
            _prune_summaries(res, delivered, cutoff, store, "pushed", dry_run)
            waiting = {e.name[: -len(SUMMARY)] for e in _entries(outbox) if e.name.endswith(SUMMARY)}
            _prune_old(res, outbox, cutoff, dry_run, keep=lambda n: n[: -len(".reported")] in waiting,
                       suffixes=(".reported",))
            _prune_old(res, outbox / QUARANTINE, cutoff, dry_run)
            _prune_orphaned(res, Path(spool_dir) / "orphaned", cutoff, dry_run)
            _prune_old(res, Path(spool_dir) / "jobinfo", cutoff, dry_run)  # SPANK job info whose Epilog never ran
        if shared_spool_dir is not None and Path(shared_spool_dir).is_dir():
            root = Path(shared_spool_dir)
            _prune_old(res, root / QUARANTINE, cutoff, dry_run)
            _prune_summaries(res, root, cutoff, store, "replayed", dry_run)
            for e in _entries(root):
                if e.name != QUARANTINE and e.is_dir(follow_symlinks=False):
                    _prune_summaries(res, Path(e.path), cutoff, store, "replayed", dry_run)
                    _prune_old(res, Path(e.path) / QUARANTINE, cutoff, dry_run)
    finally:
        store.close()
    return res
