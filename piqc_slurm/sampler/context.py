"""The sampler's instructions: RUN_DIR/context.json, written by the Prolog.

The Prolog knows the job (Slurm's hook environment) and the site config; the
sampler knows neither and reads only this file, so it needs no config parser,
no click and no Slurm environment. Decoded strictly (missing or unknown keys,
wrong types: ContextError), because a sampler that guesses a field samples
the wrong GPUs for hours without anyone noticing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from piqc_slurm.sampler.errors import ContextError

CONTEXT_FORMAT = "piqc-context/1"
MIN_PERIOD = 0.01
"""Smallest accepted interval (s): a corrupt context must not make a busy loop."""

OPTIONAL = {"max_device_errors": 5, "watch": None}
"""Keys added after the format's first release, with the value an older Prolog's context means."""


@dataclass(frozen=True)
class Context:
    """One job on one node, as the Prolog saw it, plus the sampler's periods (s)."""

    cluster: str
    job_id: int
    restart_count: int
    node: str
    uid: int
    user: str
    gpus: tuple[int, ...]
    interval: float = 1.0
    process_interval: float = 10.0
    checkpoint_interval: float = 30.0
    timeline_bin: int = 60
    active_util: float = 5.0
    orphan_check: float = 30.0
    started: float = 0.0
    max_device_errors: int = 5
    watch: Any = None  # sampler.watch.WatchSettings: the live rules ([watch]); None: off
    format: str = CONTEXT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = list(self.gpus)
        d["watch"] = None if self.watch is None else self.watch.to_dict()
        return {"format": d.pop("format"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def context_from_dict(doc: Any, path: str = "") -> Context:
    """Validate a decoded context document; ContextError names the bad key."""
    def bad(msg: str) -> ContextError:
        return ContextError(msg, path=path)

    if not isinstance(doc, dict):
        raise bad(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != CONTEXT_FORMAT:
        raise bad(f"unknown context format {doc.get('format')!r} (this sampler reads {CONTEXT_FORMAT})")
    known = {f.name for f in fields(Context)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)}")
    doc = {**OPTIONAL, **doc}
    missing = sorted(known - set(doc))
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    for key in ("cluster", "node", "user"):
        if not isinstance(doc[key], str):
            raise bad(f"{key}: expected a string, got {doc[key]!r}")
    for key in ("job_id", "restart_count", "uid", "timeline_bin", "max_device_errors"):
        if not _is_int(doc[key]) or doc[key] < 0:
            raise bad(f"{key}: expected an integer >= 0, got {doc[key]!r}")
    for key in ("timeline_bin", "max_device_errors"):
        if doc[key] < 1:
            raise bad(f"{key}: expected an integer >= 1, got {doc[key]!r}")
    gpus = doc["gpus"]
    if not isinstance(gpus, list) or not all(_is_int(g) and g >= 0 for g in gpus):
        raise bad(f"gpus: expected a list of device minor numbers, got {gpus!r}")
    if len(set(gpus)) != len(gpus):
        raise bad(f"gpus: minor named twice in {gpus!r}")
    for key in ("interval", "process_interval", "checkpoint_interval", "orphan_check"):
        if not _is_num(doc[key]) or doc[key] < MIN_PERIOD:
            raise bad(f"{key}: expected seconds >= {MIN_PERIOD}, got {doc[key]!r}")
    if not _is_num(doc["active_util"]) or not 0 <= doc["active_util"] <= 100:
        raise bad(f"active_util: expected a percentage 0..100, got {doc['active_util']!r}")
    if not _is_num(doc["started"]):
        raise bad(f"started: expected epoch seconds, got {doc['started']!r}")
    values = {k: doc[k] for k in known}
    values["gpus"] = tuple(gpus)
    if values["watch"] is not None:
        from piqc_slurm.sampler.watch import WatchSettings

        try:
            values["watch"] = WatchSettings.from_dict(values["watch"])
        except ValueError as e:
            raise bad(str(e)) from None
    for key in ("interval", "process_interval", "checkpoint_interval", "orphan_check",
                "active_util", "started"):
        values[key] = float(values[key])
    return Context(**values)


def load_context(path: str | Path) -> Context:
    """Read and validate RUN_DIR/context.json."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ContextError(f"cannot read: {e.strerror or e}", path=str(path)) from e
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ContextError(f"invalid JSON: {e}", path=str(path)) from e
    return context_from_dict(doc, str(path))
