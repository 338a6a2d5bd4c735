"""Writing sampler summaries (piqc-summary/1) into the store, idempotently.

A summary replaces any earlier copy of itself (same cluster, job, restart,
node and start): its GPU rows and timeline are rewritten in one transaction. It is
joined to its job allocation when that is already known (same cluster and
JobIDRaw, run time overlapping the summary's); otherwise job_ref stays empty
and `link_summaries` joins it after a later sacct ingest.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from piqc_slurm.errors import SpoolFormatError, StoreError, first_line
from piqc_slurm.store.models import GpuTimeline, GpuUsage, Job, JobGpu, NodeSummary, WatchAction
from piqc_slurm.store.timeline import pack
from piqc_slurm.summary import check_format as check_version

GPU_FIELDS = ("uuid", "name", "gpu_type", "mem_total_mib", "did_work", "samples", "seconds", "util_mean",
              "util_p50", "util_p95", "util_max", "active_seconds", "mem_util_mean", "mem_used_max_mib",
              "mem_used_mean_mib", "power_mean_w", "energy_j", "process_seconds", "job_process_seconds",
              "power_limit_w", "power_frac_mean", "sm_active_mean", "sm_active_p95", "sm_occupancy_mean",
              "sm_occupancy_p95", "tensor_active_mean", "tensor_active_p95", "dram_active_mean", "dram_active_p95")
SLACK = 120  # seconds of clock skew and hook latency allowed when matching a summary to its job


# What a summary's fields must be before they reach a column: (key, kind, most characters).
_TOP = (("cluster", "name", 64), ("node", "name", 64), ("job_id", "id", None), ("restart_count", "int", None),
        ("started", "num?", None), ("ended", "num?", None), ("interval", "num?", None), ("user", "str?", 64),
        ("monitor", "str?", 16), ("partial", "bool?", None), ("partial_reason", "str?", None),
        ("timeline_bins", "id?", None), ("nvml", "dict?", None), ("gpus", "list?", None),
        ("devices", "list?", None))
_DEVICE = (("minor", "int", None), ("samples", "int", None), ("seconds", "num", None), ("lost", "bool?", None),
           ("did_work", "bool?", None),
           ("uuid", "str?", 96), ("name", "str?", 128), ("gpu_type", "str?", 32), ("util_hist_ms", "list?", None))
_BIG = 2 ** 63


def _fits(v, kind: str, limit: int | None) -> str | None:
    """Why `v` is not a `kind` (None: it is). A trailing ? allows null."""
    import math

    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind in ("id", "int"):  # BigInteger, Integer columns
        top = _BIG if kind == "id" else 2 ** 31
        return None if number and isinstance(v, int) and 0 <= v < top else f"an integer 0..{top - 1}"
    if kind == "num":
        return None if number and math.isfinite(v) and abs(v) < _BIG else "a finite number"
    if kind in ("str", "name"):
        if not isinstance(v, str) or (kind == "name" and not v):
            return "a non-empty string" if kind == "name" else "a string"
        return None if limit is None or len(v) <= limit else f"at most {limit} characters"
    want = {"bool": (bool, "true or false"), "dict": (dict, "an object"), "list": (list, "a list")}[kind]
    return None if isinstance(v, want[0]) else want[1]


def _finite(v) -> bool:
    """No NaN or Infinity anywhere (json.loads takes them; PostgreSQL's json refuses them)."""
    if isinstance(v, float):
        return v == v and v not in (float("inf"), float("-inf"))
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return True


def check_format(doc, source: str = "") -> dict:
    """summary.check_format (the format version, the key fields), then the type of every field the
    store writes: a wrong one is a SpoolFormatError naming it, never a database error (nor a value
    one backend takes and another refuses)."""
    doc = check_version(doc, source)
    where = f"{source}: " if source else ""

    def need(obj: dict, fields, at: str) -> None:
        for key, kind, limit in fields:
            why = _fits(obj.get(key), kind, limit)
            if why is not None and key not in obj:
                raise SpoolFormatError(f"{where}{at}{key}: missing (expected {why})")
            if why is not None:
                raise SpoolFormatError(f"{where}{at}{key}: expected {why}, got {json.dumps(obj[key])[:40]}")

    need(doc, _TOP, "")
    nvml = doc.get("nvml") or {}
    need(nvml, (("ok", "bool?", None), ("error", "str?", None)), "nvml.")
    for i, m in enumerate(doc.get("gpus") or []):
        if _fits(m, "int", None) is not None:
            raise SpoolFormatError(f"{where}gpus[{i}]: expected a device minor, got {json.dumps(m)[:40]}")
    minors = set()
    for i, d in enumerate(doc.get("devices") or []):
        if not isinstance(d, dict):
            raise SpoolFormatError(f"{where}devices[{i}]: expected an object, got {json.dumps(d)[:40]}")
        need(d, _DEVICE, f"devices[{i}].")
        need(d, [(k, "num?", None) for k in GPU_FIELDS if k not in ("uuid", "name", "gpu_type", "did_work",
                                                                   "samples", "seconds")], f"devices[{i}].")
        if d["minor"] in minors:
            raise SpoolFormatError(f"{where}devices[{i}].minor: {d['minor']} twice")
        minors.add(d["minor"])
    if not _finite(doc):
        raise SpoolFormatError(f"{where}NaN or Infinity in the summary")
    return doc


def find_job(session: Session, doc: dict) -> int | None:
    started, ended = doc.get("started"), doc.get("ended")
    q = select(Job.id).where(Job.cluster == doc["cluster"], Job.job_id_raw == doc["job_id"])
    if started is not None:
        q = q.where(or_(Job.end.is_(None), Job.end >= started - SLACK))
    if ended is not None:
        q = q.where(or_(Job.start.is_(None), Job.start <= ended + SLACK))
    if started is not None:
        # a requeued job's runs share its id and may lie within SLACK of each other: the run whose
        # start is nearest the sampler's is this one
        q = q.order_by(func.abs(func.coalesce(Job.start, int(started)) - int(started)), Job.submit.desc())
    else:
        q = q.order_by(Job.submit.desc())
    return session.execute(q.limit(1)).scalar_one_or_none()


def upsert_summary(session: Session, doc: dict, timeline: list[dict] | None = None) -> int:
    """Insert or replace one summary (and its GPUs and timeline); return its id."""
    started_at = int(doc.get("started") or 0)
    existing = session.execute(select(NodeSummary).where(
        NodeSummary.cluster == doc["cluster"], NodeSummary.job_id_raw == doc["job_id"],
        NodeSummary.restart_count == doc["restart_count"], NodeSummary.node == doc["node"],
        NodeSummary.started_at == started_at)).scalar_one_or_none()
    nvml = doc.get("nvml") or {}
    values = dict(user=doc.get("user") or "", monitor=doc.get("monitor") or "on", interval=doc.get("interval"),
                  started=doc.get("started"), ended=doc.get("ended"), partial=bool(doc.get("partial")),
                  partial_reason=doc.get("partial_reason"), nvml_ok=nvml.get("ok"), nvml_error=nvml.get("error"),
                  gpu_count=len(doc.get("gpus") or []), doc=doc, job_ref=find_job(session, doc))
    if existing is None:
        row = NodeSummary(cluster=doc["cluster"], job_id_raw=doc["job_id"], restart_count=doc["restart_count"],
                          node=doc["node"], started_at=started_at, **values)
        session.add(row)
        session.flush()
    else:
        row = existing
        for k, v in values.items():
            setattr(row, k, v)
        session.execute(delete(GpuUsage).where(GpuUsage.summary_id == row.id))
        session.execute(delete(GpuTimeline).where(GpuTimeline.summary_id == row.id))
        session.execute(delete(JobGpu).where(JobGpu.summary_id == row.id))
        session.execute(delete(WatchAction).where(WatchAction.summary_id == row.id))
        session.flush()
    devices = doc.get("devices") or []
    for d in devices:
        session.add(GpuUsage(summary_id=row.id, minor=d["minor"], lost=bool(d.get("lost")),
                             util_hist=d.get("util_hist_ms"), **{k: d.get(k) for k in GPU_FIELDS}))
    _job_gpus(session, row.id, doc, devices)
    _inventory(session, doc, devices)
    if values["job_ref"] is not None:
        _note_restarts(session, values["job_ref"], doc)
    if timeline:  # one packed row per GPU (store/timeline.py)
        session.execute(GpuTimeline.__table__.insert(), [dict(gpu, summary_id=row.id) for gpu in pack(timeline)])
    actions = watch_rows(doc, row.id)
    if actions:
        session.execute(WatchAction.__table__.insert(), actions)
    return row.id


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(float(v))


def watch_rows(doc: dict, summary_id: int) -> list[dict]:
    """The summary's "watch" list (sampler/oncall.py records) as watch_actions rows; a record
    that is not one (a hand-edited summary) is left out, never fails the summary."""
    out = []
    for a in doc.get("watch") or []:
        if not isinstance(a, dict) or not isinstance(a.get("rule"), str) or not _number(a.get("at")):
            continue
        rule = a["rule"]
        action = a.get("action") or ("recovered" if rule.startswith("recovered:") else "notice")
        since = a.get("since") if _number(a.get("since")) else a["at"]
        usd = a.get("usd") if _number(a.get("usd")) else None
        detail = a.get("reason") or a.get("evidence") or ""
        if a.get("result"):
            detail = f"{detail} ({a['result']})"
        out.append({"summary_id": summary_id, "cluster": str(doc["cluster"])[:64], "job_id_raw": doc["job_id"],
                    "node": str(doc["node"])[:64], "user": str(doc.get("user") or "")[:64],
                    "rule": rule.split(":", 1)[-1][:32], "action": str(action)[:24], "at": int(a["at"]),
                    "since": int(since), "usd": usd, "detail": str(detail)[:2000]})
    return out


def _job_gpus(session: Session, summary_id: int, doc: dict, devices: list[dict]) -> None:
    """The GPUs the job held on this node: the Prolog's SLURM_JOB_GPUS minors (doc["gpus"]), with the
    UUID where the sampler read the device (source nvml) or without (source prolog: NVML down, or off)."""
    seen = {d["minor"]: d for d in devices if isinstance(d.get("minor"), int)}
    minors = [m for m in (doc.get("gpus") or []) if isinstance(m, int)] or list(seen)
    for m in dict.fromkeys(minors):
        d = seen.get(m)
        session.add(JobGpu(summary_id=summary_id, minor=m, node=doc["node"], uuid=d.get("uuid") if d else None,
                           source="nvml" if d else "prolog"))


def _inventory(session: Session, doc: dict, devices: list[dict]) -> None:
    """What a summary saw of its node's GPUs goes into the inventory."""
    from piqc_slurm.store.inventory import note_gpus

    note_gpus(session, doc["cluster"], doc["node"],
              [(d["minor"], d.get("gpu_type"), d.get("uuid"), d.get("name")) for d in devices
               if isinstance(d.get("minor"), int)], "summary", int(doc.get("ended") or doc.get("started") or 0))


def _note_restarts(session: Session, job_ref: int, doc: dict) -> None:
    """sacct 22.05 prints no restart count; the Prolog's SLURM_JOB_RESTART_COUNT is the record."""
    n = doc.get("restart_count")
    if isinstance(n, int):
        job = session.get(Job, job_ref)
        if job is not None and (job.restarts is None or n > job.restarts):
            job.restarts = n


def link_summaries(session: Session) -> int:
    """Join summaries that arrived before their sacct record; return how many."""
    n = 0
    for row in session.execute(select(NodeSummary).where(NodeSummary.job_ref.is_(None))).scalars():
        job = find_job(session, row.doc)
        if job is not None:
            session.execute(update(NodeSummary).where(NodeSummary.id == row.id).values(job_ref=job))
            _note_restarts(session, job, row.doc)
            n += 1
    return n


def read_timeline(path: Path, bins: int | None = None) -> list[dict]:
    """A delivered timeline's bins (at most `bins`, the summary's count; a line
    torn by a crash ends it)."""
    from piqc_slurm.sampler.checkpoint import read_timeline as read_bins

    return [b for b in read_bins(path, bins) if "t" in b and "gpu" in b]


def push_summary(db_url: str, summary_path: Path, timeline_path: Path, connect_timeout: float = 3.0) -> None:
    """The Epilog's delivery = push: one short transaction, StoreError on failure. Never migrates
    the schema nor imports Alembic (open_engine's push mode): a store behind this piqc-slurm's
    head is a StoreError naming `piqc-slurm db upgrade`, and the summary stays spooled."""
    from piqc_slurm.store.db import open_engine

    doc = check_format(json.loads(Path(summary_path).read_text()), str(summary_path))
    engine = open_engine(db_url, connect_timeout=connect_timeout, mode="push")
    try:
        with Session(engine) as session, session.begin():
            upsert_summary(session, doc, read_timeline(Path(timeline_path), doc.get("timeline_bins")))
    except SQLAlchemyError as exc:
        raise StoreError(f"push failed: {first_line(exc)}") from None
    finally:
        engine.dispose()
