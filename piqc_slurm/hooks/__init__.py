"""slurmd Prolog/Epilog entry points. Nothing here may raise or exit non-zero:
a failing hook drains the node."""

from __future__ import annotations

import os
import sys


def run_hook(verb: str, env: dict[str, str] | None = None) -> int:
    """Run the Prolog or Epilog logic; log every failure; return 0 always."""
    env = dict(os.environ) if env is None else env
    try:
        from piqc_slurm.hooks.logsetup import hook_logger

        log = hook_logger(env)
        log.info("%s job=%s node=%s: no node agent yet (hooks only log)", verb,
                 env.get("SLURM_JOB_ID", "?"), env.get("SLURMD_NODENAME", "?"))
    except BaseException as exc:  # noqa: BLE001 - a hook must never fail the job
        try:
            print(f"piqc-slurm {verb}: internal error: {exc!r}", file=sys.stderr)
        except BaseException:  # noqa: BLE001
            pass
    return 0
