"""`piqc-slurm sacct` without click: options in, bytes out.

The store, the caller, the clock, the environment and the output stream are
all arguments, so tests drive it on a fixture store without patching."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from piqc_slurm.errors import UsageError
from piqc_slurm.query import fields as F
from piqc_slurm.query.access import Caller, is_admin, resolve_users
from piqc_slurm.query.jobids import parse_jobs
from piqc_slurm.query.render import PARSABLE, PARSABLE2, TABLE, Renderer
from piqc_slurm.query.select import COLUMNS, Selection, build_query, default_window
from piqc_slurm.query.states import parse_states
from piqc_slurm.query.store import Reader
from piqc_slurm.query.timefmt import NO_VAL, TimeFormatter

if TYPE_CHECKING:
    from piqc_slurm.query.gpu import FindingsSource
    from piqc_slurm.usage.prices import PriceBook

# query.gpu (prices, costs), usage.efficiency (Slurm's value parsers) and query.sacctjson are
# imported where a listing needs them: a plain `sacct -j` or window prints none of their fields
# and did pay 30 ms of imports for them (bench/bench_cluster.py floor.imports_sacct).

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
    json: bool = False             # --json (or --json-fields)
    json_fields: bool = False      # --json-fields: the flat {FIELD: value} shape
    allusers: bool = False        # -a (or -u -1) given after every other -u: sacct's last one wins
    duplicates: bool = False
    clusters: list[str] = field(default_factory=list)
    allclusters: bool = False
    brief: bool = False
    allocations: bool = False     # -X: job lines only, no steps


@dataclass
class Settings:
    """What comes from the config and the host."""

    config: Any = None                # a piqc Config (prices, catalog); None: built-in defaults
    prices: PriceBook | None = None   # built from config and the store's overrides on first use
    admin_users: Sequence[str] = ("root",)
    admin_groups: Sequence[str] = ()
    cluster: str = ""
    findings: FindingsSource | None = None  # None: query.gpu.StoredFindings
    tres_ids: Mapping[str, int] | None = None  # --json: TRES ids; None: ask sacctmgr (static ids if it fails)
    slurm_version: str | None = None           # --json meta: None: ask sacct -V


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
        if opts.json_fields:
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


def _loads(v: object) -> Any:
    """A JSON column as read: text on SQLite, already decoded through psycopg."""
    return json.loads(v) if isinstance(v, str | bytes) else v


def _running(start: int | None, end: int | None) -> bool:
    return bool(start) and not end


def _job_value(name: str, r: tuple, extra: dict, now: int) -> object:
    """A sacct field of a job line: the typed columns, else the text sacct printed at ingest."""
    fn = _SACCT_TEXT.get(name)
    if fn is not None:
        return fn(r, now)
    if name in ("CPUTime", "CPUTimeRAW") and _running(r[_IX["start"]], r[_IX["end"]]):
        return _elapsed(r, now) * (r[_IX["alloc_cpus"]] or 0)  # sacct: elapsed (until now) x CPUs
    return extra.get(name, "")


# sacct -X loads no steps, and a job line's CPU times are the sum of its steps': 22.05.8 prints
# 00:00:00 for them (tests/fixtures/steps/22.05.8/new_X_P.txt); so does `piqc-slurm sacct -X`.
_NO_STEP_CPU = {"TotalCPU": "00:00:00", "UserCPU": "00:00:00", "SystemCPU": "00:00:00"}
_STEP_TIMES = {"Submit": "submit", "Eligible": "eligible", "Start": "start", "End": "end"}


def _line_getters(names: Sequence[str], now: int) -> list[Callable[[tuple, dict, dict], object]]:
    """Per column, its job-line value from (row, extra, added-field texts): _job_value's choice,
    made once per listing rather than once per cell (2,000 lines x 7 columns)."""
    def added(n: str) -> Callable[[tuple, dict, dict], object]:
        return lambda r, extra, text: text[n]

    def typed(fn: Callable[[tuple, int], object]) -> Callable[[tuple, dict, dict], object]:
        return lambda r, extra, text: fn(r, now)

    def other(n: str) -> Callable[[tuple, dict, dict], object]:
        return lambda r, extra, text: _job_value(n, r, extra, now)

    return [added(n) if n in F.ADDED_FIELDS else typed(_SACCT_TEXT[n]) if n in _SACCT_TEXT else other(n)
            for n in names]


def _step_value(name: str, r: tuple, extra: dict, step: dict, now: int) -> object:
    """A sacct field of a step line (jobs.steps; records.StepRecord.to_doc): what the step line
    said, else (absent: the same text) the job line's value; GPU fields belong to the job."""
    if name in F.ADDED_FIELDS:
        return ""
    if name in _STEP_TIMES:
        return step.get(_STEP_TIMES[name]) or 0
    v = step.get("v") or {}
    running = _running(step.get("start"), step.get("end"))
    if running and name in ("Elapsed", "ElapsedRaw", "CPUTime", "CPUTimeRAW"):
        secs = max(0, now - step["start"])
        if name.startswith("CPUTime"):
            cpus = v.get("AllocCPUS")
            secs *= int(cpus) if cpus else (r[_IX["alloc_cpus"]] or 0)
        return secs
    if name in v:
        return v[name]
    if name == "JobID":
        return f"{r[_IX['job_id']]}.{step['step']}"
    if name == "JobIDRaw":
        return f"{r[_IX['job_id_raw']]}.{step['step']}"
    return _job_value(name, r, extra, now)


def _eff_values(r: tuple, extra: dict, steps: list[dict], now: int) -> dict[str, float | None]:
    """TimeEff, CPUEff, MemEff of a job (usage/efficiency.py: reportseff's rules) from its stored
    sacct texts: the job line's Timelimit, TotalCPU, ReqMem, NNodes; each step's MaxRSS, NTasks."""
    from piqc_slurm.usage import efficiency as E
    state = (r[_IX["state"]] or "").split(" ", 1)[0]
    elapsed = _elapsed(r, now)

    def step_field(st: dict, name: str) -> str:
        v = st.get("v") or {}
        return v[name] if name in v else extra.get(name, "")

    nodes = extra.get("NNodes", "")
    return {
        "TimeEff": E.time_eff(elapsed, extra.get("Timelimit", ""), state),
        "CPUEff": E.cpu_eff(elapsed, extra.get("TotalCPU", ""), r[_IX["alloc_cpus"]], state),
        "MemEff": E.mem_eff([(step_field(st, "MaxRSS"), step_field(st, "NTasks")) for st in steps],
                            extra.get("ReqMem", ""), int(nodes) if nodes.isdigit() else r[_IX["alloc_nodes"]],
                            r[_IX["alloc_cpus"]], state),
    }


def _wanted_steps(r: tuple, sel_jobs: list | None) -> tuple[bool, set[str] | None]:
    """(print the job line?, which step ids; None = all) for a row, after -j's step ids."""
    if not sel_jobs or all(s.step is None for s in sel_jobs):
        return True, None
    key = (r[_IX["job_id_raw"]], r[_IX["array_job_id"]], r[_IX["array_task_id"]], r[_IX["het_job_id"]],
           r[_IX["het_job_offset"]])
    hits = [s for s in sel_jobs if s.matches(*key)]
    if not hits or any(s.step is None for s in hits):
        return True, None
    return False, {s.step for s in hits}


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
    shaped = opts.json and not opts.json_fields          # sacct's own --json shape
    gpu_names = frozenset(n for n in names if n in F.GPU_FIELDS)
    want_gpu = shaped or bool(gpu_names)
    want_eff = shaped or any(n in F.EFF_FIELDS for n in names)
    with_steps = not opts.allocations and not opts.json_fields   # step lines printed (or in JSON)
    with_extra = shaped or want_eff or any(F.BY_NAME[n].verbatim or n in ("CPUTime", "CPUTimeRAW") for n in names)
    more = tuple(c for c, on in (("extra", with_extra or with_steps), ("steps", with_steps or want_eff)) if on)
    x_extra = len(COLUMNS) if "extra" in more else None
    x_steps = len(COLUMNS) + more.index("steps") if "steps" in more else None
    sql, params = build_query(sel, more)
    own = reader is None
    reader = reader or Reader(url)
    count = 0
    try:
        _check_users(reader, sel)
        batches = reader.batches(sql, params, BATCH)
        if opts.json:
            from piqc_slurm.query import sacctjson
        if shaped:
            ids, version = _slurm_facts(settings)
            head = {"meta": sacctjson.meta(version), "errors": []}
            out.write(json.dumps(head)[:-1].encode() + b', "jobs": [')
        elif opts.json:
            out.write(b'{"jobs": [')
        elif not opts.noheader:
            out.write(renderer.header())
        getters = _line_getters(names, now)
        added = any(n in F.ADDED_FIELDS for n in names)
        for rows in batches:
            gpu = _gpu_for(reader, rows, now, settings, None if shaped else gpu_names) if want_gpu else {}
            chunk: list[bytes] = []
            docs: list[dict] = []
            for r in rows:
                g = gpu.get(r[_IX["id"]])
                extra = (_loads(r[x_extra]) or {}) if x_extra is not None else {}
                all_steps = (_loads(r[x_steps]) or []) if x_steps is not None else []
                eff = _eff_values(r, extra, all_steps, now) if want_eff else {}
                job_line, step_ids = _wanted_steps(r, sel.jobs) if with_steps else (True, None)
                steps = [st for st in all_steps if step_ids is None or st["step"] in step_ids] if with_steps else []
                if shaped:
                    docs.append(sacctjson.job_doc(
                        lambda n, r=r, extra=extra: _job_value(n, r, extra, now),
                        [lambda n, r=r, extra=extra, st=st: _step_value(n, r, extra, st, now) for st in steps],
                        ids=ids, user_of=_user_of, piqc={**(g.typed() if g is not None else {}), **eff}))
                elif opts.json:
                    doc: dict[str, Any] = {}
                    typed = {**(g.typed() if g is not None else {}), **eff}
                    for n in names:
                        doc[n] = typed[n] if n in F.ADDED_FIELDS else _json_sacct(n, r, now, times)
                    sep = b"\n  " if count == 0 else b",\n  "
                    chunk.append(sep + json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
                else:
                    if opts.allocations and extra:
                        extra = {**extra, **_NO_STEP_CPU}
                    if job_line:
                        text = {**(g.text(gpu_names) if g is not None else {}),
                                **{k: "" if v is None else f"{v:.1f}" for k, v in eff.items()}} if added else {}
                        chunk.append(renderer.line([get(r, extra, text) for get in getters]))
                    for st in steps:
                        chunk.append(renderer.line([_step_value(n, r, extra, st, now) for n in names]))
                count += 1
            for i, doc in enumerate(sacctjson.in_sacct_order(docs) if docs else ()):
                sep = b",\n  " if count - len(docs) + i else b"\n  "
                chunk.append(sep + json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
            out.write(b"".join(chunk))
        if opts.json:
            out.write(b"\n]}\n" if count else b"]}\n")
        if count == 0 and sel.accounts and warn is not None:
            for acct in sel.accounts:
                if not _any(reader, "account", acct):
                    warn(f"piqc-slurm sacct: no job in the store has account {acct!r}")
    finally:
        if own:
            reader.close()
    return count


def _slurm_facts(settings: Settings) -> tuple[Mapping[str, int], str | None]:
    """TRES ids and the Slurm release for --json: the settings', else asked of sacctmgr / sacct -V
    on this host (once per command); without them the static ids only, and no release."""
    import os

    from piqc_slurm.errors import SacctError
    from piqc_slurm.query import sacctjson
    from piqc_slurm.slurm.run import sacct_version, sacctmgr_tres

    ids, version = settings.tres_ids, settings.slurm_version
    if ids is None:
        try:
            ids = {**sacctjson.STATIC_TRES, **sacctjson.parse_tres_ids(sacctmgr_tres(os.environ))}
        except SacctError:
            ids = dict(sacctjson.STATIC_TRES)
    if version is None:
        try:
            version = sacct_version(os.environ)
        except SacctError:
            version = None
    return ids, version


def _user_of(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


_ANY = {"account": 'SELECT 1 FROM jobs WHERE lower("account") = :v LIMIT 1',
        "user": 'SELECT 1 FROM jobs WHERE "user" = :v LIMIT 1'}


def _any(reader: Reader, what: str, value: object) -> bool:
    """Whether any job has that account (lower case) or user."""
    return any(rows for rows in reader.batches(_ANY[what], {"v": value}, 1))


def _check_users(reader: Reader, sel: Selection) -> None:
    """sacct refuses a -u name the host does not know ("Invalid user id: NAME"); the store may hold
    users this host does not know, so a name is refused only if neither knows it."""
    from piqc_slurm.query.access import known_locally

    for name in sel.users or ():
        if not known_locally(name) and not _any(reader, "user", name):
            raise UsageError(f"Invalid user id: {name}")


def _gpu_for(reader: Reader, rows: list[tuple], now: int, settings: Settings,
             names: Collection[str] | None = None) -> dict:
    """GpuValues per jobs.id; `names`: the added fields printed (None: all), so only their stats
    columns are read and the findings only when one of theirs is printed."""
    from piqc_slurm.query.gpu import (
        FINDINGS_FIELDS,
        StoredFindings,
        gpu_values,
        job_gpu,
        load_gpu_stats,
        load_price_book,
        stats_columns,
    )

    refs = [r[_IX["id"]] for r in rows]
    cols = None if names is None else stats_columns(names)
    stats = load_gpu_stats(reader, refs) if cols is None else load_gpu_stats(reader, refs, cols) if cols else {}
    book = settings.prices
    if book is None:
        book = settings.prices = load_price_book(reader, settings.config)
    jobs = [job_gpu(r[_IX["id"]], cluster=r[_IX["cluster"]], alloc_gpus=r[_IX["alloc_gpus"]] or 0,
                    gpu_type=r[_IX["gpu_type"]], alloc_tres=r[_IX["alloc_tres"]] or "",
                    elapsed_s=_elapsed(r, now), partition=r[_IX["partition"]] or "", cpus=r[_IX["alloc_cpus"]] or 0,
                    stats=stats.get(r[_IX["id"]]), book=book) for r in rows]
    if settings.findings is None:
        settings.findings = StoredFindings()
    found = settings.findings.for_jobs(reader, jobs) if names is None or FINDINGS_FIELDS.intersection(names) else {}
    return {j.ref: gpu_values(j, found.get(j.ref)) for j in jobs}
