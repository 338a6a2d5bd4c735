"""Times as sacct 22.05.8 prints them (slurm_make_time_str, src/common/parse_time.c).

  * 0 (unset) prints `Unknown`; NO_VAL prints `None` (slurmdbd gives NO_VAL
    as the Start of a job that ended without starting);
  * else the local time of the querying host (TZ honoured) in the format
    SLURM_TIME_FORMAT selects: unset, empty or `standard` -> %FT%T;
    `relative` -> Slurm's relative forms (12:14:58, Ystday 10:00, Tomorr ...,
    Mon 10:00, 28 Nov 10:00, 28 Nov 2025); any other value containing `%`
    and shorter than 32 bytes is a strftime format; anything else is
    reported once on stderr and the standard format used;
  * the text is cut to the field's width (sacct formats into a buffer of
    width+1 bytes, even with -P); a strftime result that is empty or does
    not fit 255 bytes becomes `#` characters (slurm_strftime)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping

NO_VAL = 0xFFFFFFFE
INFINITE = 0xFFFFFFFF
STANDARD = "%Y-%m-%dT%H:%M:%S"


def _relative_fmt(tm: time.struct_time, today: int) -> str:
    distance = 1000 * tm.tm_year + (tm.tm_yday - 1) - today
    if distance == -1:
        return "Ystday %H:%M"
    if distance == 0:
        return "%H:%M:%S"
    if distance == 1:
        return "Tomorr %H:%M"
    if distance < -365 or distance > 365:
        return "%-d %b %Y"
    if distance < -1 or distance > 6:
        return "%-d %b %H:%M"
    return "%a %H:%M"


class TimeFormatter:
    """Formats epoch seconds like sacct; one per command (it reads the environment once)."""

    def __init__(self, env: Mapping[str, str] | None = None, now: float | None = None,
                 warn: Callable[[str], None] | None = None):
        env = os.environ if env is None else env
        self._now = time.time() if now is None else now
        self._warn = warn or (lambda m: print(m, file=sys.stderr))
        self._relative = False
        self._fmt = STANDARD
        self._invalid: str | None = None
        fmt = env.get("SLURM_TIME_FORMAT")
        if not fmt or fmt == "standard":
            pass
        elif fmt == "relative":
            self._relative = True
        elif "%" not in fmt or len(fmt.encode("utf-8", "surrogateescape")) >= 32:
            self._invalid = fmt
        else:
            self._fmt = fmt
        self._today: int | None = None

    def _today_key(self) -> int:
        if self._today is None:
            tm = time.localtime(self._now)
            self._today = 1000 * tm.tm_year + (tm.tm_yday - 1)
        return self._today

    def text(self, t: int | None, size: int) -> bytes:
        """The bytes sacct prints for time t in a buffer of `size` bytes (width + 1)."""
        if size <= 0:
            return b""
        if not t or t == INFINITE:
            return b"Unknown"[:size - 1]
        if t == NO_VAL:
            return b"None"[:size - 1]
        if self._invalid is not None:
            self._warn(f"piqc-slurm sacct: error: invalid SLURM_TIME_FORMAT = '{self._invalid}'")
            self._invalid = None
        tm = time.localtime(t)
        fmt = _relative_fmt(tm, self._today_key()) if self._relative else self._fmt
        buf = 256 if size < 256 else size + 1
        try:
            out = time.strftime(fmt, tm).encode("utf-8", "surrogateescape")
        except (ValueError, UnicodeError):
            out = b""
        if not out or len(out) + 1 > buf:
            out = b"#" * size
        return out[:size - 1]

    def iso_utc(self, t: int | None) -> str | None:
        """For --json: ISO-8601 UTC with a Z, None when unset."""
        if not t or t in (NO_VAL, INFINITE):
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
