"""`piqc-slurm sacct --json`: sacct 22.05's own JSON shape (openapi/dbv0.0.38), built from the store.

Real `sacct --json` dumps slurmdbd's job records through the dbv0.0.38 parser
(src/plugins/openapi/dbv0.0.38/parse.c: `parse_job`, `parse_job_step`); the
store keeps what sacct prints as text (every field, the job line and each step
line), and this module turns those texts back into that shape, key for key,
with the same types and the same quirks, so a script written for sacct reads
ours. Recorded real output: tests/fixtures/steps/22.05.8/json_*.json.

What text cannot give back exactly (docs: query/README.md, "--json"):
- CPU times: sacct prints milliseconds, JSON has microseconds: ours are the
  milliseconds x 1000;
- TRES usage: sacct prints `cpu` in whole seconds and memory with units
  (`3340K`, `2.60M`): ours are those back in the JSON's units (ms, bytes),
  exact only where the text was;
- `reservation/name` is a uint32 read from a string pointer in 22.05 (0 when
  there is none, garbage otherwise): ours is 0, or the name;
- `association/partition` is null (sacct's comes from the association table);
- `array/limits/max/running/tasks` is 0 and `array/task` null (sacct prints
  neither as a field); `pid` of a step is null, as 22.05 keeps none;
- TRES ids of `gres/...` are the site's (`sacctmgr show tres`): asked once
  per command where sacctmgr works, else null.

Our GPU figures ride under one added key per job, `piqc` (query/gpu.py's
typed values), and nowhere else.
"""

from __future__ import annotations

import calendar
import re
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import hostlist

PLUGIN = {"type": "openapi/dbv0.0.38", "name": "Slurm OpenAPI DB v0.0.38"}

# src/common/slurmdb_defs.h: the static TRES ids (TRES_CPU ... TRES_PAGES)
STATIC_TRES = {"cpu": 1, "mem": 2, "energy": 3, "node": 4, "billing": 5, "fs/disk": 6, "vmem": 7,
               "pages": 8}
# parse.c parser_job_flags: SLURMDB_JOB_CLEAR_SCHED is 0, so every job has it
_JOB_FLAGS = {"SchedSubmit": "STARTED_ON_SUBMIT", "SchedMain": "STARTED_ON_SCHEDULE",
              "SchedBackfill": "STARTED_ON_BACKFILL"}
_GOVERNORS = {"conservative": "Conservative", "performance": "Performance", "powersave": "PowerSave",
              "ondemand": "OnDemand", "userspace": "UserSpace"}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_NUM = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)[cn]?")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

Get = Callable[[str], object]


def parse_tres_ids(text: str) -> dict[str, int]:
    """`sacctmgr -nP show tres format=Type,Name,ID` -> {"cpu": 1, "gres/gpu": 1001, ...}."""
    ids: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[2].isdigit():
            ids[f"{parts[0]}/{parts[1]}" if parts[1] else parts[0]] = int(parts[2])
    return ids


# --- text -> values -----------------------------------------------------------------------
def _text(v: object) -> str:
    return "" if v is None else str(v)


def _int(v: object) -> int | None:
    s = _text(v).strip()
    return int(s) if s.isdigit() else None


def _epoch(v: object) -> int:
    """An epoch column (int), or sacct's ISO text (UTC, as the fixtures are); Unknown/None -> 0."""
    if isinstance(v, int):
        return v if 0 < v < 0xFFFFFFFE else 0
    s = _text(v)
    if _ISO.fullmatch(s):
        return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))
    return int(s) if s.isdigit() else 0


def _cpu_time(v: object) -> dict[str, int]:
    """sacct's `[D-][HH:]MM:SS[.mmm]` -> {"seconds", "microseconds"} (ms x 1000)."""
    s = _text(v).strip()
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d) if d.isdigit() else 0
    frac = 0
    if "." in s:
        s, f = s.split(".", 1)
        frac = int(f[:3].ljust(3, "0")) if f[:3].isdigit() else 0
    secs = 0
    for part in s.split(":") if s else ():
        secs = secs * 60 + (int(part) if part.isdigit() else 0)
    return {"seconds": days * 86400 + secs, "microseconds": frac * 1000}


def _size(text: str, unit: int = 1) -> int:
    """`3340K`, `2.60M`, `400M` -> a count in units of `unit` bytes (mem in TRES: MB)."""
    m = _NUM.fullmatch(text.strip())
    if not m:
        return 0
    return round(float(m.group(1)) * _UNITS[m.group(2)] / unit)


def _exit_code(text: object) -> dict:
    """sacct's `EXIT:SIGNAL` back to the wait status, dumped as parse.c _dump_job_exit_code does
    (its WIFEXITED branch says SUCCESS with return_code 0 whatever the exit status)."""
    s = _text(text)
    if ":" not in s:
        return {"status": "PENDING", "return_code": None}
    code, sig = (int(x) if x.isdigit() else 0 for x in s.split(":", 1))
    status = sig if sig else (code & 0xFF) << 8
    if status & 0x7F == 0:
        return {"status": "SUCCESS", "return_code": 0}
    if ((status & 0x7F) + 1) >> 1 > 0:
        n = status & 0x7F
        return {"status": "SIGNALED", "return_code": None, "signal": {"signal_id": n, "name": _strsignal(n)}}
    return {"status": "ERROR", "return_code": (status >> 8) & 0xFF}


def _strsignal(n: int) -> str:
    try:
        name = signal.strsignal(n)
    except ValueError:
        name = None
    return name or f"Unknown signal {n}"


def _state_word(text: object) -> str:
    return _text(text).split(" ", 1)[0]


def _kill_user(state: object, user_of: Callable[[int], str | None]) -> str | None:
    parts = _text(state).split()
    if len(parts) == 3 and parts[1] == "by" and parts[2].isdigit():
        return user_of(int(parts[2]))
    return None


def _tres_pairs(text: object) -> list[tuple[str, str]]:
    pairs = []
    for item in _text(text).split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            pairs.append((k, v))
    return pairs


def _tres_type_name(key: str) -> tuple[str, str | None]:
    kind, _, name = key.partition("/")
    return kind, name or None


def _by_id(keys: list[str], ids: Mapping[str, int]) -> list[str]:
    """The order slurmdbd's TRES strings have: by id; ids unknown here (no sacctmgr) last, by name."""
    return sorted(keys, key=lambda k: (ids.get(k) is None, ids.get(k) or 0, k if ids.get(k) is None else ""))


def tres_list(text: object, ids: Mapping[str, int], *, usage: bool = False) -> list[dict]:
    """A TRES string as parse.c TRES_LIST dumps it: [{type, name, id, count}] by id. Allocation
    strings hold mem in MB; usage strings (usage=True) cpu in seconds of text, mem in bytes."""
    pairs = dict(_tres_pairs(text))
    out = []
    for key in _by_id(list(pairs), ids):
        kind, name = _tres_type_name(key)
        out.append({"type": kind, "name": name, "id": ids.get(key), "count": _tres_count(key, pairs[key], usage)})
    return out


def _tres_count(key: str, value: str, usage: bool) -> int:
    if usage and key == "cpu":
        return _cpu_time(value)["seconds"] * 1000
    if key in ("mem", "vmem") or (usage and value[-1:] in "KMGTP"):
        return _size(value, 1 if usage else 1 << 20)
    return _size(value)


def tres_nct(count: object, node: object, task: object, ids: Mapping[str, int]) -> list[dict]:
    """Per-TRES max/min with the node and task that had it (parse.c _dump_tres_nct): only TRES
    with a count, a node or a task, in id order."""
    counts, nodes, tasks = dict(_tres_pairs(count)), dict(_tres_pairs(node)), dict(_tres_pairs(task))
    out = []
    for key in _by_id(list(dict.fromkeys([*counts, *nodes, *tasks])), ids):
        kind, name = _tres_type_name(key)
        c = _tres_count(key, counts[key], True) if key in counts else 0
        t = _int(tasks.get(key))
        n = nodes.get(key) or None
        if c or n or t:
            out.append({"type": kind, "name": name, "id": ids.get(key), "count": c, "task": t or 0, "node": n})
    return out


# --- the documents ------------------------------------------------------------------------
def job_doc(get: Get, steps: list[Get], *, ids: Mapping[str, int], user_of: Callable[[int], str | None],
            piqc: dict | None = None) -> dict:
    """One element of `jobs`: `get(field)` gives the job line's sacct field (text, or an epoch
    int for times), `steps` the same for each step line, in sacct's order."""
    job_id = _int(get("JobIDRaw")) or 0
    shown = _text(get("JobID"))
    array_job, task_id = 0, None
    if "_" in shown:
        a, _, t = shown.partition("_")
        array_job, task_id = (_int(a) or 0), _int(t)
    het_job, het_off = 0, None
    if "+" in shown:
        h, _, o = shown.partition("+")
        het_job, het_off = (_int(h) or 0), _int(o)
    limit = _int(get("TimelimitRaw"))
    wckey = _text(get("WCKey"))
    doc: dict[str, Any] = {
        "account": _text(get("Account")) or None,
        "comment": {"administrator": _text(get("AdminComment")) or None,
                    "job": _text(get("Comment")) or None,
                    "system": _text(get("SystemComment")) or None},
        "allocation_nodes": _int(get("AllocNodes")) or 0,
        "array": {"job_id": array_job, "limits": {"max": {"running": {"tasks": 0}}}, "task": None,
                  "task_id": task_id},
        "association": {"account": _text(get("Account")) or None, "cluster": _text(get("Cluster")) or None,
                        "partition": None, "user": _text(get("User")) or None},
        "cluster": _text(get("Cluster")) or None,
        "constraints": _text(get("Constraints")),
        "container": _text(get("Container")) or None,
        "derived_exit_code": _exit_code(get("DerivedExitCode")),
        "time": {
            "elapsed": _int(get("ElapsedRaw")) or 0,
            "eligible": _epoch(get("Eligible")),
            "end": _epoch(get("End")),
            "start": _epoch(get("Start")),
            "submission": _epoch(get("Submit")),
            "suspended": _cpu_time(get("Suspended"))["seconds"],
            # slurmdbd's job record keeps no CPU times of its own (sacct sums its steps')
            "system": {"seconds": 0, "microseconds": 0},
            "limit": limit,
            "total": {"seconds": 0, "microseconds": 0},
            "user": {"seconds": 0, "microseconds": 0},
        },
        "exit_code": _exit_code(get("ExitCode")),
        "flags": ["CLEAR_SCHEDULING"] + [_JOB_FLAGS[f] for f in _text(get("Flags")).split(",") if f in _JOB_FLAGS],
        "group": _text(get("Group")) or None,
        "het": {"job_id": het_job, "job_offset": het_off},
        "job_id": job_id,
        "name": _text(get("JobName")),
        "mcs": {"label": _text(get("McsLabel"))},
        "nodes": _text(get("NodeList")) or None,
        "partition": _text(get("Partition")) or None,
        "priority": _int(get("Priority")),
        "qos": _text(get("QOS")) or None,
        "required": {"CPUs": _int(get("ReqCPUS")) or 0, "memory": _size(_text(get("ReqMem")), 1 << 20)},
        "kill_request_user": _kill_user(get("State"), user_of),
        "reservation": {"id": _int(get("ReservationId")) or 0, "name": _text(get("Reservation")) or 0},
        "state": {"current": _state_word(get("State")), "reason": _text(get("Reason")) or "None"},
        "steps": [step_doc(s, job_id, ids=ids, user_of=user_of) for s in steps],
        "tres": {"allocated": _job_alloc(get("AllocTRES"), get("State"), ids),
                 "requested": tres_list(get("ReqTRES"), ids)},
        "user": _text(get("User")) or None,
        "wckey": {"wckey": wckey.lstrip("*"), "flags": ["ASSIGNED_DEFAULT"] if wckey.startswith("*") else []},
        "working_directory": _text(get("WorkDir")) or None,
    }
    if piqc is not None:
        doc["piqc"] = piqc
    return doc


def _step_id(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def step_doc(get: Get, job_id: int, *, ids: Mapping[str, int], user_of: Callable[[int], str | None]) -> dict:
    step = _text(get("JobIDRaw")).rsplit(".", 1)[-1]
    nodes = _text(get("NodeList"))
    # `Unknown` is NO_VAL: null frequencies, and every governor bit set (parse.c _dump_flags)
    gov_text = _text(get("ReqCPUFreqGov"))
    governors = (list(_GOVERNORS.values()) if gov_text == "Unknown"
                 else [g for k, g in _GOVERNORS.items() if k in gov_text.lower()])

    def freq(name: str) -> int | None:
        return _int(get(name))

    return {
        "nodes": {"list": hostlist.expand_hostlist(nodes) if nodes and nodes != "None assigned" else [],
                  "count": _int(get("NNodes")) or 0, "range": nodes},
        "tres": {
            "requested": {
                "max": tres_nct(get("TRESUsageInMax"), get("TRESUsageInMaxNode"), get("TRESUsageInMaxTask"), ids),
                "min": tres_nct(get("TRESUsageInMin"), get("TRESUsageInMinNode"), get("TRESUsageInMinTask"), ids),
                "average": tres_list(get("TRESUsageInAve"), ids, usage=True),
                "total": tres_list(get("TRESUsageInTot"), ids, usage=True),
            },
            "consumed": {
                "max": tres_nct(get("TRESUsageOutMax"), get("TRESUsageOutMaxNode"), get("TRESUsageOutMaxTask"),
                                ids),
                "min": tres_nct(get("TRESUsageOutMin"), get("TRESUsageOutMinNode"), get("TRESUsageOutMinTask"),
                                ids),
                "average": tres_list(get("TRESUsageOutAve"), ids, usage=True),
                "total": tres_list(get("TRESUsageOutTot"), ids, usage=True),
            },
            "allocated": _step_alloc(get("AllocTRES"), step, ids),
        },
        "time": {
            "elapsed": _int(get("ElapsedRaw")) or 0,
            "end": _epoch(get("End")),
            "start": _epoch(get("Start")),
            "suspended": _cpu_time(get("Suspended"))["seconds"],
            "system": _cpu_time(get("SystemCPU")),
            "total": _cpu_time(get("TotalCPU")),
            "user": _cpu_time(get("UserCPU")),
        },
        "exit_code": _exit_code(get("ExitCode")),
        "tasks": {"count": _int(get("NTasks")) or 0},
        "pid": None,
        "CPU": {"requested_frequency": {"min": freq("ReqCPUFreqMin"), "max": freq("ReqCPUFreqMax")},
                "governor": governors},
        "kill_request_user": _kill_user(get("State"), user_of),
        "state": _state_word(get("State")),
        # 22.05.8 dumps 0 here whatever AveCPUFreq says (recorded: json_*.json)
        "statistics": {"CPU": {"actual_frequency": 0},
                       "energy": {"consumed": _int(get("ConsumedEnergyRaw")) or 0}},
        "step": {"job_id": job_id, "het": {"component": None}, "id": _step_id(step), "name": _text(get("JobName"))},
        "task": {"distribution": _text(get("Layout")) or "Unknown"},
    }


def _with_no_energy(out: list[dict]) -> list[dict]:
    """Add the `energy` TRES with no count (NO_VAL64 -> null) that sacct's text leaves out."""
    if out and not any(t["type"] == "energy" for t in out):   # no allocation (never ran): none
        out.append({"type": "energy", "name": None, "id": STATIC_TRES["energy"], "count": None})
        out.sort(key=lambda t: (t["id"] is None, t["id"] or 0))
    return out


def _step_alloc(text: object, step: str, ids: Mapping[str, int]) -> list[dict]:
    """A step's AllocTRES. The extern step copies the job's string as the job started, energy
    still NO_VAL64 (slurmctld job_mgr.c, step_mgr.c): recorded in every json_*.json."""
    out = tres_list(text, ids)
    return _with_no_energy(out) if step == "extern" else out


def _job_alloc(text: object, state: object, ids: Mapping[str, int]) -> list[dict]:
    """A job's AllocTRES. slurmctld rewrites it, energy summed, when the job's last step ends
    after the job (step_mgr.c _internal_step_complete); a cancelled job reaches slurmdbd first and
    keeps energy NO_VAL64 (seen live on 22.05.8: test_query_sacct). Other kill paths (TIMEOUT,
    NODE_FAIL) are not recorded yet and are taken to be rewritten."""
    out = tres_list(text, ids)
    return _with_no_energy(out) if _state_word(state) == "CANCELLED" else out


def in_sacct_order(docs: list[dict]) -> list[dict]:
    """Job documents in the order real sacct --json lists them: the tasks of an array (adjacent
    in ours, sorted by task as sacct's text is) by job id, as slurmdbd returns the records."""
    out: list[dict] = []
    i = 0
    while i < len(docs):
        arr = docs[i]["array"]["job_id"]
        j = i + 1
        while arr and j < len(docs) and docs[j]["array"]["job_id"] == arr:
            j += 1
        out.extend(sorted(docs[i:j], key=lambda d: d["job_id"]))
        i = j
    return out


def meta(version: str | None) -> dict:
    """The `meta` block: the plugin, and the Slurm release when this host can say (`sacct -V`)."""
    parts = [int(p) if p.isdigit() else None for p in (version or "").split(".")] + [None] * 3
    return {"plugin": dict(PLUGIN),
            "Slurm": {"version": {"major": parts[0], "micro": parts[2], "minor": parts[1]}, "release": version}}
