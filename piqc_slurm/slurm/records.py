"""sacct --parsable2 text -> one JobRecord per job allocation, steps folded in.

Pure: text in, records and errors out. Running sacct is someone else's job
(argv.py builds its command line).

Input: sacct's `-P` (or `-p`) output WITH its header line; `#` lines before
the header are skipped (fixture headers); fields in any order, unknown ones
ignored, names matched case-insensitively; the delimiter is \\x1f or `|`,
detected from the header when not given. `-p`'s trailing delimiter is fine.

Delimiters and newlines inside free text. sacct prints names, paths and
comments verbatim: a `|` in a job name adds a field to the line, a newline
splits it in two (both seen on Slurm 22.05.8). The rules:
  * A line with k more fields than the header: the k extra delimiters belong
    to the free-text field(s) (fields.FREE_TEXT_FIELDS: JobName, Comment,
    WorkDir, ...). Fields before the first free-text field are read from the
    left, fields after the last one from the right; with ONE free-text field
    in the header that is exact, wherever the field is (JobName is third in
    the shared `-P` form, last-but-one in the ingest form).
  * With several free-text fields, each way of sharing the extra delimiters
    among them is tried, and a way is kept only if every structured field
    between them still parses. One survivor: taken. Several (the free-text
    fields are adjacent, as WorkDir,JobName,Comment in the ingest form): the
    extras go to JobName if it is one of them, as job names are the free text
    people type per job and sacct 22.05 stores Comment only with
    AccountingStoreFlags=job_comment; otherwise the line is an error.
  * A line with fewer fields than the header whose last piece falls on a
    free-text field is joined with the next line(s) (the text had a newline)
    while that does not exceed the header's count. A line without any
    delimiter right after a complete line whose last field is free text is a
    continuation of that field, unless it would parse as the first field
    (then it is a truncated record) or, where the first field is free text
    too, it and the following lines make up a whole record (then it starts
    one: with free text both first and last the text itself is ambiguous).
  * Otherwise a short or long line is an error. A name holding both a newline
    and the delimiter cannot be recovered.

Folding. A step line (`.batch`, `.extern`, `.interactive`, `.N`) belongs to
the nearest allocation line above it with the same printed JobID (with -D a
requeued job has several allocation lines, each followed by its own steps).
The allocation's own values win; steps only fill what it left empty (State,
ExitCode). The steps are kept: a TIMEOUT or cancelled job's line says `0:0`
where its batch step says `0:15` (see JobRecord.exit_signal).

Errors. A line that does not parse becomes a ParseError (source, line number,
field, value, message) in ParseResult.errors and is skipped; with strict=True
the first one is raised. Nothing else is raised: an unexpected failure on a
line is reported as that line's error, `internal error: ...`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import lru_cache

from piqc_slurm.errors import ParseError
from piqc_slurm.slurm.fields import FREE_TEXT_FIELDS, INGEST_FIELDS
from piqc_slurm.slurm.parse import (
    NODELIST_NONE,
    expand_nodelist,
    gpus_from_tres,
    mem_mib,
    parse_cputime,
    parse_elapsed,
    parse_exit_code,
    parse_int,
    parse_jobid,
    parse_state,
    parse_time,
    parse_tres,
    resolve_tz,
    tres_count,
)

# The store's `jobs` columns (store/models.py Job) a record fills, in order.
JOB_COLUMNS: tuple[str, ...] = (
    "cluster", "job_id_raw", "submit", "job_id", "array_job_id", "array_task_id", "het_job_id",
    "het_job_offset", "name", "user", "uid", "account", "partition", "qos", "state", "state_by",
    "exit_code", "derived_exit_code", "eligible", "start", "end", "elapsed", "timelimit", "alloc_cpus",
    "alloc_nodes", "alloc_mem_mib", "alloc_gpus", "gpu_type", "alloc_tres", "nodelist", "work_dir",
    "comment", "exit_signal", "total_cpu_s", "req_gpus", "extra", "steps",
)
# Fields a job line prints from the typed columns (query/run.py); every other one is kept verbatim.
_JOB_TYPED = frozenset(f.lower() for f in (
    "JobID", "JobIDRaw", "Cluster", "User", "UID", "Account", "Partition", "QOS", "State", "ExitCode",
    "DerivedExitCode", "Submit", "Eligible", "Start", "End", "Elapsed", "ElapsedRaw", "AllocCPUS", "NCPUS",
    "AllocNodes", "AllocTRES", "NodeList", "WorkDir", "JobName", "Comment"))
# A step line keeps everything but its times (local-time text in sacct's output) verbatim.
_STEP_TYPED = frozenset(("submit", "eligible", "start", "end"))
_TIMES = frozenset(("Submit", "Eligible", "Start", "End"))
CANONICAL: dict[str, str] = {f.lower(): f for f in INGEST_FIELDS}
_HEADER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_MAX_SPLITS_TRIED = 2000
_BIGINT = 2**63 - 1  # the store's widest integer column


def _signal(exit_code: str) -> int:
    return int(exit_code.split(":", 1)[1]) if ":" in exit_code else 0


@dataclass(slots=True)
class StepRecord:
    """One step line of a job (.batch, .extern, .interactive, .0 ...)."""

    job_id: str            # as printed: 1234.batch, 1234_5.0
    step: str              # batch, extern, 0 ...
    name: str = ""
    state: str = ""
    state_by: int | None = None
    exit_code: str = ""
    start: int | None = None
    end: int | None = None
    elapsed: int = 0
    alloc_cpus: int = 0
    alloc_tres: str = ""
    nodelist: str = ""
    submit: int | None = None
    eligible: int | None = None
    # every other field of the step line as sacct printed it (canonical names, empty ones left out):
    # `piqc-slurm sacct` prints step lines from it
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def signal(self) -> int:
        return _signal(self.exit_code)

    def to_doc(self, job: JobRecord) -> dict[str, object]:
        """The step as the store keeps it (jobs.steps): its id, its times (epoch seconds or None)
        and, verbatim, every other field whose text differs from the job line's ("" included);
        JobID and JobIDRaw only where they are not the job's own plus "." and the step id."""
        derived = {"JobID": f"{job.job_id}.{self.step}", "JobIDRaw": f"{job.job_id_raw}.{self.step}"}
        v = {k: t for k, t in self.extra.items() if job.raw.get(k, "") != t and derived.get(k) != t}
        v.update((k, "") for k, t in job.raw.items() if t != "" and k not in self.extra and k not in _TIMES)
        return {"step": self.step, "submit": self.submit, "eligible": self.eligible, "start": self.start,
                "end": self.end, "v": v}


@dataclass(slots=True)
class JobRecord:
    """One job allocation: the store's `jobs` columns plus nodes and steps.

    nodelist is sacct's compressed form, '' when none was assigned; nodes is
    it expanded. exit_code/derived_exit_code are 'RC:SIGNAL' or ''."""

    cluster: str
    job_id_raw: int
    submit: int
    job_id: str
    array_job_id: int | None = None
    array_task_id: int | None = None
    het_job_id: int | None = None
    het_job_offset: int | None = None
    name: str = ""
    user: str = ""
    uid: int | None = None
    account: str = ""
    partition: str = ""
    qos: str = ""
    state: str = ""
    state_by: int | None = None
    exit_code: str = ""
    derived_exit_code: str = ""
    eligible: int | None = None
    start: int | None = None
    end: int | None = None
    elapsed: int = 0
    timelimit: int | None = None
    alloc_cpus: int = 0
    alloc_nodes: int = 0
    alloc_mem_mib: int | None = None
    alloc_gpus: int = 0
    gpu_type: str | None = None
    alloc_tres: str = ""
    nodelist: str = ""
    work_dir: str = ""
    comment: str = ""
    total_cpu_s: float | None = None
    req_gpus: int | None = None
    # the fields printed as sacct printed them that the typed columns above do not reproduce
    # (VERBATIM_FIELDS and Timelimit, TotalCPU, ReqTRES, Reservation, AdminComment ...), by canonical name
    extra: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict, repr=False)  # the line's every field, canonical names
    nodes: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    line: int = 0          # where the allocation line starts in the source

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.step == name), None)

    @property
    def batch(self) -> StepRecord | None:
        return self.step("batch")

    @property
    def exit_signal(self) -> int:
        """The signal that ended the job: its own, else its batch step's (TIMEOUT and
        `CANCELLED by N` print 0:0 on the job line and 0:15 on .batch)."""
        sig = _signal(self.exit_code)
        if sig == 0 and self.batch is not None:
            sig = self.batch.signal
        return sig

    def to_row(self) -> dict[str, object]:
        """The store's `jobs` columns (JOB_COLUMNS) as a dict; `steps` in the store's form."""
        row = {k: getattr(self, k) for k in JOB_COLUMNS if k not in ("extra", "steps")}  # not asdict()
        row["extra"] = self.extra or None
        row["steps"] = [s.to_doc(self) for s in self.steps] or None
        return row


@dataclass(slots=True)
class ParseResult:
    records: list[JobRecord]
    errors: list[ParseError]


# --- line assembly --------------------------------------------------------------
def _compositions(k: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way of writing k as an ordered sum of `parts` non-negative integers."""
    for bars in itertools.combinations(range(k + parts - 1), parts - 1):
        prev, out = -1, []
        for b in bars:
            out.append(b - prev - 1)
            prev = b
        out.append(k + parts - 1 - prev - 1)
        yield tuple(out)


def _assign(pieces: list[str], n: int, free: list[int], shares: dict[int, int], delim: str) -> list[str]:
    out, i = [], 0
    for pos in range(n):
        take = 1 + shares.get(pos, 0)
        out.append(delim.join(pieces[i:i + take]))
        i += take
    return out


class _Splitter:
    """Turns one logical line's pieces into exactly one value per header field."""

    def __init__(self, names: list[str], display: list[str], delim: str,
                 validators: dict[str, Callable[[str], object]]):
        self.names, self.display, self.delim, self.validators = names, display, delim, validators
        self.n = len(names)
        self.free = [i for i, nm in enumerate(names) if nm in FREE_TEXT_FIELDS]
        self.jobname = names.index("jobname") if "jobname" in names else None

    def _valid(self, values: list[str], lo: int, hi: int) -> bool:
        for pos in range(lo, hi):
            check = self.validators.get(self.names[pos])
            if check is None or pos in self.free:
                continue
            try:
                check(values[pos])
            except ParseError:
                return False
        return True

    def split(self, pieces: list[str]) -> list[str]:
        n, m = self.n, len(pieces)
        if m == n:
            return pieces
        if m < n:
            raise ParseError(f"expected {n} fields, found {m}")
        k = m - n
        if not self.free:
            raise ParseError(f"{k} delimiter(s) {self.delim!r} too many and no free-text field to hold them")
        if len(self.free) == 1:
            return _assign(pieces, n, self.free, {self.free[0]: k}, self.delim)
        lo, hi = self.free[0], self.free[-1]
        structured_between = any(p not in self.free and self.names[p] in self.validators for p in range(lo, hi))
        survivors: list[list[str]] = []
        if structured_between:
            for i, shares in enumerate(_compositions(k, len(self.free))):
                if i >= _MAX_SPLITS_TRIED:
                    break
                values = _assign(pieces, n, self.free, dict(zip(self.free, shares, strict=True)), self.delim)
                if self._valid(values, lo, hi):
                    survivors.append(values)
                    if len(survivors) > 1 and self.jobname is None:
                        break
            if len(survivors) == 1:
                return survivors[0]
        if self.jobname is not None:
            values = _assign(pieces, n, self.free, {self.jobname: k}, self.delim)
            if not structured_between or self._valid(values, lo, hi):
                return values
        fields = ", ".join(self.display[p] for p in self.free)
        raise ParseError(f"{k} delimiter(s) {self.delim!r} too many; cannot tell which of {fields} holds them")


# --- values ---------------------------------------------------------------------
class _Row:
    """A line's values by lower-case field name, converting with field context."""

    def __init__(self, values: dict[str, str], display: dict[str, str], source: str, line: int):
        self.values, self.display, self.source, self.line = values, display, source, line

    def raw(self, name: str) -> str | None:
        return self.values.get(name)

    def text(self, name: str) -> str:
        return self.values.get(name, "")

    def conv(self, name: str, fn: Callable[[str], object], default: object = None) -> object:
        """fn(value) for a present, non-empty field; default otherwise."""
        v = self.values.get(name)
        if v is None or v == "":
            return default
        try:
            return fn(v)
        except ParseError as e:
            raise self.error(name, v, str(e)) from e

    def error(self, name: str | None, value: object, message: str) -> ParseError:
        return ParseError(message, source=self.source, line=self.line,
                          field=self.display.get(name, name) if name else None, value=value)


@lru_cache(maxsize=8192)
def _tres_facts(s: str) -> tuple[int, str | None, int | None, int]:
    """(GPUs, GPU type, memory MiB, nodes) of an AllocTRES string; cached, as
    most jobs of a site share a handful of shapes."""
    tres = parse_tres(s) if s else {}
    gpus, gpu_type = gpus_from_tres(tres)
    mem = mem_mib(tres["mem"]) if "mem" in tres else None
    if mem is not None and mem > _BIGINT:  # mem=999999999999999P: the jobs upsert could not bind it
        raise ParseError(f"memory size out of range: {tres['mem']!r}", value=tres["mem"])
    return gpus, gpu_type, mem, tres_count(tres, "node")


@lru_cache(maxsize=8192)
def _norm_exit(v: str) -> str:
    rc, sig = parse_exit_code(v)
    return f"{rc}:{sig}"


def _uid(v: str) -> int:
    u = parse_int(v)
    if u > 0xFFFFFFFF:
        raise ParseError(f"uid out of range: {v!r}", value=v)
    return u


def _nodelist(v: str) -> str:
    return "" if v in NODELIST_NONE else v


class _Builder:
    def __init__(self, *, source: str, epoch: bool, tz: tzinfo, cluster: str):
        self.source, self.epoch, self.tz, self.cluster = source, epoch, tz, cluster

    def time(self, v: str) -> int | None:
        return parse_time(v, epoch=self.epoch, tz=self.tz)

    def validators(self) -> dict[str, Callable[[str], object]]:
        def opt(fn: Callable[[str], object]) -> Callable[[str], object]:
            return lambda v: None if v == "" else fn(v)
        t = opt(self.time)
        return {
            "jobid": parse_jobid, "jobidraw": opt(parse_jobid), "state": opt(parse_state),
            "exitcode": opt(parse_exit_code), "derivedexitcode": opt(parse_exit_code),
            "submit": t, "eligible": t, "start": t, "end": t,
            "elapsed": parse_elapsed, "timelimit": parse_elapsed, "elapsedraw": opt(parse_int),
            "totalcpu": parse_cputime,
            "uid": opt(parse_int), "alloccpus": opt(parse_int), "allocnodes": opt(parse_int),
            "alloctres": parse_tres, "reqtres": parse_tres, "nodelist": expand_nodelist,
        }

    def common(self, row: _Row) -> dict[str, object]:
        state = row.conv("state", parse_state, ("", None))
        elapsed = row.conv("elapsedraw", parse_int)
        if elapsed is None:
            elapsed = row.conv("elapsed", parse_elapsed)
        return {
            "state": state[0], "state_by": state[1],
            "exit_code": row.conv("exitcode", _norm_exit, ""),
            "start": row.conv("start", self.time), "end": row.conv("end", self.time),
            "elapsed": elapsed or 0,
            "alloc_cpus": row.conv("alloccpus", parse_int, 0),
            "alloc_tres": row.text("alloctres"),
            "nodelist": _nodelist(row.text("nodelist")),
        }

    def step(self, row: _Row, job_id: str, step: str) -> StepRecord:
        row.conv("alloctres", parse_tres)
        c = self.common(row)
        extra = {CANONICAL[k]: v for k, v in row.values.items() if v != "" and k in CANONICAL and k not in _STEP_TYPED}
        return StepRecord(job_id=job_id, step=step, name=row.text("jobname"), line=row.line,
                          submit=row.conv("submit", self.time), eligible=row.conv("eligible", self.time),
                          extra=extra, **c)

    def job(self, row: _Row, job_id: str) -> JobRecord:
        parts = row.conv("jobid", parse_jobid)
        raw = row.conv("jobidraw", parse_jobid)
        if raw is not None:
            if raw.step is not None or raw.array_task is not None or raw.array_range or raw.het_offset is not None:
                raise row.error("jobidraw", row.raw("jobidraw"), f"not a raw job id: {row.raw('jobidraw')!r}")
            job_id_raw = raw.base
        elif parts.array_task is None and not parts.het_offset:
            job_id_raw = parts.base
        else:
            raise row.error("jobid", job_id, f"job {job_id!r} needs the JobIDRaw field to be identified")
        submit = row.conv("submit", self.time)
        if submit is None:
            raise row.error("submit", row.raw("submit"), f"job {job_id!r} has no Submit time")
        try:
            gpus, gpu_type, mem, tres_nodes = _tres_facts(row.text("alloctres"))
        except ParseError as e:
            raise row.error("alloctres", row.raw("alloctres"), str(e)) from e
        nodes = row.conv("nodelist", expand_nodelist, [])
        c = self.common(row)
        is_array = parts.array_task is not None or parts.array_range is not None
        return JobRecord(
            cluster=row.text("cluster") or self.cluster,
            job_id_raw=job_id_raw, submit=submit, job_id=job_id,
            array_job_id=parts.base if is_array else None, array_task_id=parts.array_task,
            het_job_id=parts.base if parts.het_offset is not None else None, het_job_offset=parts.het_offset,
            name=row.text("jobname"), user=row.text("user"), uid=row.conv("uid", _uid),
            account=row.text("account"), partition=row.text("partition"), qos=row.text("qos"),
            derived_exit_code=row.conv("derivedexitcode", _norm_exit, ""),
            # No Eligible column (a --sacct-file without it): Submit, which is what Slurm
            # records for a job that was never held; sacct's -S/-E windows select by it.
            eligible=row.conv("eligible", self.time) if "eligible" in row.values else submit,
            total_cpu_s=row.conv("totalcpu", parse_cputime),
            req_gpus=row.conv("reqtres", lambda v: _tres_facts(v)[0]) if "reqtres" in row.values else None,
            timelimit=row.conv("timelimit", parse_elapsed),
            alloc_nodes=row.conv("allocnodes", parse_int, tres_nodes),
            alloc_mem_mib=mem, alloc_gpus=gpus, gpu_type=gpu_type,
            work_dir=row.text("workdir"), comment=row.text("comment"),
            extra={CANONICAL[k]: v for k, v in row.values.items()
                   if v != "" and k in CANONICAL and k not in _JOB_TYPED},
            raw={CANONICAL[k]: v for k, v in row.values.items() if k in CANONICAL},
            nodes=nodes, line=row.line, **c)


# --- the parser -----------------------------------------------------------------
def parse_sacct(text: str, *, source: str, epoch_times: bool, tz: tzinfo | str | None = None,
                delimiter: str | None = None, strict: bool = False, cluster: str = "") -> ParseResult:
    """sacct `-P`/`-p` output with its header -> ParseResult(records, errors).

    epoch_times: the times are SLURM_TIME_FORMAT=%s epoch seconds (ingest's
    form) rather than sacct's default ISO local times, which are read in `tz`
    (a tzinfo or IANA name; None: UTC). `cluster` is used where the output has
    no Cluster field. See the module docstring for the recovery rules."""
    errors: list[ParseError] = []

    def fail(err: ParseError) -> None:
        if strict:
            raise err
        errors.append(err)

    try:
        zone = resolve_tz(tz)
    except ParseError as e:
        raise ParseError(e.message, source=source, field="tz", value=tz) from e
    if text.startswith("\ufeff"):
        text = text[1:]
    phys = text.split("\n")
    if phys and phys[-1] == "":
        phys.pop()

    h = 0
    while h < len(phys) and (phys[h].startswith("#") or phys[h].strip() == ""):
        h += 1
    if h == len(phys):
        fail(ParseError("no sacct header line (the output must include it: don't use -n)", source=source))
        return ParseResult([], errors)
    crlf = phys[h].endswith("\r")
    if crlf:
        phys = [p[:-1] if p.endswith("\r") else p for p in phys]
    header = phys[h]
    delim = delimiter or ("\x1f" if "\x1f" in header else "|")
    hpieces = header.split(delim)
    trailing = len(hpieces) > 1 and hpieces[-1] == ""      # sacct -p: every line ends with the delimiter
    display = hpieces[:-1] if trailing else hpieces
    bad = [p for p in display if not p or not p[0].isalpha() or not set(p) <= _HEADER_NAME_CHARS]
    if bad:
        fail(ParseError(f"not a sacct header line (field name {bad[0]!r}): {header[:200]!r}",
                        source=source, line=h + 1, value=header))
        return ParseResult([], errors)
    names = [p.lower() for p in display]
    missing = [f for f in ("JobID", "Submit") if f.lower() not in names]
    if missing:
        fail(ParseError(f"the sacct header lacks {', '.join(missing)}, needed to identify jobs",
                        source=source, line=h + 1, value=header))
        return ParseResult([], errors)

    builder = _Builder(source=source, epoch=epoch_times, tz=zone, cluster=cluster)
    validators = builder.validators()
    splitter = _Splitter(names, display, delim, validators)
    # a delimiter-free line after a complete one continues its last (free-text) field, unless
    # it parses as a first field (nodelist is too lax a test: any word is a host name)
    first_check = validators.get(names[0]) if names[0] not in ("nodelist", *FREE_TEXT_FIELDS) else None
    n_phys = len(hpieces)
    last_free = names[-1] in FREE_TEXT_FIELDS and not trailing and len(names) > 1
    shown = {nm: disp for nm, disp in reversed(list(zip(names, display, strict=True)))}

    def join_short(pieces: list[str], i: int) -> tuple[list[str], int]:
        """Join a short line with the next ones while its last piece is a free-text field."""
        while len(pieces) < n_phys and i < len(phys) and (len(pieces) - 1) in splitter.free:
            nxt = phys[i].split(delim)
            if len(pieces) + len(nxt) - 1 > n_phys:
                break
            pieces = [*pieces[:-1], pieces[-1] + "\n" + nxt[0], *nxt[1:]]
            i += 1
        return pieces, i

    def starts_record(i: int) -> bool:
        """Whether the delimiter-free line i begins a record rather than continuing the last field."""
        if first_check is not None:
            try:
                first_check(phys[i])
                return True              # parses as a first field: a (maybe truncated) record
            except ParseError:
                return False
        # the first field is free text too: a record if joining the next lines completes one
        return len(join_short(phys[i].split(delim), i + 1)[0]) == n_phys

    records: list[JobRecord] = []
    latest: dict[str, JobRecord] = {}
    i = h + 1
    while i < len(phys):
        line_no = i + 1
        line = phys[i]
        i += 1
        if line == "":
            continue
        try:
            pieces = line.split(delim)
            # a newline inside a free-text field: join with the following line(s)
            pieces, i = join_short(pieces, i)
            # a newline inside the last field, when it is free text
            if last_free:
                while len(pieces) >= n_phys and i < len(phys) and phys[i] != "" and delim not in phys[i]:
                    if starts_record(i):
                        break
                    pieces[-1] += "\n" + phys[i]
                    i += 1
            if trailing:
                if len(pieces) < n_phys or pieces[-1] != "":
                    raise ParseError(f"expected {n_phys - 1} fields and a trailing {delim!r}, "
                                     f"found {len(pieces)} pieces")
                pieces.pop()
            values = splitter.split(pieces)
        except ParseError as e:
            fail(ParseError(f"{e}: {line[:200]!r}", source=source, line=line_no, value=line))
            continue
        except Exception as e:  # noqa: BLE001 - the contract: only ParseError leaves this function
            fail(ParseError(f"internal error: {type(e).__name__}: {e}", source=source, line=line_no, value=line))
            continue
        row_values: dict[str, str] = {}
        for nm, v in zip(names, values, strict=True):
            row_values.setdefault(nm, v)
        row = _Row(row_values, shown, source, line_no)
        try:
            job_id = row_values["jobid"]
            parts = row.conv("jobid", parse_jobid)
            if parts is None:
                raise row.error("jobid", job_id, "empty JobID")
            if parts.step is not None:
                owner = job_id.rsplit(".", 1)[0]
                step = builder.step(row, job_id, parts.step)
                rec = latest.get(owner)
                if rec is None:
                    raise row.error("jobid", job_id, f"step {job_id!r} without its job's allocation line")
                rec.steps.append(step)
            else:
                rec = builder.job(row, job_id)
                records.append(rec)
                latest[job_id] = rec
        except ParseError as e:
            fail(e)
        except Exception as e:  # noqa: BLE001 - the contract: only ParseError leaves this function
            fail(row.error(None, line, f"internal error: {type(e).__name__}: {e}"))

    for rec in records:
        b = rec.batch
        if b is not None:
            if rec.state == "" and b.state:
                rec.state, rec.state_by = b.state, b.state_by
            if rec.exit_code == "" and b.exit_code:
                rec.exit_code = b.exit_code
    return ParseResult(records, errors)
