"""A job that ended without an Epilog: the sampler spools its summary itself.

When slurmd is killed (or restarted, or its hooks are broken) while a job
runs, no Epilog comes to stop the sampler and spool the summary. The
sampler notices by itself that the job's slurmstepd is gone (run.py's
orphan check, read from /proc: no controller RPC), writes a final
checkpoint whose `partial_reason` starts with NO_EPILOG, and then, before
it exits, does what the Epilog would have done with it: builds the summary
(piqc_slurm.summary.build, marked partial with that reason) and writes it,
with the timeline, into the node's outbox under the name the Epilog would
have used (`<key>.<start>.summary.json`), where `ingest --spool` (or a later
delivery from the outbox) takes it in like any other.

It then writes RUN_DIR/spooled holding that outbox key and moves RUN_DIR
to `<spool>/orphaned/<key>/` (so the outbox backlog, which waits for jobs
that still have a run dir, delivers the summary at the node's next Epilog;
the checkpoint stays there for inspection). An Epilog that still comes
later (slurmd back before the job was cleaned up) finds the key there and
only delivers what is already spooled, instead of building a second
summary of the same run (`find_spooled`).

Only for a RUN_DIR in the spool's layout (`<spool>/run/<key>/` with the
Prolog's job.json); elsewhere (tests, a hand-started sampler) nothing is
spooled. Standard library and the summary layer only; imported lazily, at
the end of an orphaned run, so the sampler's start-up cost is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from piqc_slurm.fsutil import unsafe_dir, write_atomic

log = logging.getLogger("piqc-slurm.sampler")

SPOOLED_NAME = "spooled"
"""RUN_DIR file naming the outbox key of the summary the sampler spooled itself."""

ORPHANED_DIR = "orphaned"
"""<spool>/orphaned/<key>/: where the run dir of a run that ended without an Epilog goes."""

JOB_NAME = "job.json"
TIMELINE_NAME = "timeline.jsonl"


def _outbox(run_dir: Path) -> Path | None:
    """<spool>/outbox for a run dir <spool>/run/<key>; None for a run dir outside a spool."""
    if run_dir.parent.name != "run":
        return None
    return run_dir.parent.parent / "outbox"


def _ensure_private_dir(path: Path) -> None:
    """Create `path` 0700 if missing; refuse a symlink, another owner's or a group/other-writable
    directory (fsutil.unsafe_dir, the hooks' rule too: root writes there)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    why = unsafe_dir(path)
    if why:
        raise OSError(why)


def _read_json(path: Path) -> Any:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as fh:
        return json.load(fh)


def spool_summary(run_dir: str | Path, checkpoint: dict[str, Any], *, ended: float,
                  reason: str) -> str | None:
    """Spool the partial summary of an orphaned run; its outbox key, or None when `run_dir` is not
    a spool run dir with a job.json. OSError / ValueError when it cannot be written."""
    run_dir = Path(run_dir)
    outbox = _outbox(run_dir)
    if outbox is None or not (run_dir / JOB_NAME).is_file():
        return None
    job_doc = _read_json(run_dir / JOB_NAME)
    if not isinstance(job_doc, dict) or not isinstance(job_doc.get("job"), dict):
        raise ValueError(f"{run_dir / JOB_NAME}: not the Prolog's job document")
    from piqc_slurm.summary import build
    from piqc_slurm.usage.catalog import load_catalog, without_types

    try:
        catalog = load_catalog()
    except (OSError, ValueError) as exc:   # a broken install must not lose the job's summary
        log.error("GPU catalog unreadable, summary without GPU types: %s", exc)
        catalog = without_types(str(exc))
    job = {**job_doc["job"], "exit_code": None, "prolog_time": job_doc.get("prolog_time")}
    summary = build(job, checkpoint, ended=ended, partial=True, partial_reason=reason,
                    monitor=str(job_doc.get("monitor", "on")), interval=job_doc.get("interval"),
                    catalog=catalog)
    _ensure_private_dir(outbox)
    # The Epilog's name for it (hooks/epilog.py): the run's start keeps a reused job id apart.
    out_key = f"{run_dir.name}.{int(summary['started'] or ended)}"
    timeline, moved = run_dir / TIMELINE_NAME, outbox / f"{out_key}.timeline.jsonl"
    if timeline.is_file() and not timeline.is_symlink():
        os.replace(timeline, moved)        # the timeline first: no summary is ever without its own
    try:
        write_atomic(outbox / f"{out_key}.summary.json",
                     json.dumps(summary, separators=(",", ":"), sort_keys=True).encode())
    except OSError:
        if moved.is_file():
            os.replace(moved, timeline)
        raise
    write_atomic(run_dir / SPOOLED_NAME, f"{out_key}\n".encode())
    _remove_own_pidfile(run_dir)
    orphaned = run_dir.parent.parent / ORPHANED_DIR
    try:
        _ensure_private_dir(orphaned)
        dest = orphaned / run_dir.name
        if os.path.lexists(dest):          # an older orphan of the same key (a reused job id)
            _remove_tree(dest)
        os.rename(run_dir, dest)
    except OSError as e:   # spooled all the same; the backlog just waits for the run dir to go
        log.error("cannot move %s to %s: %s", run_dir, orphaned, e)
    return out_key


def _remove_own_pidfile(run_dir: Path) -> None:
    """The sampler's pid file goes before its run dir moves (run.py's exit would miss it)."""
    path = run_dir / "sampler.pid"
    try:
        if path.read_text().split()[0] == str(os.getpid()):
            path.unlink()
    except (OSError, IndexError):
        pass


def _remove_tree(path: Path) -> None:
    """Remove a run dir (plain files only, as the sampler and the Prolog leave it)."""
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def find_spooled(run_dir: str | Path) -> tuple[str, Path] | None:
    """(outbox key, directory to remove) when the sampler spooled this run's summary itself,
    else None (the usual case: the Epilog spools it). `run_dir` is the Epilog's
    <spool>/run/<key>: the marker is in it (the sampler is about to move it) or, when that run
    dir is gone, in <spool>/orphaned/<key>. A run dir holding a Prolog's job.json and no marker
    is a run of its own: an older orphan of the same key is then not this run's."""
    run_dir = Path(run_dir)
    key = _spooled_key(run_dir)
    if key is not None:
        return key, run_dir
    if os.path.lexists(run_dir / JOB_NAME) or run_dir.parent.name != "run":
        return None
    orphaned = run_dir.parent.parent / ORPHANED_DIR / run_dir.name
    key = _spooled_key(orphaned)
    return None if key is None else (key, orphaned)


def _spooled_key(directory: Path) -> str | None:
    try:
        fd = os.open(directory / SPOOLED_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        key = fh.read(512).strip()
    if not key or "/" in key or key.startswith(".") or "\0" in key:
        return None
    return key
