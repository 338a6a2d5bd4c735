"""`-s/--state` values: sacct's long and short state names.

As Slurm 22.05.8's job_state_num(): a name matches the long form
(job_state_string) or the compact one (job_state_string_compact),
case-insensitively; `CA` and `cancelled` are the same state. A name not in
the list is an error (sacct: "unrecognized job state value"). Quotes in the
list become backquotes, as in slurm_addto_char_list; duplicates collapse.

How a state selects jobs in a time window (slurmdbd's _state_time_string)
lives in select.py; STATE_CLASS says which rule each state follows."""

from __future__ import annotations

from piqc_slurm.errors import UsageError

# (long name, compact name), base states first in Slurm's numbering, then the flag states.
STATES: tuple[tuple[str, str], ...] = (
    ("PENDING", "PD"), ("RUNNING", "R"), ("SUSPENDED", "S"), ("COMPLETED", "CD"), ("CANCELLED", "CA"),
    ("FAILED", "F"), ("TIMEOUT", "TO"), ("NODE_FAIL", "NF"), ("PREEMPTED", "PR"), ("BOOT_FAIL", "BF"),
    ("DEADLINE", "DL"), ("OUT_OF_MEMORY", "OOM"),
    ("COMPLETING", "CG"), ("CONFIGURING", "CF"), ("RESIZING", "RS"), ("RESV_DEL_HOLD", "RD"),
    ("REQUEUED", "RQ"), ("REQUEUE_FED", "RF"), ("REQUEUE_HOLD", "RH"), ("REVOKED", "RV"),
    ("SIGNALING", "SI"), ("SPECIAL_EXIT", "SE"), ("STAGE_OUT", "SO"), ("STOPPED", "ST"),
)
_LOOKUP: dict[str, str] = {}
for _long, _short in STATES:
    _LOOKUP.setdefault(_long.lower(), _long)
    _LOOKUP.setdefault(_short.lower(), _long)

# Which time-window rule applies (slurmdbd 22.05 as_mysql_jobacct_process.c).
PENDING, RUNNING, SUSPENDED, ENDED, OTHER = "pending", "running", "suspended", "ended", "other"
_ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
          "OUT_OF_MEMORY", "REQUEUED", "RESIZING", "REVOKED"}


def state_class(state: str) -> str:
    if state == "PENDING":
        return PENDING
    if state == "RUNNING":
        return RUNNING
    if state == "SUSPENDED":
        return SUSPENDED
    if state in _ENDED:
        return ENDED
    return OTHER


def canonical_state(name: str) -> str:
    """'ca' -> 'CANCELLED', 'OOM' -> 'OUT_OF_MEMORY'; UsageError if unknown."""
    try:
        return _LOOKUP[name.lower()]
    except KeyError:
        raise UsageError(f"unrecognized job state value {name!r} (valid: "
                         f"{', '.join(s for pair in STATES for s in pair)})") from None


def parse_states(values: list[str] | tuple[str, ...]) -> list[str]:
    """-s values (comma lists, repeatable) -> canonical names, in order, without duplicates."""
    out: list[str] = []
    for value in values:
        text = value
        if text[:1] in ("'", '"'):            # a leading quote runs to its match
            q = text[0]
            text = text[1:].split(q, 1)[0]
        text = text.replace('"', "`").replace("'", "`")
        for item in text.split(","):
            if item:
                s = canonical_state(item)
                if s not in out:
                    out.append(s)
    return out
