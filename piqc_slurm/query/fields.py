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
  * a name sacct knows but the store does not keep is refused with a clear
    message (sacct would print a value we cannot reproduce).

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
)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
SHARED_FIELDS: tuple[str, ...] = ("JobID", "JobIDRaw", "JobName", "User", "Account", "Partition", "State",
                                  "ExitCode", "Submit", "Start", "End", "Elapsed", "NodeList")
ADDED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.sacct)
# sacct's DEFAULT_FIELDS (src/sacct/sacct.h), BRIEF_FIELDS for -b.
DEFAULT_FORMAT = "jobid,jobname,partition,account,alloccpus,state,exitcode"
BRIEF_FORMAT = "jobid,state,exitcode"
# --json without -o: the DESIGN query fields, in this order.
JSON_DEFAULT: tuple[str, ...] = SHARED_FIELDS + ADDED_FIELDS

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
    lines.append("Added by piqc-slurm (from the GPU sampler summaries and the price list):")
    for f in FIELDS:
        if not f.sacct:
            lines.append(f"  {f.name:<16} {f.doc}")
    lines.append("Width: NAME%N right-justified, NAME%-N left-justified; any prefix of a name works "
                 "(st = Start), ALL = every field. Step lines are never shown (allocations only, as -X).")
    return "\n".join(lines) + "\n"
