"""Replay spooled sampler summaries into the store.

Reads `<dir>/*.summary.json` and `<dir>/<node>/*.summary.json` (a node's
outbox, or a shared spool with one subdirectory per node). Each file is
recorded per store by name and content hash once taken in, and left where it
is: two stores reading one shared spool each get every summary, and a file
rewritten later (same name, new content) is taken in again. A summary of a
newer format version is left untouched for a newer ingest; a malformed one
is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from piqc_slurm.errors import SpoolFormatError
from piqc_slurm.store.models import SpoolReplay
from piqc_slurm.store.summaries import check_format, link_summaries, read_timeline, upsert_summary


@dataclass
class ReplayResult:
    taken: int = 0
    unchanged: int = 0
    linked: int = 0
    newer: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


def summary_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    files = list(root.glob("*.summary.json")) + list(root.glob("*/*.summary.json"))
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def replay(engine: Engine, roots: list[Path]) -> ReplayResult:
    res = ReplayResult()
    with Session(engine) as session:
        known = dict(session.execute(select(SpoolReplay.name, SpoolReplay.sha256)).all())
    for root in roots:
        for path in summary_files(root):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            name = f"{path.parent.name}/{path.name}"
            if known.get(name) == digest:
                res.unchanged += 1
                continue
            try:
                doc = json.loads(data)
                fmt = doc.get("format", "") if isinstance(doc, dict) else ""
                if isinstance(fmt, str) and fmt.startswith("piqc-summary/") and fmt != "piqc-summary/1":
                    res.newer.append(f"{path}: {fmt}")
                    continue
                check_format(doc, str(path))
            except (ValueError, SpoolFormatError) as exc:
                res.bad.append(f"{path}: {exc}")
                continue
            timeline = read_timeline(path.with_name(path.name.replace(".summary.json", ".timeline.jsonl")),
                                     doc.get("timeline_bins"))
            with Session(engine) as session, session.begin():
                upsert_summary(session, doc, timeline)
                row = session.get(SpoolReplay, name)
                if row is None:
                    session.add(SpoolReplay(name=name, sha256=digest, at=int(time.time())))
                else:
                    row.sha256, row.at = digest, int(time.time())
            res.taken += 1
    with Session(engine) as session, session.begin():
        res.linked = link_summaries(session)
    return res
