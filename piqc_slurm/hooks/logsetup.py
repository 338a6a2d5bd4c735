"""Logging for hooks and the sampler: syslog (facility daemon) when there is
a syslog socket and the config allows it, else stderr; tagged piqc-slurm."""

from __future__ import annotations

import logging
import logging.handlers
import os

SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


def hook_logger(env: dict[str, str], use_syslog: bool = True, level: str = "info",
                log_file: str | None = None) -> logging.Logger:
    """The "piqc-slurm" logger: syslog if allowed and present, else `log_file`
    (appended; the detached sampler's stderr is /dev/null), else stderr."""
    log = logging.getLogger("piqc-slurm")
    if log.handlers:
        return log
    log.setLevel(level.upper())
    sock = next((s for s in SYSLOG_SOCKETS if os.path.exists(s)), None)
    if use_syslog and sock:
        try:
            handler: logging.Handler = logging.handlers.SysLogHandler(
                address=sock, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            handler.setFormatter(logging.Formatter("piqc-slurm[%(process)d]: %(message)s"))
            log.addHandler(handler)
        except OSError:
            pass
    if not log.handlers and log_file:
        try:
            handler = logging.FileHandler(log_file, mode="a", delay=True)
            handler.setFormatter(logging.Formatter("%(asctime)s piqc-slurm[%(process)d]: %(message)s",
                                                   "%Y-%m-%dT%H:%M:%S"))
            log.addHandler(handler)
        except OSError:
            pass
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("piqc-slurm: %(levelname)s: %(message)s"))
        log.addHandler(handler)
    return log
