"""The Epilog: stop the job's sampler, spool its summary, deliver it, and
append the user's report. Bounded: the sampler gets `flush_timeout` seconds
for its final flush, else the last checkpoint is used and the summary is
marked partial; the report writer has its own deadline. Each step that fails
is logged and the next still runs: the summary is spooled before anything
that touches the network or a user's file.

A spool that is not root-only is refused before anything is read or written
(logged; the job goes unrecorded). A summary that cannot be spooled (disk
full, read-only or broken outbox) is logged as `lost summary KEY: [Errno N]
...` and counted in `spool_dir/lost.count` where that file can still be
written. After a successful delivery, older outbox summaries are retried
within what is left of the hook's time (`PIQC_TIMEOUT`, as the wrapper
epilog/piqc-hook.sh kills at; deliver.py). With delivery = push and
`epilog.push_detached`, the delivery and the retries run in a child in its own
session once the summary is spooled, and the Epilog returns without waiting
on the store (`_push_detached`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from piqc_slurm.hooks.context import JobContext, from_env, is_batch_host
from piqc_slurm.hooks.spool import Spool, SpoolError, read_json, write_json_atomic
from piqc_slurm.summary import build as build_summary

log = logging.getLogger("piqc-slurm")
HOOK_TIMEOUT = 30.0  # seconds: epilog/piqc-hook.sh's default PIQC_TIMEOUT for the Epilog
RESERVE = 3.0  # seconds of the budget kept for logging and exit after the last retry


def time_budget(env: dict[str, str]) -> float:
    """Seconds the wrapper gives this Epilog before it kills it: PIQC_TIMEOUT, else its default."""
    raw = env.get("PIQC_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else HOOK_TIMEOUT
    except ValueError:
        return HOOK_TIMEOUT
    return value if 0 < value < 86400 else HOOK_TIMEOUT


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


def _run_key(spool: Spool, ctx: JobContext) -> str:
    """The key the Prolog gave this run. `scontrol requeue` raises the restart count before the
    requeued run's Epilog, so that Epilog sees count N+1 for the run its Prolog keyed N: take the
    highest earlier count still in run/ (one job id runs once at a time on a node)."""
    if spool.run_dir(ctx.key).is_dir():
        return ctx.key
    for earlier in range(ctx.restart_count - 1, -1, -1):
        key = f"{ctx.cluster}.{ctx.job_id}.{earlier}.{ctx.node}"
        if spool.run_dir(key).is_dir():
            return key
    return ctx.key


def _prolog_unfinished(run_dir: Path) -> bool:
    """True when the Prolog may not have finished: no sampler pid file (hooks/prolog.py writes
    job.json, then context.json, then starts the sampler; an unmonitored job never gets one, and
    costs one look through /proc)."""
    return not (run_dir / "sampler.pid").is_file()


def run(env: dict[str, str], cfg, now: float | None = None, detach: bool = False) -> str:
    """The Epilog's work; a one-line account. `detach`: a push may go to a detached child
    (`epilog.push_detached`); only the command's own process passes it (run_hook), never a caller
    that would get a second copy of itself back."""
    # The job's end, as near as the Epilog can tell: taken before the sampler is stopped.
    t0 = time.monotonic()
    now = time.time() if now is None else now
    ctx = from_env(env, cfg["cluster"])
    try:
        what = _run(ctx, env, cfg, now, t0, detach)
    finally:  # every job's, GPUs or not: the SPANK plugin records one for every batch job
        from piqc_slurm.hooks.jobinfo import discard

        left = discard(cfg["spool_dir"], ctx.job_id)
    return f"{what}; {left}" if left else what


def _run(ctx: JobContext, env: dict[str, str], cfg, now: float, t0: float, detach: bool = False) -> str:
    if not ctx.gpus:
        return "no GPUs: nothing to summarise"
    spool = Spool(cfg["spool_dir"])
    run_key = _run_key(spool, ctx)
    spool.check(run_key)  # a spool not root-only: SpoolError, logged by run_hook (exit 0)
    run_dir = spool.run_dir(run_key)
    if _prolog_unfinished(run_dir):  # the Prolog runs detached: it may still be in flight
        from piqc_slurm.hooks.inflight import wait_for_prolog

        waited, still = wait_for_prolog(ctx.job_id)
        if still:
            log.warning("job %d: its Prolog still runs after %.1fs; summarising without waiting more",
                        ctx.job_id, waited)
        elif waited >= 0.01:
            log.info("job %d: waited %.2fs for its Prolog to finish", ctx.job_id, waited)
        run_key = _run_key(spool, ctx)
        spool.check(run_key)
        run_dir = spool.run_dir(run_key)
    from piqc_slurm.sampler.orphan import find_spooled

    spooled = find_spooled(run_dir)
    if spooled is not None:  # the job ended with no Epilog: its sampler spooled the summary itself
        return _deliver_spooled(spool, spooled[1], spooled[0], ctx, cfg)
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
            _drop_textfile(ctx, cfg)  # the sampler removes it; not if it was killed
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
    # The outbox name carries the run's start: Slurm can reuse a job id (a
    # database reset), and a new run must never replace an old run's summary.
    out_key = f"{run_key}.{int(summary['started'] or now)}"
    try:
        notes = [_spool_summary(spool, run_dir, out_key, summary, partial, reason)]
        in_outbox = True
    except SpoolError:
        raise  # a refused spool: nothing written, run_hook logs it
    except OSError as exc:  # disk full, read-only, the outbox not a directory: the summary is lost
        notes, in_outbox = [_lost(spool, out_key, exc)], False
    if cfg["epilog.user_report"]:
        try:
            # the other nodes' summaries are waited for only while the delivery keeps its time
            notes.append(_user_report(ctx, summary, spool, cfg, out_key, catalog,
                                      t0 + time_budget(env) - RESERVE - cfg["epilog.push_connect_timeout"]))
        except Exception as exc:  # noqa: BLE001 - the report must not stop the delivery
            notes.append(f"report failed: {exc}")
    _remove_run_dir(run_dir)
    if in_outbox:
        deadline = t0 + time_budget(env) - RESERVE
        if detach and cfg["delivery"] == "push" and cfg["epilog.push_detached"]:
            notes.append(_push_detached(spool, out_key, ctx, cfg, deadline))
        else:
            notes.append(_deliver_and_retry(spool, out_key, ctx, cfg, deadline))
    return "; ".join(n for n in notes if n)


def _drop_textfile(ctx: JobContext, cfg) -> None:
    """A job's live-metrics file ([watch] textfile_dir) must not outlive it: stale series would
    show a finished job's GPUs as still busy or idle."""
    if not cfg["watch.textfile_dir"]:
        return
    from piqc_slurm.sampler.textfile import file_name, remove

    try:
        remove(cfg["watch.textfile_dir"], file_name(ctx.cluster, ctx.job_id, ctx.restart_count))
    except OSError as exc:
        log.warning("job %d: cannot remove its textfile: %s", ctx.job_id, exc)


def _deliver_and_retry(spool: Spool, out_key: str, ctx: JobContext, cfg, deadline: float) -> str:
    """Deliver this run's summary, then (on success) retry the outbox's backlog until `deadline`."""
    from piqc_slurm.hooks.deliver import deliver, retry_backlog

    try:
        notes = [deliver(spool, out_key, ctx.node, cfg)]
    except Exception as exc:  # noqa: BLE001 - it stays spooled for ingest to replay
        return f"delivery failed, stays spooled: {exc}"
    try:
        notes.append(retry_backlog(spool, ctx.node, cfg, deadline))
    except Exception as exc:  # noqa: BLE001 - the backlog waits for the next Epilog
        notes.append(f"backlog: {exc}")
    return "; ".join(n for n in notes if n)


def _push_detached(spool: Spool, out_key: str, ctx: JobContext, cfg, deadline: float) -> str:
    """The push off the node's path (epilog.push_detached): the summary is in the outbox already,
    so a child in its own session pushes it (and the backlog) while the Epilog returns and slurmd
    frees the node. The child logs its own line (`epilog job=N: detached push: ...`) and is killed
    by SIGALRM at the hook's deadline; where no child can be made, the push runs here."""
    from piqc_slurm.hooks.deliver import spawn_detached

    t = time.monotonic()
    try:
        pid = spawn_detached()
    except OSError as exc:
        log.warning("job %d: cannot detach the push (%s): pushing in the Epilog", ctx.job_id, exc)
        return _deliver_and_retry(spool, out_key, ctx, cfg, deadline)
    if pid:
        return f"push detached (pid {pid})"
    rc = 0
    try:  # the child: never returns
        signal.alarm(max(1, int(deadline - time.monotonic() + RESERVE - 1)))
        what = _deliver_and_retry(spool, out_key, ctx, cfg, deadline)
        log.info("epilog job=%d: detached push: %s (%.0f ms)", ctx.job_id, what, (time.monotonic() - t) * 1000)
    except BaseException as exc:  # noqa: BLE001 - it stays spooled; the next Epilog or ingest replays it
        log.error("epilog job=%d: detached push failed, stays spooled: %s: %s", ctx.job_id, type(exc).__name__, exc)
        rc = 1
    finally:
        logging.shutdown()
        os._exit(rc)


def _deliver_spooled(spool: Spool, run_dir: Path, out_key: str, ctx: JobContext, cfg) -> str:
    """A late Epilog of a run whose sampler saw the job end and spooled its summary (partial, "no
    epilog: ...") itself (sampler/orphan.py): deliver that one, never build a second; then remove
    its run dir (in run/ or orphaned/)."""
    notes = [f"summary already spooled by the sampler as {out_key}"]
    if spool.summary_path(out_key).is_file():
        try:
            from piqc_slurm.hooks.deliver import deliver

            notes.append(deliver(spool, out_key, ctx.node, cfg))
        except Exception as exc:  # noqa: BLE001 - it stays spooled for ingest to replay
            notes.append(f"delivery failed, stays spooled: {exc}")
    _remove_run_dir(run_dir)
    return "; ".join(notes)


def _spool_summary(spool: Spool, run_dir: Path, out_key: str, summary: dict, partial: bool,
                   reason: str | None) -> str:
    """Timeline, then summary, into the outbox (a reader never sees a summary before its
    timeline). OSError if either cannot be written; a timeline moved in is taken out again."""
    from piqc_slurm.hooks.deliver import move_atomic

    outbox = spool.make_outbox()
    timeline, moved = run_dir / "timeline.jsonl", spool.timeline_path(out_key)
    if timeline.is_file() and not timeline.is_symlink():
        move_atomic(timeline, outbox, moved.name)  # a copy where the outbox is another file system
    try:
        write_json_atomic(spool.summary_path(out_key), summary)
    except OSError:
        try:
            moved.unlink()  # useless without its summary, and the disk may be full
        except OSError:
            pass
        raise
    return f"summary spooled ({'partial: ' + reason if partial else 'complete'})"


def _lost(spool: Spool, out_key: str, exc: OSError) -> str:
    """Log and count a summary that could not be spooled."""
    try:
        counted = f"lost.count now {spool.bump_lost()}"
    except OSError as err:
        counted = f"not counted in lost.count: {err}"
    line = f"lost summary {out_key}: {exc} ({counted})"
    log.error("%s", line)
    return line


def _user_report(ctx: JobContext, summary: dict, spool: Spool, cfg, out_key: str, catalog,
                 wait_until: float | None = None) -> str:
    from piqc_slurm.hooks.userreport import PatternError, append_as_user, expand_output_path, pattern_inputs
    from piqc_slurm.report.epilog_text import Rules, render
    from piqc_slurm.usage.prices import Prices

    if not is_batch_host(ctx):
        return "report: not the batch host"
    if ctx.uid is None or ctx.gid is None:
        return "report: job uid/gid unknown"
    marker = spool.outbox() / f"{out_key}.reported"
    if marker.exists():
        return "report: already written"
    inputs = pattern_inputs(ctx, cfg["spool_dir"])
    try:
        path = expand_output_path(ctx.stdout, inputs)
    except PatternError as exc:
        return f"report: {exc}"
    others, missing = other_nodes(ctx, cfg, summary, until=wait_until)
    text = "\n" + render(summary, Prices.from_config(cfg, catalog), Rules(cfg), others=others, missing=missing)
    result = append_as_user(path, text, ctx.uid, ctx.gid, ctx.user, cfg["epilog.report_timeout"])
    if result == "ok":
        marker.touch(mode=0o600)
        return "report: ok"
    # user text (a job name may hold a newline) as repr: the hook log keeps one line per job
    why = f" (the file was named without job info: {inputs.unknown})" if inputs.array_task_id is None else ""
    return f"report: {result}: {path[:200]!r}{why}"


MAX_OTHER_SUMMARY = 8 << 20  # bytes: a node's summary is a few KiB per GPU


def other_nodes(ctx: JobContext, cfg, summary: dict, sleep=time.sleep,
                until: float | None = None) -> tuple[list[dict], list[str]]:
    """For the batch host's report of a job on several nodes: the other nodes' summaries of this run,
    as their Epilogs deliver them to the shared spool (they run at the same time as this one), waited
    for at most epilog.report_wait seconds (and never past `until`, time.monotonic(): the hook's
    deadline less what the delivery needs); and the nodes whose summary did not come (or cannot:
    delivery is not shared-spool). A node's file is this run's when its name has this job's key on
    that node and its start is within an hour of this node's (a reused job id's is not)."""
    from piqc_slurm.slurm.parse import ParseError, expand_nodelist

    try:
        nodes = expand_nodelist(ctx.nodelist) if ctx.nodelist else []
    except ParseError:
        return [], []
    from piqc_slurm.config import NODE_NAME

    others = [n for n in dict.fromkeys(nodes) if n != ctx.node and NODE_NAME.fullmatch(n)]
    if not others:
        return [], []
    if cfg["delivery"] != "shared-spool" or not cfg["shared_spool_dir"]:
        return [], others
    started = summary.get("started") or 0
    deadline = time.monotonic() + cfg["epilog.report_wait"]
    if until is not None:
        deadline = min(deadline, until)
    found: dict[str, dict] = {}
    while True:
        for node in others:
            if node not in found and (doc := _shared_summary(cfg["shared_spool_dir"], ctx, node, started)):
                found[node] = doc
        if len(found) == len(others) or time.monotonic() >= deadline:
            break
        sleep(0.05)
    return [found[n] for n in others if n in found], [n for n in others if n not in found]


def _shared_summary(shared_dir: str, ctx: JobContext, node: str, started: float) -> dict | None:
    """This run's summary from `node` in the shared spool, or None (not there yet, or unreadable)."""
    import re

    from piqc_slurm.hooks.spool import check_dir

    key = f"{ctx.cluster}.{ctx.job_id}.{ctx.restart_count}.{node}"
    d = Path(shared_dir) / node
    pattern = re.compile(re.escape(key) + r"\.(\d+)\.summary\.json")
    try:
        check_dir(d)  # root reads here: not through a symlink, not a directory others can write
        names = [(int(m.group(1)), e.name) for e in os.scandir(d) if (m := pattern.fullmatch(e.name))]
    except OSError:
        return None
    for start, name in sorted(names, reverse=True):
        if abs(start - started) > 3600:
            continue
        try:
            if os.lstat(d / name).st_size > MAX_OTHER_SUMMARY:
                continue
            doc = read_json(d / name)  # O_NOFOLLOW
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("job_id") == ctx.job_id and doc.get("node") == node:
            return doc
    return None


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
