"""`piqc-slurm sacct` without click: options in, bytes out.

The store, the caller, the clock, the environment and the output stream are
all arguments, so tests drive it on a fixture store without patching."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from piqc_slurm.errors import UsageError
from piqc_slurm.query import fields as F
from piqc_slurm.query.access import Caller, is_admin, resolve_users
from piqc_slurm.query.gpu import (
    FindingsSource,
    StoredFindings,
    gpu_values,
    job_gpu,
    load_gpu_stats,
    load_price_book,
)
from piqc_slurm.query.jobids import parse_jobs
from piqc_slurm.query.render import PARSABLE, PARSABLE2, TABLE, Renderer
from piqc_slurm.query.select import COLUMNS, Selection, build_query, default_window
from piqc_slurm.query.states import parse_states
from piqc_slurm.query.store import Reader
from piqc_slurm.query.timefmt import NO_VAL, TimeFormatter
from piqc_slurm.usage.prices import PriceBook

_IX = {c: i for i, c in enumerate(COLUMNS)}
BATCH = 1000


@dataclass
class Options:
    """The command line, as sacct's flags (lists hold the raw, repeatable values)."""

    jobs: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    starttime: str | None = None
    endtime: str | None = None
    formats: list[str] = field(default_factory=list)
    parsable: bool = False         # -p
    parsable2: bool = False        # -P
    noheader: bool = False
    delimiter: str | None = None
    json: bool = False
    allusers: bool = False        # -a (or -u -1) given after every other -u: sacct's last one wins
    duplicates: bool = False
    clusters: list[str] = field(default_factory=list)
    allclusters: bool = False
    brief: bool = False


@dataclass
class Settings:
    """What comes from the config and the host."""

    config: Any = None                # a piqc Config (prices, catalog); None: built-in defaults
    prices: PriceBook | None = None   # built from config and the store's overrides on first use
    admin_users: Sequence[str] = ("root",)
    admin_groups: Sequence[str] = ()
    cluster: str = ""
    findings: FindingsSource = field(default_factory=StoredFindings)


def _split_list(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for item in v.split(","):
            if item and item not in out:
                out.append(item)
    return out


def columns_for(opts: Options) -> list[F.Column]:
    specs = list(opts.formats)
    if opts.brief:
        specs.append(F.BRIEF_FORMAT)
    if not specs:
        if opts.json:
            return [F.Column(F.BY_NAME[n], F.BY_NAME[n].width) for n in F.JSON_DEFAULT]
        specs = [F.DEFAULT_FORMAT]
    return F.parse_format(specs)


def selection_for(opts: Options, settings: Settings, caller: Caller, now: int,
                  tz_now: datetime | None = None) -> Selection:
    """The Selection sacct's flags describe, after its defaults and the access rules."""
    from piqc_slurm.timespec import parse_timespec, start_of_today

    when = tz_now or datetime.fromtimestamp(now).astimezone()
    start = parse_timespec(opts.starttime, now=when) if opts.starttime is not None else None
    end = parse_timespec(opts.endtime, now=when) if opts.endtime is not None else None
    jobs = parse_jobs(opts.jobs) or None
    states = parse_states(opts.states) or None
    s, e = default_window(start=start, end=end, jobs=bool(jobs), states=bool(states), now=now,
                          midnight=start_of_today(when))
    if e and s > e:
        fmt = TimeFormatter(now=now)
        raise UsageError(f"Start time ({fmt.text(s, 32).decode()}) requested is after end time "
                         f"({fmt.text(e, 32).decode()}).")
    raw_users = _split_list(opts.users)
    all_users = opts.allusers
    if not raw_users and (jobs or caller.uid == 0):
        all_users = True
    names: list[str] | None
    uids: list[int] | None
    if all_users:
        names, uids = None, None
    elif raw_users:
        names, uids = resolve_users(raw_users)
    else:
        names, uids = [caller.name], None
    admin = is_admin(caller, settings.admin_users, settings.admin_groups)
    if opts.allclusters or any(c.lower() in ("all", "-1") for c in _split_list(opts.clusters)):
        clusters = None
    elif opts.clusters:
        clusters = _split_list(opts.clusters)
    else:
        clusters = [settings.cluster] if settings.cluster else None
    return Selection(
        start=s, end=e, clusters=clusters, users=names, uids=uids,
        owner=None if admin else caller.name,
        accounts=[a.lower() for a in _split_list(opts.accounts)] or None,
        partitions=[p.lower() for p in _split_list(opts.partitions)] or None,
        jobs=jobs, states=states, duplicates=opts.duplicates)


# --- values of the sacct fields --------------------------------------------------------
def _elapsed(r: tuple, now: int) -> int:
    start, end = r[_IX["start"]], r[_IX["end"]]
    if start and not end:
        return max(0, now - start)
    return r[_IX["elapsed"]] or 0


def _state(r: tuple) -> str:
    state, by = r[_IX["state"]], r[_IX["state_by"]]
    return f"{state} by {by}" if state == "CANCELLED" and by is not None else state


def _start(r: tuple) -> int:
    if r[_IX["start"]]:
        return r[_IX["start"]]
    return NO_VAL if r[_IX["end"]] else 0   # slurmdbd: ended without starting -> None


def _alloc_nodes(n: int | None) -> str:
    """convert_num_unit(n, UNIT_NONE, CONVERT_NUM_UNIT_EXACT)."""
    n = n or 0
    units = "KMGTP"
    unit = -1
    while n >= 1024 and n % 1024 == 0 and unit < len(units) - 1:
        n //= 1024
        unit += 1
    return f"{n}{units[unit] if unit >= 0 else ''}"


_SACCT_TEXT: dict[str, Callable[[tuple, int], object]] = {
    "Account": lambda r, now: r[_IX["account"]],
    "AllocCPUS": lambda r, now: r[_IX["alloc_cpus"]] or 0,
    "NCPUS": lambda r, now: r[_IX["alloc_cpus"]] or 0,
    "AllocNodes": lambda r, now: _alloc_nodes(r[_IX["alloc_nodes"]]),
    "AllocTRES": lambda r, now: r[_IX["alloc_tres"]],
    "Cluster": lambda r, now: r[_IX["cluster"]],
    "Comment": lambda r, now: r[_IX["comment"]],
    "DerivedExitCode": lambda r, now: r[_IX["derived_exit_code"]],
    "Elapsed": _elapsed,
    "ElapsedRaw": _elapsed,
    "Eligible": lambda r, now: r[_IX["eligible"]] or 0,
    "End": lambda r, now: r[_IX["end"]] or 0,
    "ExitCode": lambda r, now: r[_IX["exit_code"]],
    "JobID": lambda r, now: r[_IX["job_id"]],
    "JobIDRaw": lambda r, now: str(r[_IX["job_id_raw"]]),
    "JobName": lambda r, now: r[_IX["name"]],
    "NodeList": lambda r, now: r[_IX["nodelist"]] or "None assigned",
    "Partition": lambda r, now: r[_IX["partition"]],
    "QOS": lambda r, now: r[_IX["qos"]],
    "Start": lambda r, now: _start(r),
    "State": lambda r, now: _state(r),
    "Submit": lambda r, now: r[_IX["submit"]],
    "UID": lambda r, now: r[_IX["uid"]],
    "User": lambda r, now: r[_IX["user"]],
    "WorkDir": lambda r, now: r[_IX["work_dir"]],
}


def _json_sacct(name: str, r: tuple, now: int, times: TimeFormatter) -> object:
    if name in ("Submit", "Start", "End", "Eligible"):
        return times.iso_utc(_SACCT_TEXT[name](r, now))  # type: ignore[arg-type]
    if name == "JobIDRaw":
        return r[_IX["job_id_raw"]]
    if name == "AllocNodes":
        return r[_IX["alloc_nodes"]] or 0
    if name == "NodeList":
        return r[_IX["nodelist"]] or None
    return _SACCT_TEXT[name](r, now)


# --- the command -----------------------------------------------------------------------
def run(opts: Options, *, url: str, settings: Settings, caller: Caller, out: IO[bytes],
        env: Mapping[str, str] | None = None, now: int | None = None,
        warn: Callable[[str], None] | None = None, reader: Reader | None = None) -> int:
    """Print the jobs; returns how many were printed."""
    now = int(time.time()) if now is None else now
    if opts.parsable and opts.parsable2:
        opts.parsable = False  # the last of -p/-P wins in sacct; click loses the order: -P wins
    columns = columns_for(opts)
    sel = selection_for(opts, settings, caller, now)
    times = TimeFormatter(env=env, now=now, warn=warn)
    mode = PARSABLE2 if opts.parsable2 else PARSABLE if opts.parsable else TABLE
    renderer = Renderer(columns, mode, opts.delimiter, times)
    names = [c.field.name for c in columns]
    want_gpu = any(n in F.ADDED_FIELDS for n in names)
    sql, params = build_query(sel)
    own = reader is None
    reader = reader or Reader(url)
    count = 0
    try:
        batches = reader.batches(sql, params, BATCH)
        if opts.json:
            out.write(b'{"jobs": [')
        elif not opts.noheader:
            out.write(renderer.header())
        for rows in batches:
            gpu = _gpu_for(reader, rows, now, settings) if want_gpu else {}
            chunk: list[bytes] = []
            for r in rows:
                g = gpu.get(r[_IX["id"]])
                if opts.json:
                    doc: dict[str, Any] = {}
                    typed = g.typed() if g is not None else {}
                    for n in names:
                        doc[n] = typed[n] if n in F.ADDED_FIELDS else _json_sacct(n, r, now, times)
                    sep = b"\n  " if count == 0 else b",\n  "
                    chunk.append(sep + json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
                else:
                    text = g.text() if g is not None else {}
                    chunk.append(renderer.line([text[n] if n in F.ADDED_FIELDS else _SACCT_TEXT[n](r, now)
                                                for n in names]))
                count += 1
            out.write(b"".join(chunk))
        if opts.json:
            out.write(b"\n]}\n" if count else b"]}\n")
    finally:
        if own:
            reader.close()
    return count


def _gpu_for(reader: Reader, rows: list[tuple], now: int, settings: Settings) -> dict:
    refs = [r[_IX["id"]] for r in rows]
    stats = load_gpu_stats(reader, refs)
    book = settings.prices
    if book is None:
        book = settings.prices = load_price_book(reader, settings.config)
    jobs = [job_gpu(r[_IX["id"]], cluster=r[_IX["cluster"]], alloc_gpus=r[_IX["alloc_gpus"]] or 0,
                    gpu_type=r[_IX["gpu_type"]], alloc_tres=r[_IX["alloc_tres"]] or "",
                    elapsed_s=_elapsed(r, now), partition=r[_IX["partition"]] or "", cpus=r[_IX["alloc_cpus"]] or 0,
                    stats=stats.get(r[_IX["id"]]), book=book) for r in rows]
    found = settings.findings.for_jobs(reader, jobs)
    return {j.ref: gpu_values(j, found.get(j.ref)) for j in jobs}
