"""The sacct fields piqc-slurm asks for, and which fields hold free text.

INGEST_FIELDS is the exact `--format` list of `piqc-slurm ingest` (and of the
recorded `*.ingest.txt` fixtures, tests/fixtures/sacct/capture.py). Free-text
fields come last so that a delimiter inside one of them can only push the
fields after it, never the structured ones before (see records.py for the
recovery rule)."""

from __future__ import annotations

_TYPED_FIELDS: tuple[str, ...] = (
    "JobID", "JobIDRaw", "Cluster", "User", "UID", "Account", "Partition", "QOS", "State", "ExitCode",
    "DerivedExitCode", "Submit", "Eligible", "Start", "End", "Elapsed", "ElapsedRaw", "Timelimit",
    "AllocCPUS", "TotalCPU", "AllocNodes", "AllocTRES", "ReqTRES", "NodeList", "Reservation",
)
# Every other field of sacct 22.05.8 that holds no free text, in sacct's order: kept verbatim
# (JobRecord.extra / StepRecord.extra) so that `piqc-slurm sacct -o ...` prints what sacct printed.
VERBATIM_FIELDS: tuple[str, ...] = (
    "AssocID", "AveCPU", "AveCPUFreq", "AveDiskRead", "AveDiskWrite", "AvePages", "AveRSS", "AveVMSize",
    "BlockID", "ConsumedEnergy", "ConsumedEnergyRaw", "CPUTime", "CPUTimeRAW", "DBIndex", "Flags", "GID",
    "Group", "Layout", "MaxDiskRead", "MaxDiskReadNode", "MaxDiskReadTask", "MaxDiskWrite", "MaxDiskWriteNode",
    "MaxDiskWriteTask", "MaxPages", "MaxPagesNode", "MaxPagesTask", "MaxRSS", "MaxRSSNode", "MaxRSSTask",
    "MaxVMSize", "MaxVMSizeNode", "MaxVMSizeTask", "MinCPU", "MinCPUNode", "MinCPUTask", "NCPUS", "NNodes",
    "NTasks", "Priority", "QOSRAW", "Reason", "ReqCPUFreq", "ReqCPUFreqGov", "ReqCPUFreqMax", "ReqCPUFreqMin",
    "ReqCPUS", "ReqMem", "ReqNodes", "ReservationId", "Reserved", "ResvCPU", "ResvCPURAW", "Suspended",
    "SystemCPU", "TimelimitRaw", "TRESUsageInAve", "TRESUsageInMax", "TRESUsageInMaxNode", "TRESUsageInMaxTask",
    "TRESUsageInMin", "TRESUsageInMinNode", "TRESUsageInMinTask", "TRESUsageInTot", "TRESUsageOutAve",
    "TRESUsageOutMax", "TRESUsageOutMaxNode", "TRESUsageOutMaxTask", "TRESUsageOutMin", "TRESUsageOutMinNode",
    "TRESUsageOutMinTask", "TRESUsageOutTot", "UserCPU", "WCKey", "WCKeyID",
)
# Free text last (see the module docstring); JobName takes any extra delimiters among adjacent ones.
_FREE_TAIL: tuple[str, ...] = ("WorkDir", "JobName", "Comment", "AdminComment", "SystemComment", "SubmitLine",
                               "Constraints", "Container", "McsLabel")
INGEST_FIELDS: tuple[str, ...] = _TYPED_FIELDS + VERBATIM_FIELDS + _FREE_TAIL

# ASCII unit separator: sacct prints it verbatim and nobody types it into a job name.
DELIMITER = "\x1f"

# Fields whose value is text a person chose (job name, paths, comments): any
# character may appear in them, the delimiter and newlines included. Lower case,
# as records.py matches header names case-insensitively.
FREE_TEXT_FIELDS: frozenset[str] = frozenset({
    "jobname", "comment", "admincomment", "systemcomment", "workdir", "submitline",
    "constraints",  # `--constraint` uses | for OR
    "container", "extra", "mcslabel", "stdout", "stderr", "stdin",
})

# Without these a line cannot become a store row (identity is cluster, JobIDRaw, Submit;
# JobIDRaw can be derived from JobID except for array tasks and het components).
REQUIRED_FIELDS: tuple[str, ...] = ("JobID", "Submit")
