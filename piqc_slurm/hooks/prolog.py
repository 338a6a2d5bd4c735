"""The Prolog: decide whether to monitor, write the job's context, start a
detached sampler, return. The job waits for this, so it does as little as
possible: no NVML (the sampler initialises it), no database, no pandas.

slurmd reads a hook's stdout/stderr until EOF and then kills the hook's
process group (SLURM-FACTS.md), so the sampler is started by a double fork:
the intermediate child calls setsid (a new session and process group that
slurmd's kill does not reach), forks the sampler, records its pid and exits;
the sampler points fds 0/1/2 at /dev/null and closes every other fd before
exec, so slurmd sees EOF at once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from piqc_slurm.hooks.context import JobContext, MonitorDecision, decide_monitor
from piqc_slurm.hooks.spool import Spool, write_json_atomic


def decide(ctx: JobContext, cfg) -> MonitorDecision:
    return decide_monitor(
        ctx.gpus, ctx.spank_monitor, enabled=cfg["sampler.enabled"], interval=cfg["sampler.interval"],
        min_interval=cfg["sampler.min_interval"], max_interval=cfg["sampler.max_interval"],
        allow_opt_out=cfg["sampler.allow_opt_out"])


CONTEXT_FORMAT = "piqc-context/1"  # sampler/context.py decodes it strictly (a unit test keeps them in step)


def sampler_context(ctx: JobContext, decision: MonitorDecision, cfg, now: float) -> dict:
    """The sampler's instructions, written without importing the sampler's
    decoder (its dataclasses cost the Prolog milliseconds)."""
    return {
        "format": CONTEXT_FORMAT, "cluster": ctx.cluster, "job_id": ctx.job_id,
        "restart_count": ctx.restart_count, "node": ctx.node, "uid": ctx.uid if ctx.uid is not None else -1,
        "user": ctx.user, "gpus": list(ctx.gpus), "interval": float(decision.interval),
        "process_interval": float(cfg["sampler.process_interval"]),
        "checkpoint_interval": float(cfg["sampler.checkpoint_interval"]),
        "timeline_bin": int(cfg["sampler.timeline_bin"]), "active_util": float(cfg["sampler.active_util"]),
        "orphan_check": float(cfg["sampler.orphan_check"]), "started": now,
        "max_device_errors": int(cfg["sampler.max_device_errors"]),
        "watch": None if decision.nowatch and cfg["watch.allow_opt_out"] else watch_settings(ctx, cfg),
    }


def watch_settings(ctx: JobContext, cfg) -> dict | None:
    """context.json "watch" (sampler/watch.py WatchSettings): the [watch] rules, the thresholds and
    prices they share with the nightly analysis, the job's labels; None when the site turned it off."""
    if not cfg["watch.enabled"]:
        return None
    from piqc_slurm.analyze.rules import Thresholds  # pure: math only

    return {
        "idle_minutes": float(cfg["watch.idle_minutes"]), "gpu_idle_minutes": float(cfg["watch.gpu_idle_minutes"]),
        "underbatched_minutes": float(cfg["watch.underbatched_minutes"]),
        "active_util": float(cfg["sampler.active_util"]), "min_active_share": float(cfg["usage.min_active_share"]),
        "thresholds": {k: cfg[f"analyze.{k}"] for k in Thresholds._fields},
        "notices": bool(cfg["watch.notices"]), "textfile_dir": cfg["watch.textfile_dir"],
        "textfile_interval": float(cfg["watch.textfile_interval"]),
        "prices": {"prices": dict(cfg["prices"]), "partition_prices": dict(cfg["partition_prices"]),
                   "usage.cpu_core_hour_price": float(cfg["usage.cpu_core_hour_price"])},
        "labels": {"account": ctx.account or "", "partition": ctx.partition or ""},
        "cancel_after_minutes": float(cfg["watch.cancel_after_minutes"]),
        "cancel_rules": [r for r in cfg["watch.cancel_rules"] if r in ("IDLE_GPUS", "IDLE_GPU", "UNDER_BATCHED")],
        "cancel_warn_minutes": [float(x) for x in cfg["watch.cancel_warn_minutes"]],
        "cancel_dry_run": bool(cfg["watch.cancel_dry_run"]),
        "cancel_exempt": cancel_exempt(ctx, cfg),
        "mail_prog": cfg["watch.mail_prog"] if cfg["watch.mail"] else "",
    }


def cancel_exempt(ctx: JobContext, cfg) -> str:
    """Why the cancel policy leaves this job alone ("" if it does not): [watch] exempt_* lists."""
    for what, value, listed in (("user", ctx.user, cfg["watch.exempt_users"]),
                                ("account", ctx.account, cfg["watch.exempt_accounts"]),
                                ("partition", ctx.partition, cfg["watch.exempt_partitions"])):
        if value and value.lower() in {x.lower() for x in listed}:
            return f"exempt {what} {value}"
    if cfg["watch.exempt_qos"] and cfg["watch.cancel_after_minutes"] > 0:
        qos = job_qos(ctx.job_id)
        if qos is None:  # unknown: the safe side is to leave the job alone
            return "exempt: QOS unknown (squeue did not answer) and [watch] exempt_qos is set"
        if qos.lower() in {x.lower() for x in cfg["watch.exempt_qos"]}:
            return f"exempt qos {qos}"
    return ""


def job_qos(job_id: int, timeout: float = 5.0) -> str | None:
    """The job's QOS from squeue (the hook environment of Slurm 22.05 names none), through slurm.run."""
    from piqc_slurm.errors import SacctError
    from piqc_slurm.slurm.run import run_command, slurm_tool

    env = dict(os.environ)
    try:
        out = run_command([slurm_tool("squeue", env), "-h", "-j", str(int(job_id)), "-o", "%q"], env, timeout, "")
    except SacctError:
        return None
    qos = out.strip().splitlines()
    return qos[0].strip() if qos and qos[0].strip() else None


def job_doc(ctx: JobContext, decision: MonitorDecision, now: float) -> dict:
    """What the Epilog needs besides the sampler's checkpoint (RUN_DIR/job.json)."""
    return {"job": ctx.to_dict(), "monitor": decision.mode, "monitor_note": decision.note,
            "interval": decision.interval, "prolog_time": now}


def spawn_detached(argv: list[str], pidfile: Path) -> int:
    """Start argv fully detached from the hook; return the sampler's pid."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # intermediate child
        try:
            os.close(r)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                _exec_detached(argv)  # never returns
            fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.write(fd, f"{grandchild}\n".encode())
            os.close(fd)
            os.write(w, f"{grandchild}".encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 32)
    finally:
        os.close(r)
        os.waitpid(child, 0)
    if not data:
        raise OSError("the sampler could not be started")
    return int(data)


def _exec_detached(argv: list[str]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
        os.chdir("/")
        os.umask(0o077)
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def run(env: dict[str, str], cfg, now: float | None = None) -> str:
    """Returns a one-line account of what was done (logged by the caller)."""
    from piqc_slurm.hooks.context import from_env

    now = time.time() if now is None else now
    ctx = from_env(env, cfg["cluster"])
    decision = decide(ctx, cfg)
    if decision.mode == "cpu-only":
        return "no GPUs: nothing to sample"
    spool = Spool(cfg["spool_dir"])
    run_dir = spool.make_run_dir(ctx.key)
    write_json_atomic(run_dir / "job.json", job_doc(ctx, decision, now))
    notes = [decision.note] if decision.note else []
    if decision.nowatch:
        notes.append("no live watch: the user's nowatch" if cfg["watch.allow_opt_out"]
                     else "nowatch refused by site policy")
    if not decision.enabled:
        note = f" ({'; '.join(notes)})" if notes else ""
        return f"monitoring {decision.mode}{note}: no sampler"
    context = sampler_context(ctx, decision, cfg, now)
    watch = context["watch"]
    if watch and watch["cancel_after_minutes"] > 0 and watch["cancel_exempt"]:
        notes.append(f"cancel policy: {watch['cancel_exempt']}")
    note = f" ({'; '.join(notes)})" if notes else ""
    write_json_atomic(run_dir / "context.json", context)
    argv = [sys.executable, "-m", "piqc_slurm.sampler", str(run_dir)]
    pid = spawn_detached(argv, run_dir / "sampler.pid")
    return f"sampler pid {pid} for GPUs {','.join(map(str, ctx.gpus))} every {decision.interval:g}s{note}"
