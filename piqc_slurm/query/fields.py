"""The `-o/--format` fields of `piqc-slurm sacct`: names, default widths,
print kinds, one-line meanings, and sacct's own parsing of the field list.

Parsing follows Slurm 22.05.8's sacct (src/sacct/options.c) exactly:
  * the list is split on commas; leading blanks of an item are dropped;
  * `NAME%N` sets the width: N is read like C's atoi (`%-30` is 30 columns
    left-justified, `%abc` is 0); the width belongs to the FIELD, not to the
    item: `JobID%5,JobID%20` prints both columns 20 wide (sacct keeps it in
    its global field table);
  * NAME matches the first field, in sacct's table order, whose name starts
    with it, case-insensitively (`st` is Start, not State; `jobn` JobName);
    any prefix of `ALL` (`a`, `al`, `all`) means every field;
  * every field of sacct 22.05.8 is kept (most verbatim, see README.md).

The kinds mirror src/common/print_fields.c: `str` (truncated with `+` in a
table), `uint` (never truncated, blank when unset), `date` (cut to the width
without a mark, even with -P, as 22.05 does), `secs` ([D-]HH:MM:SS, never
truncated)."""

from __future__ import annotations

from dataclasses import dataclass

from piqc_slurm.errors import UsageError

# sacct 22.05.8's field table (src/sacct/sacct.c), in its order: prefix
# matching walks it first, so abbreviations resolve as they do in sacct.
SACCT_FIELD_ORDER: tuple[str, ...] = (
    "Account", "AdminComment", "AllocCPUS", "AllocNodes", "AllocTRES", "AssocID", "AveCPU", "AveCPUFreq",
    "AveDiskRead", "AveDiskWrite", "AvePages", "AveRSS", "AveVMSize", "BlockID", "Cluster", "Comment",
    "Constraints", "ConsumedEnergy", "ConsumedEnergyRaw", "Container", "CPUTime", "CPUTimeRAW", "DBIndex",
    "DerivedExitCode", "Elapsed", "ElapsedRaw", "Eligible", "End", "ExitCode", "Flags", "GID", "Group",
    "JobID", "JobIDRaw", "JobName", "Layout", "MaxDiskRead", "MaxDiskReadNode", "MaxDiskReadTask",
    "MaxDiskWrite", "MaxDiskWriteNode", "MaxDiskWriteTask", "MaxPages", "MaxPagesNode", "MaxPagesTask",
    "MaxRSS", "MaxRSSNode", "MaxRSSTask", "MaxVMSize", "MaxVMSizeNode", "MaxVMSizeTask", "McsLabel",
    "MinCPU", "MinCPUNode", "MinCPUTask", "NCPUS", "NNodes", "NodeList", "NTasks", "Partition", "Priority",
    "QOS", "QOSRAW", "Reason", "ReqCPUFreq", "ReqCPUFreqGov", "ReqCPUFreqMax", "ReqCPUFreqMin", "ReqCPUS",
    "ReqMem", "ReqNodes", "ReqTRES", "Reservation", "ReservationId", "Reserved", "ResvCPU", "ResvCPURAW",
    "Start", "State", "Submit", "SubmitLine", "Suspended", "SystemComment", "SystemCPU", "Timelimit",
    "TimelimitRaw", "TotalCPU", "TRESUsageInAve", "TRESUsageInMax", "TRESUsageInMaxNode",
    "TRESUsageInMaxTask", "TRESUsageInMin", "TRESUsageInMinNode", "TRESUsageInMinTask", "TRESUsageInTot",
    "TRESUsageOutAve", "TRESUsageOutMax", "TRESUsageOutMaxNode", "TRESUsageOutMaxTask", "TRESUsageOutMin",
    "TRESUsageOutMinNode", "TRESUsageOutMinTask", "TRESUsageOutTot", "UID", "User", "UserCPU", "WCKey",
    "WCKeyID", "WorkDir",
)

STR, UINT, DATE, SECS = "str", "uint", "date", "secs"


@dataclass(frozen=True)
class Field:
    name: str
    width: int          # sacct's default; negative = left-justified
    kind: str           # STR, UINT, DATE or SECS (print_fields.c routine)
    doc: str            # one line for -e/--helpformat
    sacct: bool = True  # one of sacct's own fields (byte-identical output)
    verbatim: bool = False  # printed from the text sacct printed at ingest (jobs.extra / jobs.steps)


# The fields the store can answer, sacct's first (its widths and kinds), then ours.
FIELDS: tuple[Field, ...] = (
    Field("Account", 10, STR, "Account the job ran under."),
    Field("AllocCPUS", 10, UINT, "Count of allocated CPUs (0 for a job that never started)."),
    Field("AllocNodes", 10, STR, "Number of nodes allocated to the job (0 if it never started)."),
    Field("AllocTRES", 10, STR, "Trackable resources allocated to the job, as sacct printed them."),
    Field("Cluster", 10, STR, "Cluster name."),
    Field("Comment", 14, STR, "The job's comment string (AccountingStoreFlags=job_comment)."),
    Field("DerivedExitCode", 15, STR, "Highest exit code of the job's steps, RC:SIGNAL."),
    Field("Elapsed", 10, SECS, "Wall time the job ran, [D-]HH:MM:SS (running jobs: until now)."),
    Field("ElapsedRaw", 10, UINT, "Elapsed in seconds."),
    Field("Eligible", 19, DATE, "When the job could first start (Unknown: held, never eligible)."),
    Field("End", 19, DATE, "When the job ended (Unknown: still pending or running)."),
    Field("ExitCode", 8, STR, "Exit code of the batch script or salloc, RC:SIGNAL."),
    Field("JobID", -12, STR, "Job id as sacct prints it: 1234, 1234_5 (array task), 1234+1 (het component)."),
    Field("JobIDRaw", -12, STR, "The raw job id Slurm allocated (array tasks have their own)."),
    Field("JobName", 10, STR, "Name of the job."),
    Field("NCPUS", 10, UINT, "Same as AllocCPUS."),
    Field("NodeList", 15, STR, "Nodes of the allocation, compressed (None assigned if it never started)."),
    Field("Partition", 10, STR, "Partition the job ran in."),
    Field("QOS", 10, STR, "Quality of service of the job."),
    Field("Start", 19, DATE, "When the job started (Unknown: not yet; None: ended without starting)."),
    Field("State", 10, STR, "Job state, e.g. COMPLETED, FAILED, CANCELLED by UID, TIMEOUT."),
    Field("Submit", 19, DATE, "When the job was submitted (a requeue resets it)."),
    Field("UID", 6, UINT, "User id of the job's owner."),
    Field("User", 9, STR, "User name of the job's owner."),
    Field("WorkDir", 20, STR, "Working directory of the job."),
    # --- added by piqc-slurm, from the sampler summaries and the price list ---
    Field("AllocGPUs", 9, STR, "GPUs allocated to the job (from AllocTRES).", sacct=False),
    Field("GPUType", 8, STR, "GPU type (from AllocTRES, else from the sampler).", sacct=False),
    Field("GPUsUsed", 8, STR, "GPUs that did work (sampler); empty without sampler data.", sacct=False),
    Field("GPUUtilAvg", 10, STR, "Mean GPU utilization over the ALLOCATED GPUs, %, one decimal.", sacct=False),
    Field("GPUMemPeak", 10, STR, "Peak GPU memory used on any one GPU, GiB, two decimals.", sacct=False),
    Field("GPUEnergy", 9, STR, "GPU energy over the job, kWh, three decimals.", sacct=False),
    Field("CostUSD", 10, STR, "AllocGPUs x Elapsed hours x price per GPU-hour, USD.", sacct=False),
    Field("WasteUSD", 10, STR, "The part of CostUSD the findings count as waste (before `analyze`: the "
          "share spent on GPUs that did no work), USD.", sacct=False),
    Field("Findings", 20, STR, "Finding codes (IDLE_GPUS, ...), comma-separated; empty if none.", sacct=False),
    Field("AdviceGPUs", 10, STR, "Recommended GPU count; empty when there is no advice.", sacct=False),
    Field("AdviceTier", 10, STR, "Recommended GPU type; empty when there is no advice.", sacct=False),
    Field("EstElapsed", 10, STR, "Estimated elapsed time on the advice (an estimate; docs/findings.md).",
          sacct=False),
    Field("TimeEff", 7, STR, "Elapsed as % of the time limit, one decimal (as reportseff).", sacct=False),
    Field("CPUEff", 7, STR, "TotalCPU / (AllocCPUS x Elapsed), %, one decimal (as reportseff: whole "
          "CPU seconds); empty while running.", sacct=False),
    Field("MemEff", 7, STR, "Largest step MaxRSS x NTasks as % of ReqMem, one decimal (as reportseff); "
          "empty while running.", sacct=False),
)
# --- sacct's other fields: printed as sacct printed them at ingest (jobs.extra, jobs.steps) ---
_V = Field  # noqa: N816
_VERBATIM: tuple[Field, ...] = tuple(_V(n, w, k, d, verbatim=True) for n, w, k, d in (
    ("AdminComment", 15, STR, "The administrator's comment on the job."),
    ("AssocID", 7, UINT, "Id of the association (cluster, account, user, partition) the job ran under."),
    ("AveCPU", 10, STR, "Mean CPU time of the step's tasks (steps only)."),
    ("AveCPUFreq", 10, STR, "Mean CPU frequency of the step's tasks, kHz (steps only)."),
    ("AveDiskRead", 14, STR, "Mean bytes read by the step's tasks (steps only)."),
    ("AveDiskWrite", 14, STR, "Mean bytes written by the step's tasks (steps only)."),
    ("AvePages", 10, STR, "Mean page faults of the step's tasks (steps only)."),
    ("AveRSS", 10, STR, "Mean resident set size of the step's tasks (steps only)."),
    ("AveVMSize", 10, STR, "Mean virtual memory size of the step's tasks (steps only)."),
    ("BlockID", 16, STR, "Block id (BlueGene systems only)."),
    ("Constraints", 19, STR, "The job's --constraint features."),
    ("ConsumedEnergy", 14, STR, "Energy the job or step used, joules (where an energy plugin is set)."),
    ("ConsumedEnergyRaw", 17, UINT, "ConsumedEnergy as a plain number of joules."),
    ("Container", 19, STR, "OCI container bundle path, if any."),
    ("CPUTime", 10, SECS, "Elapsed x allocated CPUs, [D-]HH:MM:SS (running: until now)."),
    ("CPUTimeRAW", 10, UINT, "CPUTime in seconds."),
    ("DBIndex", -10, UINT, "slurmdbd's row index of the job."),
    ("Flags", 19, STR, "Job flags (SchedMain, SchedBackfill, StartRecieved ...)."),
    ("GID", 6, UINT, "Group id of the job."),
    ("Group", 9, STR, "Group name of the job."),
    ("Layout", 9, STR, "Task layout of the step (Block, Cyclic ...)."),
    ("MaxDiskRead", 12, STR, "Most bytes read by any task of the step."),
    ("MaxDiskReadNode", 15, STR, "Node of MaxDiskRead."),
    ("MaxDiskReadTask", 15, UINT, "Task of MaxDiskRead."),
    ("MaxDiskWrite", 12, STR, "Most bytes written by any task of the step."),
    ("MaxDiskWriteNode", 16, STR, "Node of MaxDiskWrite."),
    ("MaxDiskWriteTask", 16, UINT, "Task of MaxDiskWrite."),
    ("MaxPages", 8, STR, "Most page faults of any task of the step."),
    ("MaxPagesNode", 12, STR, "Node of MaxPages."),
    ("MaxPagesTask", 14, UINT, "Task of MaxPages."),
    ("MaxRSS", 10, STR, "Largest resident set size of any task of the step (steps only)."),
    ("MaxRSSNode", 10, STR, "Node of MaxRSS."),
    ("MaxRSSTask", 10, UINT, "Task of MaxRSS."),
    ("MaxVMSize", 10, STR, "Largest virtual memory size of any task of the step."),
    ("MaxVMSizeNode", 14, STR, "Node of MaxVMSize."),
    ("MaxVMSizeTask", 14, UINT, "Task of MaxVMSize."),
    ("McsLabel", 12, STR, "MCS label of the job."),
    ("MinCPU", 10, STR, "Least CPU time of any task of the step."),
    ("MinCPUNode", 10, STR, "Node of MinCPU."),
    ("MinCPUTask", 10, UINT, "Task of MinCPU."),
    ("NNodes", 8, UINT, "Number of nodes of the job or step (requested, while pending)."),
    ("NTasks", 8, UINT, "Number of tasks of the step."),
    ("Priority", 10, UINT, "Slurm priority of the job."),
    ("QOSRAW", 6, UINT, "Id of the job's QOS."),
    ("Reason", 22, STR, "Why the job waited (last reason recorded)."),
    ("ReqCPUFreq", 10, STR, "Requested CPU frequency of the step (as ReqCPUFreqMax)."),
    ("ReqCPUFreqGov", 13, STR, "Requested CPU frequency governor of the step."),
    ("ReqCPUFreqMax", 13, STR, "Requested maximum CPU frequency of the step."),
    ("ReqCPUFreqMin", 13, STR, "Requested minimum CPU frequency of the step."),
    ("ReqCPUS", 8, UINT, "Requested number of CPUs."),
    ("ReqMem", 10, STR, "Requested memory in all (the mem of ReqTRES), e.g. 400M."),
    ("ReqNodes", 8, STR, "Requested (minimum) number of nodes."),
    ("ReqTRES", 10, STR, "Trackable resources requested."),
    ("Reservation", 20, STR, "Reservation the job ran in."),
    ("ReservationId", 8, UINT, "Id of that reservation."),
    ("Reserved", 10, SECS, "Time the job waited between Eligible and Start."),
    ("ResvCPU", 10, SECS, "Reserved x requested CPUs."),
    ("ResvCPURAW", 10, UINT, "ResvCPU in seconds."),
    ("SubmitLine", 20, STR, "The sbatch/srun/salloc command line that made the job or step."),
    ("Suspended", 10, SECS, "Time the job spent suspended."),
    ("SystemComment", 15, STR, "Slurm's own comment on the job."),
    ("SystemCPU", 10, STR, "System CPU time used by the job or step."),
    ("Timelimit", 10, STR, "The job's time limit ([D-]HH:MM:SS, UNLIMITED, Partition_Limit)."),
    ("TimelimitRaw", 10, STR, "Timelimit in minutes."),
    ("TotalCPU", 10, STR, "CPU time used (user + system) by the job or step, [D-][HH:]MM:SS.mmm."),
    ("TRESUsageInAve", 14, STR, "Mean input TRES usage of the step's tasks (cpu, mem, disk, energy ...)."),
    ("TRESUsageInMax", 14, STR, "Largest input TRES usage of any task of the step."),
    ("TRESUsageInMaxNode", 18, STR, "Node of each TRESUsageInMax."),
    ("TRESUsageInMaxTask", 18, STR, "Task of each TRESUsageInMax."),
    ("TRESUsageInMin", 14, STR, "Least input TRES usage of any task of the step."),
    ("TRESUsageInMinNode", 18, STR, "Node of each TRESUsageInMin."),
    ("TRESUsageInMinTask", 18, STR, "Task of each TRESUsageInMin."),
    ("TRESUsageInTot", 14, STR, "Total input TRES usage of the step's tasks."),
    ("TRESUsageOutAve", 15, STR, "Mean output TRES usage of the step's tasks."),
    ("TRESUsageOutMax", 15, STR, "Largest output TRES usage of any task of the step."),
    ("TRESUsageOutMaxNode", 19, STR, "Node of each TRESUsageOutMax."),
    ("TRESUsageOutMaxTask", 19, STR, "Task of each TRESUsageOutMax."),
    ("TRESUsageOutMin", 15, STR, "Least output TRES usage of any task of the step."),
    ("TRESUsageOutMinNode", 19, STR, "Node of each TRESUsageOutMin."),
    ("TRESUsageOutMinTask", 19, STR, "Task of each TRESUsageOutMin."),
    ("TRESUsageOutTot", 15, STR, "Total output TRES usage of the step's tasks."),
    ("UserCPU", 10, STR, "User CPU time used by the job or step."),
    ("WCKey", 10, STR, "Workload characterization key of the job."),
    ("WCKeyID", 10, UINT, "Id of that key."),
))

_ORDER = {n: i for i, n in enumerate(SACCT_FIELD_ORDER)}
# sacct's fields in sacct's order (its `-o ALL` order), then ours
FIELDS = tuple(sorted((f for f in FIELDS + _VERBATIM if f.sacct), key=lambda f: _ORDER[f.name])) + tuple(
    f for f in FIELDS if not f.sacct)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
SHARED_FIELDS: tuple[str, ...] = ("JobID", "JobIDRaw", "JobName", "User", "Account", "Partition", "State",
                                  "ExitCode", "Submit", "Start", "End", "Elapsed", "NodeList")
ADDED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.sacct)
# reportseff's columns: from the stored sacct texts alone (usage/efficiency.py), no sampler data
EFF_FIELDS: tuple[str, ...] = ("TimeEff", "CPUEff", "MemEff")
GPU_FIELDS: tuple[str, ...] = tuple(n for n in ADDED_FIELDS if n not in EFF_FIELDS)
# sacct's DEFAULT_FIELDS (src/sacct/sacct.h), BRIEF_FIELDS for -b.
DEFAULT_FORMAT = "jobid,jobname,partition,account,alloccpus,state,exitcode"
BRIEF_FORMAT = "jobid,state,exitcode"
# --json without -o: the DESIGN query fields, in this order.
JSON_DEFAULT: tuple[str, ...] = SHARED_FIELDS + GPU_FIELDS

# Prefix matching walks sacct's order, then the added fields.
_MATCH_ORDER: tuple[str, ...] = SACCT_FIELD_ORDER + ADDED_FIELDS


@dataclass(frozen=True)
class Column:
    field: Field
    width: int   # the width in effect (sacct: the last %N given for this field wins)


_LONG_MAX = 2**63 - 1
# sacct formats a cell into a stack buffer of the width (print_fields.c): a width of millions crashes
# it, and would have piqc-slurm build gigabyte lines. A wider %N is refused.
MAX_WIDTH = 65536


def c_atoi(s: str) -> int:
    """C atoi(): optional blanks and sign, then digits; stops at the first other char; 0 if none."""
    i, n = 0, len(s)
    while i < n and s[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < n and s[i] in "+-":
        sign = -1 if s[i] == "-" else 1
        i += 1
    j = i
    while j < n and "0" <= s[j] <= "9":
        j += 1
    if j == i:
        return 0
    digits = s[i:j].lstrip("0") or "0"
    # strtol saturates at LONG_MAX (and int() refuses 4,300+ digits)
    return sign * (_LONG_MAX if len(digits) > 19 else min(int(digits), _LONG_MAX))


def resolve(name: str) -> list[str]:
    """A field name or prefix -> canonical field names (several for a prefix of ALL)."""
    low = name.lower()
    if "all".startswith(low):
        return [f.name for f in FIELDS]
    for cand in _MATCH_ORDER:
        if cand.lower().startswith(low):
            if cand not in BY_NAME:
                raise UsageError(f"field {cand!r} (asked as {name!r}) is not kept in the store; "
                                 f"see `piqc-slurm sacct -e` for the fields it can show")
            return [cand]
    shown = f'"{name}"' if name.isprintable() else repr(name)  # one line, whatever was typed
    raise UsageError(f"Invalid field requested: {shown} (see `piqc-slurm sacct -e`)")


def parse_format(specs: list[str] | tuple[str, ...]) -> list[Column]:
    """-o values (each a comma list; several -o add up) -> columns with widths."""
    items: list[tuple[str, int | None]] = []
    for spec in specs:
        for raw in spec.split(","):
            item = raw.lstrip(" \t\n\v\f\r")
            if not item:
                continue  # sacct 22.05 would loop for ever on an empty item; skip it
            width: int | None = None
            if "%" in item:
                item, _, rest = item.partition("%")
                width = c_atoi(rest)
                if abs(width) > MAX_WIDTH:
                    raise UsageError(f"field width out of range in {raw.strip()[:60]!r} (at most {MAX_WIDTH})")
            items.append((item, width))
    names: list[str] = []
    widths: dict[str, int] = {}
    for item, width in items:
        for name in resolve(item):
            names.append(name)
            if width is not None:
                widths[name] = width
    return [Column(BY_NAME[n], widths.get(n, BY_NAME[n].width)) for n in names]


def helpformat() -> str:
    """-e/--helpformat: every field with its default width and meaning."""
    lines = ["Fields sacct prints too (byte-identical with -P/-p; widths and alignment as sacct):"]
    for f in FIELDS:
        if f.sacct:
            lines.append(f"  {f.name:<16} {f.doc}")
    lines.append("Added by piqc-slurm (from the GPU sampler summaries and the price list; "
                 "TimeEff, CPUEff, MemEff from sacct's own fields, as reportseff computes them):")
    for f in FIELDS:
        if not f.sacct:
            lines.append(f"  {f.name:<16} {f.doc}")
    lines.append("Width: NAME%N right-justified, NAME%-N left-justified; any prefix of a name works "
                 "(st = Start), ALL = every field. Without -X each job's step lines follow it; "
                 "GPU fields are empty on step lines.")
    return "\n".join(lines) + "\n"
