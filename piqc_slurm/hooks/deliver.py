"""Deliver a spooled summary (and its timeline) off the node.

The summary is always in the node's outbox first; delivery only moves or
copies it on. Any failure leaves it there for `piqc-slurm ingest --spool` to
replay: nothing is lost, and the Epilog still exits 0.

shared-spool: SHARED/<node>/ gets the timeline, then the summary, each by an
atomic rename (a copy to a temp name plus rename across file systems), so a
reader never sees a summary without its timeline or half a file.
push: inserted into the store (PostgreSQL sites) after a random jitter, with a
short connect timeout; on success the outbox copy is marked delivered.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

from piqc_slurm.hooks.spool import Spool, ensure_dir


def _move_atomic(src: Path, dest_dir: Path) -> None:
    dest = dest_dir / src.name
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another file system
            raise
    tmp = dest_dir / f".{src.name}.{os.getpid()}.tmp"
    with open(src, "rb") as fin, open(tmp, "xb") as fout:
        shutil.copyfileobj(fin, fout)
        fout.flush()
        os.fsync(fout.fileno())
    os.rename(tmp, dest)
    os.unlink(src)


def to_shared_spool(spool: Spool, key: str, node: str, shared_dir: str) -> str:
    if not shared_dir:
        raise OSError("delivery = shared-spool but shared_spool_dir is not set")
    node_dir = Path(shared_dir) / node
    node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_dir(node_dir)
    timeline = spool.timeline_path(key)
    if timeline.exists():
        _move_atomic(timeline, node_dir)
    _move_atomic(spool.summary_path(key), node_dir)
    return f"moved to {node_dir}"


def push(spool: Spool, key: str, db_url: str, connect_timeout: float, jitter: float) -> str:
    from piqc_slurm.store import push_summary  # only push sites pay for SQLAlchemy

    if jitter > 0:
        time.sleep(random.uniform(0, jitter))
    push_summary(db_url, spool.summary_path(key), spool.timeline_path(key), connect_timeout=connect_timeout)
    delivered = spool.root / "delivered"
    ensure_dir(delivered)
    for p in (spool.summary_path(key), spool.timeline_path(key)):
        if p.exists():
            os.rename(p, delivered / p.name)
    return "pushed to the store"


def deliver(spool: Spool, key: str, node: str, cfg) -> str:
    mode = cfg["delivery"]
    if mode == "spool-only":
        return "left in the spool (delivery = spool-only)"
    if mode == "shared-spool":
        return to_shared_spool(spool, key, node, cfg["shared_spool_dir"])
    return push(spool, key, cfg["db"], cfg["epilog.push_connect_timeout"], cfg["epilog.push_jitter"])
