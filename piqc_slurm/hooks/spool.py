"""The node-local spool: where a running job's sampler keeps its state and a
finished job's summary waits for delivery.

    <spool_dir>/                       root:root 0700
      run/<key>/                       one per running job on this node
        context.json                   written by the Prolog
        sampler.pid                    written by the Prolog's intermediate child
        checkpoint.json                fixed-size aggregates (sampler, atomic)
        timeline.jsonl                 closed timeline bins (sampler, append-only)
      outbox/<key>.<start>.summary.json   finished summaries (Epilog, atomic)
      outbox/<key>.<start>.timeline.jsonl their timelines (moved, never rewritten)
      outbox/<key>.<start>.reported     the user report was written once
      outbox/quarantine/                summaries a push or ingest could not take in, with .reason
      delivered/                        summaries a push put into the store (`spool prune` removes them)
      lost.count                        how many summaries could not be spooled (disk full, read-only)

<key> is cluster.jobid.restart.node (hooks/context.py); <start> the run's
start (epoch seconds), so a reused job id never replaces an old run's files. Only root writes here;
nothing in it is ever opened through a symlink. A spool (or run/, or a job's run dir) that is a
symlink, writable by group or others, or not owned by the hook's user (root) is refused before
anything is read from or written to it: the hook logs why and exits 0, the job runs unmonitored.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from piqc_slurm.fsutil import unsafe_dir


class SpoolError(OSError):
    pass


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create `path` (and parents) root-only; refuse one that is a symlink or
    writable by others, since root will write in it."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    check_dir(path)
    return path


def check_dir(path: Path) -> None:
    """ensure_dir's checks on `path` where it exists, creating nothing."""
    try:
        why = unsafe_dir(path)
    except FileNotFoundError:
        return
    if why:
        raise SpoolError(why)


UNMONITORED = "refusing the spool: nothing is read or written there, this job runs unmonitored"


class Spool:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def check(self, key: str) -> None:
        """Refuse (SpoolError, saying the job runs unmonitored) a spool root, run/ or the job's run
        dir that exists and is not root-only; creates nothing."""
        try:
            for d in (self.root, self.root / "run", self.run_dir(key)):
                check_dir(d)
        except SpoolError as exc:
            raise SpoolError(f"{exc}: {UNMONITORED}") from None

    def backlog(self) -> list[str]:
        """Outbox keys (`<key>.<start>`) of summaries waiting for delivery, oldest first, except
        those whose job still has a run dir here (running, or its Epilog is under way)."""
        out = []
        try:
            entries = list(os.scandir(self.outbox()))
        except OSError:
            return []
        for e in entries:
            if not e.name.endswith(".summary.json") or e.name.startswith("."):
                continue
            out_key = e.name[: -len(".summary.json")]
            job_key, dot, start = out_key.rpartition(".")
            if not dot or not start.isdigit() or os.path.lexists(self.run_dir(job_key)):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((st.st_mtime, e.name, out_key))
        return [k for _m, _n, k in sorted(out)]

    def bump_lost(self) -> int:
        """Count one summary lost (`lost.count`, updated in place under a lock: a full disk still
        has the block the file holds); the new count. OSError if it cannot."""
        import fcntl

        fd = os.open(self.root / "lost.count", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            n = (int(raw) if raw.isdigit() else 0) + 1
            data = f"{n}\n".encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        return n

    def run_dir(self, key: str) -> Path:
        return self.root / "run" / key

    def outbox(self) -> Path:
        return self.root / "outbox"

    def summary_path(self, key: str) -> Path:
        return self.outbox() / f"{key}.summary.json"

    def timeline_path(self, key: str) -> Path:
        return self.outbox() / f"{key}.timeline.jsonl"

    def make_run_dir(self, key: str) -> Path:
        try:
            ensure_dir(self.root)
            ensure_dir(self.root / "run")
            d = self.run_dir(key)
            d.mkdir(mode=0o700, exist_ok=True)
            return ensure_dir(d)
        except SpoolError as exc:
            raise SpoolError(f"{exc}: {UNMONITORED}") from None

    def make_outbox(self) -> Path:
        try:
            ensure_dir(self.root)
            return ensure_dir(self.outbox())
        except SpoolError as exc:
            raise SpoolError(f"{exc}: refusing the spool: no summary is written for this job") from None


def write_json_atomic(path: Path, doc: dict, mode: int = 0o600) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half."""
    from piqc_slurm.fsutil import write_atomic

    write_atomic(path, json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), mode)


def read_json(path: Path) -> dict:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        return json.load(fh)
