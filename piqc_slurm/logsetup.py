"""Logging for hooks and the sampler: syslog (facility daemon) when there is
a syslog socket and the config allows it, else stderr; tagged piqc-slurm."""

from __future__ import annotations

import os

SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


def hook_logger(env: dict[str, str], use_syslog: bool = True, level: str = "info",
                log_file: str | None = None):
    """The "piqc-slurm" logging.Logger (for the sampler and library code):
    syslog if allowed and present, else `log_file` (appended; the detached
    sampler's stderr is /dev/null), else stderr."""
    import logging
    import logging.handlers

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


class HookLog:
    """The hooks' logger: the `syslog` module (a small C module) instead of
    logging + logging.handlers, whose imports cost the Prolog ~9 ms. To syslog
    (facility daemon, tag piqc-slurm) when allowed and a syslog socket exists,
    else to stderr (which the hook wrapper appends to PIQC_HOOK_LOG)."""

    LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

    def __init__(self, use_syslog: bool = True, level: str = "info"):
        self.level = self.LEVELS.get(level, 20)
        self.syslog = None
        if use_syslog and any(os.path.exists(s) for s in SYSLOG_SOCKETS):
            import syslog

            syslog.openlog("piqc-slurm", syslog.LOG_PID, syslog.LOG_DAEMON)
            self.syslog = syslog

    def _emit(self, level: int, name: str, fmt: str, args: tuple) -> None:
        if level < self.level:
            return
        msg = fmt % args if args else fmt
        if self.syslog is not None:
            prio = {10: self.syslog.LOG_DEBUG, 20: self.syslog.LOG_INFO, 30: self.syslog.LOG_WARNING}
            self.syslog.syslog(prio.get(level, self.syslog.LOG_ERR), msg)
            return
        import sys
        import time

        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} piqc-slurm[{os.getpid()}]: {name}: {msg}", file=sys.stderr)

    def info(self, fmt: str, *args) -> None:
        self._emit(20, "INFO", fmt, args)

    def warning(self, fmt: str, *args) -> None:
        self._emit(30, "WARNING", fmt, args)

    def error(self, fmt: str, *args) -> None:
        self._emit(40, "ERROR", fmt, args)
