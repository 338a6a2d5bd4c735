"""The Epilog: stop the job's sampler, spool its summary, deliver it, and
append the user's report. Bounded: the sampler gets `flush_timeout` seconds
for its final flush, else the last checkpoint is used and the summary is
marked partial; the report writer has its own deadline. Each step that fails
is logged and the next still runs: the summary is spooled before anything
that touches the network or a user's file.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from piqc_slurm.hooks.context import JobContext, from_env, is_batch_host
from piqc_slurm.hooks.spool import Spool, read_json, write_json_atomic
from piqc_slurm.summary import build as build_summary

log = logging.getLogger("piqc-slurm")


def stop_sampler(run_dir: Path, flush_timeout: float) -> tuple[bool, str | None]:
    """SIGTERM the sampler and wait for it; (stopped cleanly, why not)."""
    from piqc_slurm.sampler.checkpoint import sampler_pid

    pid = sampler_pid(run_dir)
    if pid is None:
        return False, "sampler was not running at job end"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False, "sampler was not running at job end"
    deadline = time.monotonic() + flush_timeout
    while time.monotonic() < deadline:
        if sampler_pid(run_dir) is None:
            return True, None
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True, None
    return False, f"sampler did not flush within {flush_timeout:g}s (killed)"


def _load_checkpoint(run_dir: Path) -> tuple[dict | None, str | None]:
    from piqc_slurm.sampler.checkpoint import load_checkpoint
    from piqc_slurm.sampler.errors import CheckpointError

    path = run_dir / "checkpoint.json"
    if not path.exists():
        return None, "no checkpoint"
    try:
        return load_checkpoint(path), None
    except CheckpointError as exc:
        return None, str(exc)


def run(env: dict[str, str], cfg, now: float | None = None) -> str:
    # The job's end, as near as the Epilog can tell: taken before the sampler is stopped.
    now = time.time() if now is None else now
    ctx = from_env(env, cfg["cluster"])
    if not ctx.gpus:
        return "no GPUs: nothing to summarise"
    spool = Spool(cfg["spool_dir"])
    run_dir = spool.run_dir(ctx.key)
    job_path = run_dir / "job.json"
    job_doc = read_json(job_path) if job_path.is_file() else None
    checkpoint = None
    if job_doc is None:  # the Prolog never ran for this job (not wired, failed, or a node reboot)
        monitor, interval = "no-sampler", None
        partial, reason = True, "no Prolog record for this job (hooks not wired, or the Prolog failed)"
        job = {**ctx.to_dict(), "prolog_time": None}
    else:
        monitor, interval = job_doc["monitor"], job_doc.get("interval")
        job = {**job_doc["job"], "exit_code": ctx.exit_code, "prolog_time": job_doc.get("prolog_time")}
        partial, reason = False, None
        if monitor == "on":
            clean, why = stop_sampler(run_dir, cfg["epilog.flush_timeout"])
            checkpoint, ck_err = _load_checkpoint(run_dir)
            if checkpoint is not None and not checkpoint["final"]:
                partial, reason = True, why or "sampler ended without a final checkpoint"
            elif checkpoint is None:
                partial, reason = True, f"{why + '; ' if why else ''}{ck_err}"
    from piqc_slurm.usage.catalog import load_catalog, without_types

    try:
        catalog = load_catalog()
    except (OSError, ValueError) as exc:  # a broken install must not lose the job's summary
        log.error("GPU catalog unreadable, summary without GPU types: %s", exc)
        catalog = without_types(str(exc))
    summary = build_summary(job, checkpoint, ended=now, partial=partial, partial_reason=reason,
                            monitor=monitor, interval=interval, catalog=catalog,
                            min_share=cfg["usage.min_active_share"])
    spool.make_outbox()
    # The outbox name carries the run's start: Slurm can reuse a job id (a
    # database reset), and a new run must never replace an old run's summary.
    out_key = f"{ctx.key}.{int(summary['started'] or now)}"
    timeline = run_dir / "timeline.jsonl"
    if timeline.is_file() and not timeline.is_symlink():
        os.replace(timeline, spool.timeline_path(out_key))
    write_json_atomic(spool.summary_path(out_key), summary)
    notes = [f"summary spooled ({'partial: ' + reason if partial else 'complete'})"]
    if cfg["epilog.user_report"]:
        notes.append(_user_report(ctx, summary, spool, cfg, out_key, catalog))
    try:
        from piqc_slurm.hooks.deliver import deliver

        notes.append(deliver(spool, out_key, ctx.node, cfg))
    except Exception as exc:  # noqa: BLE001 - it stays spooled for ingest to replay
        notes.append(f"delivery failed, stays spooled: {exc}")
    _remove_run_dir(run_dir)
    return "; ".join(notes)


def _user_report(ctx: JobContext, summary: dict, spool: Spool, cfg, out_key: str, catalog) -> str:
    from piqc_slurm.hooks.userreport import PatternError, PatternInputs, append_as_user, expand_output_path
    from piqc_slurm.report.epilog_text import Rules, render
    from piqc_slurm.usage.prices import Prices

    if not is_batch_host(ctx):
        return "report: not the batch host"
    if ctx.uid is None or ctx.gid is None:
        return "report: job uid/gid unknown"
    marker = spool.outbox() / f"{out_key}.reported"
    if marker.exists():
        return "report: already written"
    try:
        path = expand_output_path(ctx.stdout, PatternInputs(
            job_id=ctx.job_id, user=ctx.user, node=ctx.node, work_dir=ctx.work_dir,
            array_job_id=ctx.array_job_id, array_task_id=ctx.array_task_id))
    except PatternError as exc:
        return f"report: {exc}"
    text = "\n" + render(summary, Prices.from_config(cfg, catalog), Rules(cfg))
    result = append_as_user(path, text, ctx.uid, ctx.gid, ctx.user, cfg["epilog.report_timeout"])
    if result == "ok":
        marker.touch(mode=0o600)
    return f"report: {result}"


def _remove_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir() or run_dir.is_symlink():
        return
    for p in run_dir.iterdir():
        try:
            p.unlink()
        except OSError:
            pass
    try:
        run_dir.rmdir()
    except OSError as exc:
        log.warning("could not remove %s: %s", run_dir, exc)
