"""The files of a sampler's RUN_DIR: checkpoint, timeline, pid file.

Readers (the Epilog, ingest) import this module without pulling in pynvml.

- `checkpoint.json`: the whole state, fixed size, replaced atomically
  (temp file, fsync, rename, fsync of the directory), so a reader sees either
  the previous complete checkpoint or the new one, also after a crash or a
  SIGKILL of the sampler.
- `timeline.jsonl`: closed timeline bins, one JSON object a line, only ever
  appended (cost stays flat in job length). It is appended *before* the
  checkpoint that counts its lines (`timeline_bins`) is written, so a torn
  last line after a crash lies beyond that count and readers skip it.
- `sampler.pid`: the sampler's pid while it runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from piqc_slurm.fsutil import (
    write_all,
    write_atomic,  # noqa: F401 - one atomic writer, re-exported for run.py
)
from piqc_slurm.sampler.aggregate import GpuAggregate
from piqc_slurm.sampler.errors import CheckpointError
from piqc_slurm.sampler.source import DeviceInfo

CHECKPOINT_FORMAT = "piqc-checkpoint/1"
CONTEXT_NAME = "context.json"
CHECKPOINT_NAME = "checkpoint.json"
TIMELINE_NAME = "timeline.jsonl"
PID_NAME = "sampler.pid"

# Exit reasons written by the sampler (None while it runs).
REASON_SIGTERM = "SIGTERM"
REASON_SIGINT = "SIGINT"
REASON_JOB_GONE = "job gone"
REASON_NVML = "nvml unavailable"
REASON_ALL_LOST = "all gpus lost"
REASON_NO_GPUS = "no gpus"
# plus "error: <exception>" for an unexpected failure

NO_EPILOG = "no epilog: job ended without one"
"""partial_reason of the final checkpoint (and the summary) of a sampler that saw its job end by
itself: no Epilog came to stop it (slurmd killed or restarted, the node's hooks broken)."""


def append_lines(path: str | Path, rows: Iterable[dict[str, Any]], mode: int = 0o600) -> int:
    """Append rows as JSON lines in one write, fsynced; returns how many."""
    lines = [json.dumps(r, separators=(",", ":")) + "\n" for r in rows]
    if not lines:
        return 0
    data = "".join(lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)


def read_timeline(path: str | Path, bins: int | None = None) -> list[dict[str, Any]]:
    """The timeline's bins; at most `bins` (a checkpoint's `timeline_bins`).

    Lines past that count, or a torn last line, are what a crash can leave
    and are skipped rather than reported as corruption.
    """
    if not isinstance(bins, int) or isinstance(bins, bool):
        bins = None  # a count that is not one (a damaged summary) limits nothing
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    head = lines if bins is None else lines[:max(bins, 0)]
    # Fast path (a 7-day 8-GPU timeline is 80,640 lines: the Epilog reads it, ~3x faster so): the
    # lines wanted as one JSON array, taken only when it is exactly one object per line.
    try:
        rows = json.loads(b"[" + b",".join(head) + b"]")
    except (ValueError, RecursionError):
        rows = None
    if isinstance(rows, list) and len(rows) == len(head) and all(isinstance(r, dict) for r in rows):
        return rows
    out: list[dict[str, Any]] = []
    for line in lines:
        if bins is not None and len(out) >= bins:
            break
        try:
            row = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # torn, not UTF-8, or nested past reason
            break
        if isinstance(row, dict):
            out.append(row)
    return out


def gpu_entry(dev: DeviceInfo, agg: GpuAggregate) -> dict[str, Any]:
    return {**dev.to_dict(), "agg": agg.to_dict()}


def build_checkpoint(*, job_id: int, started: float, updated: float, final: bool,
                     exit_reason: str | None, nvml_ok: bool, nvml_error: str | None,
                     driver_version: str | None, interval: float,
                     gpus: Sequence[tuple[DeviceInfo, GpuAggregate]],
                     timeline_bins: int, partial_reason: str | None = None) -> dict[str, Any]:
    """The checkpoint document (pure): see the module docstring and README."""
    return {
        "format": CHECKPOINT_FORMAT,
        "job_id": job_id,
        "started": started,
        "updated": round(updated, 3),
        "final": final,
        "exit_reason": exit_reason,
        "nvml": {"ok": nvml_ok, "error": nvml_error, "driver_version": driver_version},
        "interval": interval,
        "gpus": [gpu_entry(dev, agg) for dev, agg in gpus],
        "timeline_bins": timeline_bins,
        "partial_reason": partial_reason,
    }


def write_checkpoint(path: str | Path, doc: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(doc, separators=(",", ":")) + "\n").encode())


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise CheckpointError(message, path=path)


def _opt(v: Any, kinds: type | tuple[type, ...]) -> bool:
    return v is None or (isinstance(v, kinds) and not isinstance(v, bool))


def validate_checkpoint(doc: Any, path: str = "") -> dict[str, Any]:
    """Check a decoded checkpoint; return it unchanged or raise CheckpointError.

    Unknown extra keys are tolerated (a reader of format /1 ignores what it
    does not know); a missing or mistyped known key is an error, and so is
    any other format version.
    """
    _require(isinstance(doc, dict), path, "checkpoint is not a JSON object")
    fmt = doc.get("format")
    _require(fmt == CHECKPOINT_FORMAT, path,
             f"unknown checkpoint format {fmt!r} (this reader knows {CHECKPOINT_FORMAT})")
    num = (int, float)
    _require(isinstance(doc.get("job_id"), int) and not isinstance(doc.get("job_id"), bool),
             path, f"job_id: expected an integer, got {doc.get('job_id')!r}")
    for key in ("started", "updated", "interval"):
        v = doc.get(key)
        _require(isinstance(v, num) and not isinstance(v, bool) and math.isfinite(v), path,
                 f"{key}: expected a number, got {v!r}")
    _require(isinstance(doc.get("final"), bool), path, f"final: expected a boolean, got {doc.get('final')!r}")
    _require(_opt(doc.get("exit_reason", 0), str), path,
             f"exit_reason: expected a string or null, got {doc.get('exit_reason', '<missing>')!r}")
    nv = doc.get("nvml")
    _require(isinstance(nv, dict) and isinstance(nv.get("ok"), bool)
             and _opt(nv.get("error", 0), str) and _opt(nv.get("driver_version", 0), str),
             path, f"nvml: expected {{ok, error, driver_version}}, got {nv!r}")
    tb = doc.get("timeline_bins")
    _require(isinstance(tb, int) and not isinstance(tb, bool) and tb >= 0, path,
             f"timeline_bins: expected a count, got {tb!r}")
    _require(_opt(doc.get("partial_reason"), str), path,     # absent in older checkpoints
             f"partial_reason: expected a string or null, got {doc.get('partial_reason')!r}")
    gpus = doc.get("gpus")
    _require(isinstance(gpus, list), path, f"gpus: expected a list, got {gpus!r}")
    for i, g in enumerate(gpus):
        where = f"gpus[{i}]"
        _require(isinstance(g, dict), path, f"{where}: expected an object")
        _require(isinstance(g.get("minor"), int) and not isinstance(g.get("minor"), bool), path,
                 f"{where}.minor: expected an integer, got {g.get('minor')!r}")
        _require(_opt(g.get("index", 0), int), path, f"{where}.index: expected an integer or null")
        for key in ("uuid", "name", "error"):
            _require(_opt(g.get(key, 0), str), path, f"{where}.{key}: expected a string or null")
        for key in ("errors", "skipped"):             # absent in older checkpoints
            v = g.get(key, 0)
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, path,
                     f"{where}.{key}: expected a count, got {v!r}")
        _require(_opt(g.get("last_error"), str), path, f"{where}.last_error: expected a string or null")
        for key in ("mem_total_mib", "power_limit_w"):
            _require(_opt(g.get(key, ""), num), path, f"{where}.{key}: expected a number or null")
        _require(isinstance(g.get("lost"), bool), path, f"{where}.lost: expected a boolean")
        try:
            GpuAggregate.from_dict(g.get("agg"))
        except ValueError as e:
            raise CheckpointError(f"{where}.agg: {e}", path=path) from e
    return doc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint; CheckpointError for anything unusable."""
    p = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read: {e.strerror or e}", path=p) from e
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CheckpointError(f"not valid JSON: {e}", path=p) from e
    return validate_checkpoint(doc, p)


def aggregates(doc: dict[str, Any]) -> dict[int, GpuAggregate]:
    """The GPU aggregates of a validated checkpoint, by minor."""
    return {g["minor"]: GpuAggregate.from_dict(g["agg"]) for g in doc["gpus"]}


def sampler_pid(run_dir: str | Path, proc_root: str = "/proc") -> int | None:
    """The pid in RUN_DIR/sampler.pid if that process is still this run's sampler.

    A pid file can outlive its process (SIGKILL, OOM) and the pid be reused;
    signalling it blindly could hit an unrelated process, so the pid's
    cmdline must still name the sampler module and this run dir.
    """
    try:
        pid = int(Path(run_dir, PID_NAME).read_text().split()[0])
        cmdline = Path(proc_root, str(pid), "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    args = cmdline.rstrip(b"\0").split(b"\0")
    want = os.fsencode(str(run_dir).rstrip("/"))
    if b"piqc_slurm.sampler" in args and any(a.rstrip(b"/") == want for a in args):
        return pid
    return None
