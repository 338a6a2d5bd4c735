"""`python -m piqc_slurm.sampler RUN_DIR`: the per-job GPU sampler process.

Logging is configured here, the process's one entry point (the modules only
log to "piqc-slurm.sampler"): syslog when available, as for the hooks,
because a detached sampler's stderr is /dev/null. Two environment variables
exist for tests and debugging: PIQC_SAMPLER_LOG=stderr (no syslog) and
PIQC_SAMPLER_LOG_LEVEL=debug|info|warning|error; without syslog, messages
go to PIQC_HOOK_LOG when the hook environment names one.
"""

import logging
import os
import sys

from piqc_slurm.sampler.run import main


def _setup_logging() -> None:
    try:
        from piqc_slurm.logsetup import hook_logger

        hook_logger(dict(os.environ), use_syslog=os.environ.get("PIQC_SAMPLER_LOG") != "stderr",
                    level=os.environ.get("PIQC_SAMPLER_LOG_LEVEL", "info"),
                    log_file=os.environ.get("PIQC_HOOK_LOG"))
    except Exception:  # noqa: BLE001 - logging must never stop the sampler
        logging.basicConfig(level=logging.INFO, format="piqc-slurm sampler: %(levelname)s: %(message)s")


_setup_logging()
sys.exit(main())
