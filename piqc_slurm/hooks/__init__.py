"""slurmd Prolog/Epilog entry points. Nothing here may raise or exit non-zero:
a failing hook drains the node. Every path logs one line with the job id and
what was done (or why not) and returns 0."""

from __future__ import annotations

import os
import sys
import time


def run_hook(verb: str, env: dict[str, str] | None = None) -> int:
    """Run the Prolog or Epilog logic; log every failure; return 0 always."""
    env = dict(os.environ) if env is None else env
    t0 = time.monotonic()
    log = None
    job = env.get("SLURM_JOB_ID", "?")
    try:
        from piqc_slurm import config
        from piqc_slurm.logsetup import HookLog

        try:
            cfg = config.load(env=env)
        except Exception as exc:  # noqa: BLE001 - a broken config must not drain the node
            log = HookLog()
            log.error("%s job=%s: %s; doing nothing", verb, job, exc)
            return 0
        log = HookLog(use_syslog=cfg["syslog"], level=cfg["log_level"])
        if verb == "prolog":
            from piqc_slurm.hooks.prolog import run
        else:
            from piqc_slurm.hooks.epilog import run
            from piqc_slurm.logsetup import hook_logger

            hook_logger(env, use_syslog=cfg["syslog"], level=cfg["log_level"])  # for library code's warnings
        what = run(env, cfg) if verb == "prolog" else run(env, cfg, detach=True)
        log.info("%s job=%s: %s (%.0f ms)", verb, job, what, (time.monotonic() - t0) * 1000)
    except BaseException as exc:  # noqa: BLE001 - a hook must never fail the job
        try:
            if log is None:
                from piqc_slurm.logsetup import HookLog

                log = HookLog()
            log.error("%s job=%s: failed: %s: %s", verb, job, type(exc).__name__, exc)
        except BaseException:  # noqa: BLE001
            try:
                print(f"piqc-slurm {verb}: internal error: {exc!r}", file=sys.stderr)
            except BaseException:  # noqa: BLE001
                pass
    return 0
