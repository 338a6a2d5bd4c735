"""A job's CPU, memory and time-limit efficiency: the one definition every surface prints
(`piqc-slurm seff` now; sacct's TimeEff/CPUEff/MemEff are to call the same functions).

The formulas are Slurm 22.05.8's contribs/seff/seff (Perl, over slurmdb's job record), read
here from the sacct text the store keeps (jobs.extra, jobs.steps):

  cores          AllocCPUS (1 where 0 or unknown); nodes AllocNodes (likewise)
  cores per node int(cores / nodes)
  CPU utilized   the sum over the job's steps (.batch, .extern, .0 ...) of their CPU time,
                 rounded as seff does: whole seconds + round-half-up of the summed
                 microseconds. sacct's job-line TotalCPU is that very sum, printed with
                 milliseconds under one hour (MM:SS.mmm): rounding it half up gives seff's
                 figure exactly (the .5 s boundary is on the millisecond grid). From one hour
                 on, sacct prints whole seconds (the fraction cut off): the steps' own
                 TotalCPU (milliseconds while each is under an hour) are summed instead;
                 each step's cut sub-millisecond can move the rounding by one second there.
  core-walltime  Elapsed x cores (Elapsed until now for a running job, as slurmdbd's)
  CPU efficiency CPU utilized / core-walltime x 100 (0 when core-walltime is 0)
  memory used    over the steps in sacct's order, the step whose TRESUsageInMax mem is the
                 first strict maximum; its mem (KiB) x its NTasks. "estimated maximum"
                 unless that NTasks is 1 (the peak of one task times the tasks)
  memory request seff: ReqMem per CPU x cores, or per node x nodes. sacct 22.05 prints
                 ReqMem as that total already (the job's TRES mem) and keeps no per-CPU
                 flag; the allocation's TRES mem (AllocTRES) is memory_allocated summed over
                 the nodes, the same product, and comes first; ReqMem where the job has no
                 allocation. Whether it was asked per CPU or per node only changes seff's
                 "(X/core)" / "(X/node)" note: read from SubmitLine (--mem-per-cpu vs --mem)
                 where it says, else per node (what each node holds on average either way)
  memory eff.    memory used / memory request x 100 (0 when the request is 0)
  time limit     Elapsed / Timelimit x 100; none for UNLIMITED / Partition_Limit

Texts are formatted as seff prints them: `seff_time` (its time2str: [D-]HH:MM:SS),
`seff_kbytes` (its kbytes2str: binary units, two decimals), percentages with two decimals.
Pure: plain values in, numbers out; no store, no clock (a running job's elapsed is passed in).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from piqc_slurm.errors import ParseError
from piqc_slurm.slurm.parse import mem_mib, parse_elapsed

_HOUR = 3600
_TRES_MEM_RE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,6})?)([KMGTPE]?)", re.ASCII)
_UNIT_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


@dataclass(frozen=True)
class StepUse:
    """What seff reads of one step: sacct's TotalCPU, TRESUsageInMax and NTasks, as printed."""

    step: str
    total_cpu: str = ""
    tres_usage_in_max: str = ""
    ntasks: str = ""


@dataclass(frozen=True)
class Efficiency:
    """One job's figures, as seff computes them (see the module docstring)."""

    cores: int
    nodes: int
    elapsed_s: int
    cpu_used_s: int
    core_walltime_s: int
    cpu_eff_pct: float
    mem_used_kib: float | None      # None: no step reported its memory use (yet)
    mem_tasks: int                  # NTasks of the step that holds the peak
    mem_request_kib: float | None   # None: neither AllocTRES nor ReqMem has a memory figure
    mem_per: str                    # "node" or "cpu": how the request reads per unit
    mem_per_known: bool             # whether SubmitLine said so (else "node", the default reading)
    mem_eff_pct: float | None
    timelimit_s: int | None         # None: UNLIMITED, Partition_Limit or unknown
    time_share_pct: float | None

    @property
    def cores_per_node(self) -> int:
        return int(self.cores / self.nodes)

    @property
    def mem_estimated(self) -> bool:
        """seff's "(estimated maximum)": the peak of one task times the step's tasks."""
        return self.mem_tasks != 1

    @property
    def mem_request_each_kib(self) -> float | None:
        """The request per node (or per core, with mem_per "cpu"), as seff's note prints it."""
        if self.mem_request_kib is None:
            return None
        return self.mem_request_kib / (self.cores if self.mem_per == "cpu" else self.nodes)


# --- reading sacct's text ---------------------------------------------------------------------
def cpu_millis(text: str) -> tuple[int, bool]:
    """sacct's TotalCPU text -> (milliseconds, whether the milliseconds were printed).

    '00:02.825' -> (2825, True); '01:02:03' -> (3723000, False) (sacct cuts the fraction from
    one hour on); '' -> (0, False)."""
    if text in ("", "None", "Unknown", "INVALID"):
        return 0, False
    whole = parse_elapsed(text)
    frac = text.rpartition(".")[2] if "." in text else None
    if frac is None:
        return (whole or 0) * 1000, False
    if not (frac.isascii() and frac.isdigit()):
        raise ParseError(f"not a CPU time: {text!r}", value=text)
    return (whole or 0) * 1000 + int((frac + "000")[:3]), True


def tres_mem_bytes(tres_usage: str) -> float | None:
    """The `mem` of a TRESUsageIn*/Out* string in bytes: sacct prints usage from bytes with
    CONVERT_NUM_UNIT_EXACT ('3340K', '2.50G', '1024'); 'NONE' (INFINITE64) reads 0, as seff.
    None when the string has no mem entry (a step that never reported)."""
    if not tres_usage:
        return None
    value = None
    for item in tres_usage.split(","):   # not parse_tres: usage values hold ':' (cpu=00:01:02)
        key, eq, val = item.partition("=")
        if key == "mem" and eq:
            value = val
    if value is None:
        return None
    if value == "NONE":
        return 0.0
    m = _TRES_MEM_RE.fullmatch(value)
    if not m:
        raise ParseError(f"not a memory size: {value!r}", value=value)
    try:
        return float(Decimal(m.group(1)) * (1024 ** _UNIT_POWER[m.group(2)]))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only plain decimals
        raise ParseError(f"not a memory size: {value!r}", value=value) from e


def _count(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


def mem_basis(submit_line: str) -> str | None:
    """'cpu' when the submit line asks --mem-per-cpu, 'node' for --mem, None when it says
    neither (a #SBATCH line, a default, --mem-per-gpu). The last one given wins, as sbatch
    reads them; only options before --wrap count (the script's own words are not sbatch's)."""
    try:
        words = shlex.split(submit_line)
    except ValueError:
        words = submit_line.split()
    found = None
    for w in words[1:]:
        if w == "--wrap" or w.startswith("--wrap="):
            break
        if w == "--mem-per-cpu" or w.startswith("--mem-per-cpu="):
            found = "cpu"
        elif w == "--mem" or w.startswith("--mem="):
            found = "node"
    return found


# --- the formulas ------------------------------------------------------------------------------
def round_half_up_seconds(millis: int) -> int:
    """seff: tot_cpu_sec + int(tot_cpu_usec / 1e6 + 0.5)."""
    return (millis + 500) // 1000


def cpu_used_seconds(job_total_cpu: str, steps: Sequence[StepUse] = ()) -> int:
    """seff's "CPU Utilized" (seconds) from the job line's TotalCPU and its steps'."""
    millis, exact = cpu_millis(job_total_cpu)
    if not exact and millis >= _HOUR * 1000 and steps:
        summed = sum(cpu_millis(s.total_cpu)[0] for s in steps)
        if summed >= millis:          # the steps' milliseconds refine the cut job-line figure
            millis = summed
    elif not job_total_cpu and steps:
        millis = sum(cpu_millis(s.total_cpu)[0] for s in steps)
    return round_half_up_seconds(millis)


def core_walltime(elapsed_s: int, cores: int) -> int:
    return int(elapsed_s) * int(cores)


def percent(part: float, whole: float) -> float:
    """part / whole x 100; 0 where whole is 0 (seff's rule for both efficiencies)."""
    return part / whole * 100 if whole else 0.0


def cpu_share(total_cpu_s: float | None, elapsed_s: float | None, cpus: int | None) -> float:
    """TotalCPU / (Elapsed x AllocCPUS), unrounded (the analysis's cpu_eff: INPUT_BOUND's
    evidence); NaN where any is missing or the core-walltime is 0."""
    if total_cpu_s is None or not elapsed_s or not cpus:
        return math.nan
    return float(total_cpu_s) / (float(elapsed_s) * int(cpus))


def mem_peak(steps: Iterable[StepUse]) -> tuple[float | None, int]:
    """seff's loop: (KiB of the first step with the strictly highest TRESUsageInMax mem x its
    NTasks, that NTasks); (None, 0) when no step reported memory."""
    best, tasks, seen = 0.0, 0, False
    for s in steps:
        b = tres_mem_bytes(s.tres_usage_in_max)
        if b is None:
            continue
        seen = True
        kib = b / 1024
        if best < kib:
            best, tasks = kib, _count(s.ntasks)
    return (best * tasks if seen else None), tasks


def mem_request_kib(alloc_mem_mib: float | None, req_mem: str = "") -> float | None:
    """The job's memory request in KiB (see the module docstring): AllocTRES mem, else ReqMem."""
    if alloc_mem_mib is not None:
        return float(alloc_mem_mib) * 1024
    if req_mem:
        return float(mem_mib(req_mem.rstrip("nc"))) * 1024   # older sacct: 4000Mn / 2000Mc
    return None


def time_share(elapsed_s: int, timelimit_s: int | None) -> float | None:
    """Elapsed as a share (%) of the time limit; None without a limit."""
    if not timelimit_s:
        return None
    return elapsed_s / timelimit_s * 100


def efficiency(*, elapsed_s: int, alloc_cpus: int | None, alloc_nodes: int | None,
               total_cpu: str, steps: Sequence[StepUse], alloc_mem_mib: float | None = None,
               req_mem: str = "", timelimit_s: int | None = None, submit_line: str = "") -> Efficiency:
    """Every figure of one job (see the module docstring for each)."""
    cores = int(alloc_cpus or 0) or 1
    nodes = int(alloc_nodes or 0) or 1
    used = cpu_used_seconds(total_cpu, steps)
    cwt = core_walltime(elapsed_s, cores)
    mem, tasks = mem_peak(steps)
    req = mem_request_kib(alloc_mem_mib, req_mem)
    basis = mem_basis(submit_line)
    return Efficiency(
        cores=cores, nodes=nodes, elapsed_s=int(elapsed_s), cpu_used_s=used, core_walltime_s=cwt,
        cpu_eff_pct=percent(used, cwt), mem_used_kib=mem, mem_tasks=tasks, mem_request_kib=req,
        mem_per=basis or "node", mem_per_known=basis is not None,
        mem_eff_pct=None if req is None else percent(mem or 0.0, req),
        timelimit_s=timelimit_s, time_share_pct=time_share(elapsed_s, timelimit_s))


# --- the store's job row -----------------------------------------------------------------------
def step_uses(job_extra: Mapping[str, str] | None, steps: Sequence[Mapping] | None,
              only: Iterable[str] | None = None) -> list[StepUse]:
    """The steps of a stored job (jobs.steps docs: a field absent from a step's "v" printed as
    the job line's, in jobs.extra), in sacct's order; `only`: those step ids (seff 1234.1)."""
    extra = job_extra or {}
    keep = None if only is None else set(only)
    out = []
    for doc in steps or ():
        if keep is not None and doc.get("step") not in keep:
            continue
        v = doc.get("v") or {}

        def field(name: str, v: Mapping = v) -> str:
            return v[name] if name in v else extra.get(name, "")
        out.append(StepUse(step=str(doc.get("step")), total_cpu=field("TotalCPU"),
                           tres_usage_in_max=field("TRESUsageInMax"), ntasks=field("NTasks")))
    return out


def running_elapsed(start: int | None, end: int | None, elapsed: int | None, now: int | None) -> int:
    """Elapsed seconds: until now for a job that started and has not ended (slurmdbd's rule)."""
    if start and not end and now is not None:
        return max(0, int(now) - int(start))
    return int(elapsed or 0)


def of_job(job: Mapping, now: int | None = None, only_steps: Iterable[str] | None = None) -> Efficiency:
    """efficiency() of a stored job: `job` is its `jobs` row as a dict (typed columns, `extra`,
    `steps`); now: the clock for a running job's elapsed time."""
    extra = job.get("extra") or {}
    steps = step_uses(extra, job.get("steps"), only_steps)
    total_cpu = extra.get("TotalCPU", "")
    if only_steps is not None:
        total_cpu = ""        # the named steps only: their own TotalCPU sum
    return efficiency(
        elapsed_s=running_elapsed(job.get("start"), job.get("end"), job.get("elapsed"), now),
        alloc_cpus=job.get("alloc_cpus"), alloc_nodes=job.get("alloc_nodes"), total_cpu=total_cpu,
        steps=steps, alloc_mem_mib=job.get("alloc_mem_mib"), req_mem=extra.get("ReqMem", ""),
        timelimit_s=job.get("timelimit"), submit_line=extra.get("SubmitLine", ""))


# --- seff's texts ------------------------------------------------------------------------------
def seff_time(seconds: int | float) -> str:
    """seff's time2str: HH:MM:SS, with D- once a day is reached (hours not capped before)."""
    t = int(seconds)
    days, t = divmod(t, 86400)
    hours, t = divmod(t, 3600)
    minutes, secs = divmod(t, 60)
    return (f"{days}-" if days >= 1 else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def seff_kbytes(kib: float) -> str:
    """seff's kbytes2str: '3.26 MB' for 3340 KiB; binary units, two decimals; 0 -> '0.00 MB'."""
    if kib == 0:
        return "0.00 MB"
    exp = int(math.log(kib) / math.log(1024))
    pre = ["K", "M", "G", "T", "P", "E"]
    unit = pre[exp] if -len(pre) <= exp < len(pre) else ""
    return f"{kib / math.pow(1024, exp):.2f} {unit}B"


def seff_pct(value: float) -> str:
    return f"{value:.2f}%"


# --- reportseff's columns (sacct's TimeEff, CPUEff, MemEff) ------------------------------------
# `piqc-slurm sacct -o TimeEff,CPUEff,MemEff` shows what reportseff 2.10 (PyPI) shows for the same
# job, by reportseff's own rules (its job.py), so a site that reads reportseff's listing reads ours:
#   TimeEff  Elapsed / Timelimit x 100, one decimal (none for UNLIMITED / Partition_Limit, pending)
#   CPUEff   job line's TotalCPU in WHOLE seconds (reportseff drops the milliseconds) / AllocCPUS /
#            Elapsed x 100, one decimal; none for a pending or running job, 0 elapsed, or 0.0 (reportseff: ---)
#   MemEff   max over the steps (not the job line) of MaxRSS x NTasks / ReqMem (x nodes for `n`,
#            x cores for `c`) x 100, one decimal; none for a pending or running job, or no request
# seff's lines (above) differ on purpose, as seff does: its CPU time rounds the milliseconds half
# up, and its memory is the step with the highest per-task peak, times that step's tasks.
_RS_MEM = re.compile(r"([-+]?\d*\.\d+|\d+)([KMGTE]?)([nc]?)", re.ASCII)
_RS_MULT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "E": 1024**5}


def listing_seconds(text: str) -> int | None:
    """A sacct duration as reportseff reads it: D-HH:MM:SS, HH:MM:SS, MM:SS.mmm (ms dropped)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d{2}):(\d{2}):(\d{2})", text or "")
    if m:
        return int(m.group(1) or 0) * 86400 + int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    m = re.fullmatch(r"(\d{2}):(\d{2})\.(\d{3})", text or "")
    if m:
        return int(m.group(1)) * 60 + int(m.group(2))
    return None


def listing_bytes(text: str, nodes: int = 1, cpus: int = 1) -> float:
    """reportseff's parsemem: MaxRSS / ReqMem text -> bytes (n: x nodes, c: x cpus); '' -> 0."""
    m = _RS_MEM.fullmatch(text or "")
    if not m:
        return 0.0
    value = float(m.group(1)) * _RS_MULT[m.group(2)]
    return value * (nodes if m.group(3) == "n" else cpus if m.group(3) == "c" else 1)


def time_eff(elapsed_s: int, timelimit: str, state: str) -> float | None:
    if state == "PENDING":
        return None
    limit = None if timelimit in ("UNLIMITED", "Partition_Limit") else listing_seconds(timelimit)
    return round(elapsed_s / limit * 100, 1) if limit else None


def cpu_eff(elapsed_s: int, total_cpu: str, alloc_cpus: int | None, state: str) -> float | None:
    if state in ("PENDING", "RUNNING") or not elapsed_s:
        return None
    cpus = int(alloc_cpus or 0)
    used = (listing_seconds(total_cpu) or 0) / cpus if cpus else 0.0
    return round(used / elapsed_s * 100, 1) or None


def mem_eff(steps: Iterable[tuple[str, str]], req_mem: str, nodes: int | None, cpus: int | None,
            state: str) -> float | None:
    """steps: (MaxRSS, NTasks) of each step line; state: the job's (its first word)."""
    if state in ("PENDING", "RUNNING"):
        return None
    total = listing_bytes(req_mem, int(nodes or 0), int(cpus or 0))
    if not total:
        return None
    peak = max((listing_bytes(rss) * (int(n) if n.isdigit() else 1) for rss, n in steps), default=0.0)
    return round(peak / total * 100, 1)
