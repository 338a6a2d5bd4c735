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

<key> is cluster.jobid.restart.node (hooks/context.py); <start> the run's
start (epoch seconds), so a reused job id never replaces an old run's files. Only root writes here;
nothing in it is ever opened through a symlink.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path


class SpoolError(OSError):
    pass


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create `path` (and parents) root-only; refuse one that is a symlink or
    writable by others, since root will write in it."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise SpoolError(f"{path} is not a plain directory")
    if st.st_uid != os.geteuid():
        raise SpoolError(f"{path} is owned by uid {st.st_uid}, not by us")
    if st.st_mode & 0o022:
        raise SpoolError(f"{path} is writable by group or others (mode {st.st_mode & 0o777:o})")
    return path


class Spool:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, key: str) -> Path:
        return self.root / "run" / key

    def outbox(self) -> Path:
        return self.root / "outbox"

    def summary_path(self, key: str) -> Path:
        return self.outbox() / f"{key}.summary.json"

    def timeline_path(self, key: str) -> Path:
        return self.outbox() / f"{key}.timeline.jsonl"

    def make_run_dir(self, key: str) -> Path:
        ensure_dir(self.root)
        ensure_dir(self.root / "run")
        d = self.run_dir(key)
        d.mkdir(mode=0o700, exist_ok=True)
        ensure_dir(d)
        return d

    def make_outbox(self) -> Path:
        ensure_dir(self.root)
        return ensure_dir(self.outbox())


def write_json_atomic(path: Path, doc: dict, mode: int = 0o600) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half."""
    from piqc_slurm.fsutil import write_atomic

    write_atomic(path, json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), mode)


def read_json(path: Path) -> dict:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        return json.load(fh)
