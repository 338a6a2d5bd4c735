"""Pure parsers for single sacct values. Each returns a value or raises
ParseError (a ValueError) naming the value; none reads files, clocks or the
environment. Regexes are ASCII-only (`\\d` would take Arabic-Indic digits
that int() then accepts) and always matched whole (fullmatch: `$` would
accept a trailing newline).

Value forms are sacct 22.05's (man sacct, src/common/parse_time.c,
slurm_make_time_str, secs2time_str) as recorded in tests/fixtures/sacct/."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hostlist

from piqc_slurm.errors import ParseError

# --- job states ---------------------------------------------------------------
# man sacct, JOB STATE CODES, plus the flag states job_state_string() can print.
JOB_STATES: frozenset[str] = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PENDING", "PREEMPTED", "RUNNING", "REQUEUED", "RESIZING", "REVOKED", "SUSPENDED", "TIMEOUT",
    "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT", "STOPPED", "SIGNALING",
    "STAGE_OUT", "COMPLETING", "CONFIGURING", "POWER_UP_NODE", "LAUNCH_FAILED", "UPDATE_DB",
    "RECONFIG_FAIL", "END",
})
_STATE_RE = re.compile(r"([A-Z][A-Z_]{0,31})(?: by ([0-9]{1,10}))?", re.ASCII)


@lru_cache(maxsize=8192)
def parse_state(s: str) -> tuple[str, int | None]:
    """'CANCELLED by 123' -> ('CANCELLED', 123); 'TIMEOUT' -> ('TIMEOUT', None).

    A well-formed state name missing from JOB_STATES is kept as printed: a newer
    Slurm's new state should not make a job vanish from the store."""
    m = _STATE_RE.fullmatch(s)
    if not m:
        raise ParseError(f"not a job state: {s!r}", value=s)
    by = m.group(2)
    if by is not None and int(by) > 0xFFFFFFFF:
        raise ParseError(f"uid out of range in job state {s!r}", value=s)
    return m.group(1), (int(by) if by is not None else None)


# --- exit codes ---------------------------------------------------------------
_EXIT_RE = re.compile(r"([0-9]{1,3}):([0-9]{1,3})", re.ASCII)


@lru_cache(maxsize=8192)
def parse_exit_code(s: str) -> tuple[int, int]:
    """'3:0' -> (3, 0): the return code and the signal that ended the job."""
    m = _EXIT_RE.fullmatch(s)
    if not m or int(m.group(1)) > 255 or int(m.group(2)) > 255:
        raise ParseError(f"not an exit code (RC:SIGNAL): {s!r}", value=s)
    return int(m.group(1)), int(m.group(2))


# --- times --------------------------------------------------------------------
TIME_NONE = frozenset({"", "Unknown", "None"})  # Unknown: not yet (End of a running job); None: never
_EPOCH_RE = re.compile(r"[0-9]{1,12}", re.ASCII)
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(Z|[+-][0-9]{2}:?[0-9]{2})?", re.ASCII)


def resolve_tz(tz: tzinfo | str | None) -> tzinfo:
    """A zone for ISO times without offset: a tzinfo, an IANA name, or None for UTC."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as e:
        raise ParseError(f"unknown time zone {tz!r}", field="tz", value=tz) from e


def parse_time(s: str, *, epoch: bool, tz: tzinfo | str | None = None) -> int | None:
    """A sacct time as epoch seconds (UTC), or None for Unknown/None/empty.

    epoch=True: the SLURM_TIME_FORMAT=%s form ('1795868096'), what ingest asks for.
    epoch=False: sacct's default '2026-11-28T12:14:56', printed in the local zone
    of the host that ran sacct; `tz` says which (None: UTC). In a DST fall-back
    hour such a time is ambiguous: the first (summer-time) instant is taken; a
    time inside a spring-forward gap is read with the offset before the gap.
    An explicit 'Z' or '+HH:MM' suffix wins over tz."""
    if s in TIME_NONE:
        return None
    if epoch:
        if not _EPOCH_RE.fullmatch(s):
            raise ParseError(f"not an epoch time (SLURM_TIME_FORMAT=%s): {s!r}", value=s)
        return int(s)
    m = _ISO_RE.fullmatch(s)
    if not m:
        raise ParseError(f"not a sacct time (YYYY-MM-DDTHH:MM:SS): {s!r}", value=s)
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    off = m.group(7)
    if off is None:
        zone = resolve_tz(tz)
    elif off == "Z":
        zone = UTC
    else:
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:])
        if oh > 23 or om > 59:
            raise ParseError(f"bad UTC offset in time {s!r}", value=s)
        zone = timezone(sign * timedelta(hours=oh, minutes=om))
    try:
        return int(datetime(y, mo, d, h, mi, sec, tzinfo=zone).timestamp())
    except (ValueError, OverflowError) as e:
        raise ParseError(f"impossible date/time {s!r}", value=s) from e


def format_time(t: int, *, epoch: bool, tz: tzinfo | str | None = None) -> str:
    """The inverse of parse_time (None prints as 'Unknown')."""
    if epoch:
        return str(t)
    return datetime.fromtimestamp(t, resolve_tz(tz)).strftime("%Y-%m-%dT%H:%M:%S")


# --- durations ----------------------------------------------------------------
# secs2time_str prints [D-]HH:MM:SS; CPU times print MM:SS.mmm under an hour.
ELAPSED_NONE = frozenset({"", "UNLIMITED", "Partition_Limit", "INVALID", "None", "Unknown"})
_ELAPSED_RE = re.compile(
    r"(?:([0-9]{1,6})-([0-9]{1,2}):|([0-9]{1,7}):)?([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]{1,6}))?", re.ASCII)


@lru_cache(maxsize=8192)
def parse_elapsed(s: str) -> int | None:
    """'1-02:03:04' -> 93784 seconds; '02:03:04', '03:04', '00:04.123' (fraction
    dropped); UNLIMITED, Partition_Limit, INVALID and empty -> None."""
    if s in ELAPSED_NONE:
        return None
    m = _ELAPSED_RE.fullmatch(s)
    if not m:
        raise ParseError(f"not a duration ([D-]HH:MM:SS): {s!r}", value=s)
    days, dh, hours, mins, secs, _frac = m.groups()
    h = int(dh) if days is not None else int(hours or 0)
    if int(mins) > 59 or int(secs) > 59 or (days is not None and h > 23):
        raise ParseError(f"duration out of range: {s!r}", value=s)
    return int(days or 0) * 86400 + h * 3600 + int(mins) * 60 + int(secs)


def parse_cputime(s: str) -> float | None:
    """sacct's TotalCPU ('1-02:03:04', '02:03:04', '03:04.567', '00:00:00') -> seconds,
    the fraction kept (a short job's CPU time is mostly fraction). Empty -> None."""
    if s in ELAPSED_NONE:
        return None
    whole = parse_elapsed(s)
    frac = s.rpartition(".")[2] if "." in s else ""
    return float(whole or 0) + (float("0." + frac) if frac.isascii() and frac.isdigit() else 0.0)


def format_elapsed(seconds: int) -> str:
    """Seconds as sacct prints Elapsed: HH:MM:SS, with D- once a day is reached."""
    if seconds < 0:
        raise ValueError(f"negative duration {seconds!r}")
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


# --- memory -------------------------------------------------------------------
_MEM_RE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,6})?)([KMGTP]?)", re.ASCII)
_MEM_FACTOR = {"K": Decimal(1) / 1024, "": Decimal(1), "M": Decimal(1), "G": Decimal(1024),
               "T": Decimal(1024**2), "P": Decimal(1024**3)}


@lru_cache(maxsize=8192)
def mem_mib(value: str) -> int:
    """A sacct memory size as whole MiB: '100M' -> 100, '1.50G' -> 1536,
    '62.50G' -> 64000, '512K' -> 1 (rounded half up). Slurm's units are
    binary; a bare number is MiB, Slurm's default memory unit."""
    m = _MEM_RE.fullmatch(value)
    if not m:
        raise ParseError(f"not a memory size (number + K/M/G/T/P): {value!r}", value=value)
    try:
        mib = Decimal(m.group(1)) * _MEM_FACTOR[m.group(2)]
    except InvalidOperation as e:  # pragma: no cover - the regex admits only plain decimals
        raise ParseError(f"not a memory size: {value!r}", value=value) from e
    return int(mib.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- TRES ---------------------------------------------------------------------
_TRES_KEY_RE = re.compile(r"[A-Za-z0-9_.:/+\-]+", re.ASCII)
_TRES_VAL_RE = re.compile(r"[A-Za-z0-9_.+\-]+", re.ASCII)
_COUNT_RE = re.compile(r"[0-9]{1,9}", re.ASCII)


def parse_tres(s: str) -> dict[str, str]:
    """'billing=1,cpu=1,gres/gpu:h100=2,gres/gpu=2,mem=100M,node=1' -> {name: value}
    in printed order; values stay text (mem has units; see mem_mib). '' -> {}."""
    if s == "":
        return {}
    out: dict[str, str] = {}
    for part in s.split(","):
        key, eq, val = part.partition("=")
        if not eq or not _TRES_KEY_RE.fullmatch(key) or not _TRES_VAL_RE.fullmatch(val):
            raise ParseError(f"bad TRES item {part!r} in {s!r}", value=s)
        if key in out:
            raise ParseError(f"TRES {key!r} given twice in {s!r}", value=s)
        out[key] = val
    return out


def format_tres(d: Mapping[str, str | int]) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


def tres_count(d: Mapping[str, str], key: str) -> int:
    """An integer TRES count (cpu, node, gres/...), 0 when absent."""
    v = d.get(key)
    if v is None:
        return 0
    if not _COUNT_RE.fullmatch(v):
        raise ParseError(f"TRES {key} is not a count: {v!r}", value=v)
    return int(v)


def gpus_from_tres(d: Mapping[str, str]) -> tuple[int, str | None]:
    """(GPU count, GPU type) from a parsed TRES dict.

    The count is gres/gpu, else the sum of the typed gres/gpu:TYPE entries. The
    type is the one typed entry's; with none or several types it is None (the
    TRES string keeps the detail)."""
    typed = {k.split(":", 1)[1]: tres_count(d, k) for k in d if k.startswith("gres/gpu:")}
    count = tres_count(d, "gres/gpu") if "gres/gpu" in d else sum(typed.values())
    types = [t for t, n in typed.items() if n > 0] or list(typed)
    return count, (types[0] if len(types) == 1 else None)


# --- job ids ------------------------------------------------------------------
class JobIdParts(NamedTuple):
    base: int                 # the number before _ + or . (the array or het leader's id)
    array_task: int | None    # 1234_5 -> 5
    array_range: str | None   # 1234_[1-3%2] -> '1-3%2' (pending tasks not yet split off)
    het_offset: int | None    # 1234+1 -> 1
    step: str | None          # batch, extern, interactive, 0, 0+1 ...


_JOBID_RE = re.compile(
    r"([0-9]{1,10})"
    r"(?:_(?:([0-9]{1,10})|\[([0-9][0-9,\-:%]*)\])|\+([0-9]{1,5}))?"
    r"(?:\.([A-Za-z][A-Za-z_]{0,31}|[0-9]{1,10}(?:\+[0-9]{1,5})?))?",
    re.ASCII)
_U32 = 0xFFFFFFFF


@lru_cache(maxsize=8192)
def parse_jobid(s: str) -> JobIdParts:
    """'1234', '1234_5', '1234_[1-3%2]', '1234+0', '1234.batch', '1234_5.0' ... -> parts."""
    m = _JOBID_RE.fullmatch(s)
    if not m:
        raise ParseError(f"not a Slurm job id: {s!r}", value=s)
    base, task, rng, het, step = m.groups()
    if int(base) > _U32 or (task is not None and int(task) > _U32):
        raise ParseError(f"job id out of range: {s!r}", value=s)
    return JobIdParts(int(base), int(task) if task is not None else None, rng,
                      int(het) if het is not None else None, step)


def format_jobid(p: JobIdParts) -> str:
    s = str(p.base)
    if p.array_task is not None:
        s += f"_{p.array_task}"
    elif p.array_range is not None:
        s += f"_[{p.array_range}]"
    elif p.het_offset is not None:
        s += f"+{p.het_offset}"
    if p.step is not None:
        s += f".{p.step}"
    return s


# --- node lists ---------------------------------------------------------------
NODELIST_NONE = frozenset({"", "None assigned", "(null)"})


def expand_nodelist(s: str) -> list[str]:
    """'gpu[01-03],vm' -> ['gpu01', 'gpu02', 'gpu03', 'vm'] (python-hostlist);
    'None assigned' (never started) -> []. Cached: node lists repeat a lot."""
    return list(_expand_nodelist(s))


def first_node(s: str) -> str:
    """A node list's first node ('gpu[01-03]' -> 'gpu01': the batch host of a job); a list that
    does not parse: its text up to the first comma."""
    try:
        return _expand_nodelist(s)[0]
    except (ParseError, IndexError):
        return s.split(",")[0]


def node_count(s: str) -> int:
    """How many nodes a node list names (0 for none or one that does not parse)."""
    try:
        return len(_expand_nodelist(s))
    except ParseError:
        return 0


@lru_cache(maxsize=8192)
def _expand_nodelist(s: str) -> tuple[str, ...]:
    if s in NODELIST_NONE:
        return ()
    if any(c.isspace() for c in s):
        raise ParseError(f"bad node list {s!r}", value=s)
    try:
        return tuple(hostlist.expand_hostlist(s))
    except hostlist.BadHostlist as e:
        raise ParseError(f"bad node list {s!r}: {e}", value=s) from e
    except (ValueError, IndexError, TypeError, RecursionError, MemoryError) as e:
        raise ParseError(f"bad node list {s!r}", value=s) from e


# --- plain integers -----------------------------------------------------------
_INT_RE = re.compile(r"[0-9]{1,18}", re.ASCII)


def parse_int(s: str) -> int:
    """A non-negative decimal count (AllocCPUS, UID, ElapsedRaw ...)."""
    if not _INT_RE.fullmatch(s):
        raise ParseError(f"not a non-negative integer: {s!r}", value=s)
    return int(s)


# --- scontrol -------------------------------------------------------------------
def parse_show_config(text: str) -> dict[str, str]:
    """`scontrol show config` -> {key: value} ('ClusterName = piqc')."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


# One GRES of a node, as slurm.conf writes it (`<name>[:<type>][:no_consume]:<number>[K|M|G|T|P]`) or as
# slurmctld rebuilds it once slurmd registers (gres.c, _build_node_gres_str: the count with the same
# suffixes, then the sockets, `(S:0-1)` or `(S:0,2,4)`).
_GRES_ITEM = re.compile(r"gpu(?::(?!no_consume:)(?P<type>[^:(]+))?(?::no_consume)?:(?P<count>[0-9]{1,10})"
                        r"(?P<suffix>[KMGTP]?)(?:\(.*\))?", re.ASCII)  # fullmatch; ASCII: int() takes '١'
_GRES_MAX = 0xFFFFFFFF  # a count beyond uint32 (99999P) is no GPU count; the inventory could not hold it


def parse_node_gres(text: str) -> dict[str, list[tuple[str | None, int]]]:
    """`scontrol show node -o` -> {node: [(gpu type or None, count), ...]} from each line's Gres=
    (gpu:h100:8, gpu:a100:4(S:0-1),gpu:t4:2, gpu:2; other GRES (mps, shard, nic ...) are left out;
    (null) or no gpu: no entry)."""
    out: dict[str, list[tuple[str | None, int]]] = {}
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for f in line.split():
            if "=" in f:
                k, v = f.split("=", 1)
                fields.setdefault(k, v)  # the node's own fields come first, a free-text Reason= comes later
        node, gres = fields.get("NodeName"), fields.get("Gres", "")
        if not node or not gres or gres == "(null)":
            continue
        items = []
        # the commas between GRES, not those of a socket list `(S:0,2)`, whatever the next GRES is named
        for item in re.split(r",(?![^(]*\))", gres):
            m = _GRES_ITEM.fullmatch(item.strip())
            if m:
                suffix = m.group("suffix")
                count = int(m.group("count")) * (1024 ** ("KMGTP".index(suffix) + 1) if suffix else 1)
                if 0 < count <= _GRES_MAX:
                    items.append((m.group("type"), count))
        if items:
            out[node] = items
    return out


# --- sacctmgr show event ------------------------------------------------------------
EVENT_FIELDS = ("Cluster", "NodeName", "Start", "End", "State", "Reason")


class NodeEvent(NamedTuple):
    """One `sacctmgr show event` line: a node down, drained or failed from start to end
    (end None: still open, sacctmgr's `Unknown`). A cluster event has node ''."""

    cluster: str
    node: str
    start: int
    end: int | None
    state: str
    reason: str


def parse_node_events(text: str, *, fields: tuple[str, ...] = EVENT_FIELDS, epoch: bool = True,
                      tz: tzinfo | str | None = None, cluster: str = "") -> list[NodeEvent]:
    """`sacctmgr -n -P show event format=<fields>` -> NodeEvents, in the order printed.

    `fields` is the format= list asked for (NodeName, Start, End, State and Reason are needed;
    Cluster optional, else `cluster`); Reason, free text that may hold a `|`, must be last.
    Times as parse_time reads them (epoch: SLURM_TIME_FORMAT=%s). Lines starting with `#`
    (a recording's header) and blank lines are skipped; a malformed line is a ParseError."""
    want = [f.lower() for f in fields]
    for need in ("nodename", "start", "end", "state", "reason"):
        if need not in want:
            raise ValueError(f"parse_node_events needs the {need} field")
    if want[-1] != "reason":
        raise ValueError("parse_node_events: Reason (free text) must be the last field")
    out: list[NodeEvent] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        values = line.split("|", len(want) - 1)
        if len(values) != len(want):
            raise ParseError(f"expected {len(want)} fields, got {len(values)}", source="sacctmgr show event",
                             line=n, value=line)
        row = dict(zip(want, values, strict=True))
        try:
            start = parse_time(row["start"], epoch=epoch, tz=tz)
            end = parse_time(row["end"], epoch=epoch, tz=tz)
        except ParseError as e:  # name the line, as every other parser here does
            field = "Start" if e.value == row["start"] else "End"
            raise ParseError(e.message, source="sacctmgr show event", line=n, field=field, value=e.value) from e
        if start is None:
            raise ParseError(f"event without a start: {line!r}", source="sacctmgr show event", line=n,
                             field="Start", value=row["start"])
        out.append(NodeEvent(row.get("cluster", cluster), row["nodename"], start, end, row["state"],
                             row["reason"]))
    return out
