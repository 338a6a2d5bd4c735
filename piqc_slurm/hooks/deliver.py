"""Deliver a spooled summary (and its timeline) off the node.

The summary is always in the node's outbox first; delivery only moves or
copies it on. Any failure leaves it there for `piqc-slurm ingest --spool` to
replay: nothing is lost, and the Epilog still exits 0.

shared-spool: SHARED/<node>/ gets the timeline, then the summary, each by an
atomic rename (a copy to a temp name plus rename across file systems), so a
reader never sees a summary without its timeline or half a file.
push: inserted into the store (PostgreSQL sites) after a random jitter, with a
short connect timeout; on success the outbox copy is moved to spool_dir/delivered/.

Backlog: after this job's summary is delivered, the Epilog retries up to
`epilog.retry_backlog` older outbox summaries, oldest first, the same way (no
jitter: the store just answered), each only if the hook's time budget still
has room for it, never one whose job still has a run dir on this node. The
first failure stops the retries (the store or the shared spool is in trouble
again); a summary a push cannot read (not JSON, a wrong field) is moved to
outbox/quarantine/ with its reason, and the retries go on.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

from piqc_slurm.hooks.spool import Spool, ensure_dir


def move_atomic(src: Path, dest_dir: Path, name: str | None = None) -> None:
    """Rename `src` to dest_dir/name (default: its own name); across file systems, copy to a
    temp name, fsync, rename, then unlink the source. Never through a symlink; a failed copy
    (a full disk) leaves no temp file behind."""
    dest = dest_dir / (name or src.name)
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another file system
            raise
    tmp = dest_dir / f".{dest.name}.{os.getpid()}.tmp"
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fin:
        try:
            with open(tmp, "xb") as fout:  # O_EXCL: never through a symlink either
                shutil.copyfileobj(fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
            os.rename(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.unlink(src)


def to_shared_spool(spool: Spool, key: str, node: str, shared_dir: str) -> str:
    if not shared_dir:
        raise OSError("delivery = shared-spool but shared_spool_dir is not set")
    node_dir = Path(shared_dir) / node
    node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_dir(node_dir)
    timeline = spool.timeline_path(key)
    if timeline.exists():
        move_atomic(timeline, node_dir)
    move_atomic(spool.summary_path(key), node_dir)
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


def spawn_detached(ready_timeout: float = 2.0) -> int:
    """Fork a child in a session of its own: the child gets 0, the parent the child's pid, once
    the child has left the hook's process group and session (slurmd kills that group when the
    hook exits; the wait makes that kill unable to reach the child). The child's stdin, and its
    stdout/stderr unless they are plain files (the wrapper's PIQC_HOOK_LOG), go to /dev/null:
    it holds no pipe of slurmd's or a caller's open. OSError where no child can be made."""
    import select
    import stat

    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        os.close(r)
        try:
            os.setsid()
        except OSError:
            pass  # already a session leader: still out of the hook's group
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        for fd in (1, 2):
            try:
                plain = stat.S_ISREG(os.fstat(fd).st_mode)
            except OSError:
                plain = False
            if not plain:
                os.dup2(null, fd)
        os.close(null)
        os.write(w, b"1")
        os.close(w)
        return 0
    os.close(w)
    try:
        select.select([r], [], [], ready_timeout)
    finally:
        os.close(r)
    return pid


def deliver(spool: Spool, key: str, node: str, cfg, jitter: float | None = None) -> str:
    mode = cfg["delivery"]
    if mode == "spool-only":
        return "left in the spool (delivery = spool-only)"
    if mode == "shared-spool":
        return to_shared_spool(spool, key, node, cfg["shared_spool_dir"])
    return push(spool, key, cfg["db"], cfg["epilog.push_connect_timeout"],
                cfg["epilog.push_jitter"] if jitter is None else jitter)


def attempt_seconds(cfg) -> float:
    """Time one retry may take, asked for before it starts."""
    return cfg["epilog.push_connect_timeout"] + 2.0 if cfg["delivery"] == "push" else 1.0


def retry_backlog(spool: Spool, node: str, cfg, deadline: float) -> str:
    """Retry older outbox summaries (see the module's doc) until `deadline` (time.monotonic());
    a one-line account. Raises nothing."""
    limit = cfg["epilog.retry_backlog"]
    if limit <= 0 or cfg["delivery"] == "spool-only":
        return ""
    keys = spool.backlog()[:limit]
    if not keys:
        return ""
    done, set_aside, why = 0, [], ""
    for key in keys:
        if time.monotonic() + attempt_seconds(cfg) > deadline:
            why = "no time left in this Epilog"
            break
        try:
            deliver(spool, key, node, cfg, jitter=0.0)
            done += 1
        except Exception as exc:  # noqa: BLE001 - it stays spooled; the next Epilog tries again
            if _unreadable(exc):
                set_aside.append(_quarantine(spool, key, exc))
                continue
            why = f"{key}: {exc}"
            break
    rest = len(keys) - done - len(set_aside)
    text = f"backlog: {done} older summar{'y' if done == 1 else 'ies'} delivered"
    if set_aside:
        text += f", {'; '.join(set_aside)}"
    if rest:
        text += f", {rest} left for later ({why})"
    return text


def _unreadable(exc: Exception) -> bool:
    """The summary's own fault (a push could not read it), not the store's."""
    from piqc_slurm.errors import SpoolFormatError

    return isinstance(exc, (SpoolFormatError, ValueError))


def _quarantine(spool: Spool, key: str, exc: Exception) -> str:
    from piqc_slurm.errors import first_line
    from piqc_slurm.spoolreplay import quarantine

    path = spool.summary_path(key)
    why = first_line(exc).removeprefix(f"{path}: ")
    try:
        quarantine(path, why)
    except OSError as err:
        return f"{key} unreadable ({why}), could not be moved to quarantine/: {err}"
    return f"{key} moved to outbox/quarantine/ ({why})"
