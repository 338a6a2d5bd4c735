"""Time specifications as sacct takes them for -S/--starttime and -E/--endtime
(man sacct, "VALID TIME FORMATS"), for `ingest --since/--until`, `analyze`,
`digest`, `gaps` and `sacct`. Pure: `now` and the zone are arguments.

Accepted (case-insensitive):
  HH:MM[:SS][AM|PM]            today at that time
  MMDD[YY] | MM/DD[/YY] | MM.DD[.YY]
  YYYY-MM-DD[THH:MM[:SS]]
  today | midnight | noon | elevenses | fika | teatime | now
  now[{+|-}N[seconds|minutes|hours|days|weeks]]  (also sec/min/hour/day/week, plural or not; no unit: seconds)
  uts<epoch seconds>            an absolute instant (as Slurm's parse_time accepts)
A bare date means local midnight in `tz` (the zone of the host that asks,
as sacct does). Digits are ASCII only; a time before 1970 or after 9999 is a
UsageError too (it could not be stored or printed).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from piqc_slurm.errors import UsageError

# ASCII only: `\d` would take Arabic-Indic digits, which int() then reads (sacct takes 0-9 only).
_REL = re.compile(r"^now(?:([+-])(\d+)(seconds?|sec|minutes?|min|hours?|days?|weeks?)?)?$", re.ASCII)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm)?$", re.ASCII)
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[t ](\d{1,2}):(\d{2})(?::(\d{2}))?)?$", re.ASCII)
_MDY = re.compile(r"^(\d{2})(\d{2})(\d{2})?$", re.ASCII)
_MDY_SEP = re.compile(r"^(\d{1,2})([/.])(\d{1,2})(?:\2(\d{2}|\d{4}))?$", re.ASCII)
# 1970 .. 9999-12-31T23:59:59Z: uts99999999999999999999 or now-99999999999weeks would reach the store
# as a bound parameter no SQLite INTEGER holds, and the clock functions as an OverflowError.
MAX_TIME = 253402300799
_NAMED = {"midnight": time(0), "today": time(0), "noon": time(12), "elevenses": time(11),
          "fika": time(15), "teatime": time(16)}
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def local_zone() -> tzinfo:
    return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


def parse_timespec(spec: str, *, now: datetime | None = None, tz: tzinfo | None = None) -> int:
    """A sacct time specification -> epoch seconds. UsageError naming the value if unparseable."""
    tz = tz or local_zone()
    now = now.astimezone(tz) if now is not None else datetime.now(tz)
    s = spec.strip().lower()
    try:
        t = _parse(s, now, tz)
    except (ValueError, OverflowError):
        raise UsageError(f"invalid time specification {spec!r} (try 2026-11-28, 2026-11-28T08:00, "
                         "now-1days, midnight, 11/28)") from None
    if not 0 <= t <= MAX_TIME:
        raise UsageError(f"time specification {spec!r} is out of range (1970-01-01 .. 9999-12-31)")
    return t


def _at(d: date, t: time, tz: tzinfo) -> int:
    return int(datetime.combine(d, t, tzinfo=tz).timestamp())


def _year(yy: str | None, today: date) -> int:
    if not yy:
        return today.year
    y = int(yy)
    return y if y >= 100 else 2000 + y


def _parse(s: str, now: datetime, tz: tzinfo) -> int:
    if s.startswith("uts") and (s[3:].isascii() and s[3:].isdigit()):
        return int(s[3:])
    m = _REL.match(s)
    if m:
        t = int(now.timestamp())
        if m.group(1):
            unit = (m.group(3) or "s")[0]
            n = int(m.group(2)) * _UNIT[unit]
            t = t + n if m.group(1) == "+" else t - n
        return t
    if s in _NAMED:
        return _at(now.date(), _NAMED[s], tz)
    m = _ISO.match(s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        hh, mm, ss = int(m.group(4) or 0), int(m.group(5) or 0), int(m.group(6) or 0)
        return _at(date(y, mo, d), time(hh, mm, ss), tz)
    m = _CLOCK.match(s)
    if m:
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if m.group(4):
            if not 1 <= hh <= 12:
                raise ValueError(s)
            hh = hh % 12 + (12 if m.group(4) == "pm" else 0)
        return _at(now.date(), time(hh, mm, ss), tz)
    m = _MDY.match(s)
    if m:
        return _at(date(_year(m.group(3), now.date()), int(m.group(1)), int(m.group(2))), time(0), tz)
    m = _MDY_SEP.match(s)
    if m:
        return _at(date(_year(m.group(4), now.date()), int(m.group(1)), int(m.group(3))), time(0), tz)
    raise ValueError(s)


def start_of_today(now: datetime | None = None, tz: tzinfo | None = None) -> int:
    """sacct's default -S without -j: 00:00 today, local time."""
    tz = tz or local_zone()
    now = now.astimezone(tz) if now is not None else datetime.now(tz)
    return _at(now.date(), time(0), tz)


def days_ago(n: int, now: datetime | None = None) -> int:
    now = now or datetime.now().astimezone()
    return int((now - timedelta(days=n)).timestamp())
