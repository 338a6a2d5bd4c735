"""Scenario files (`piqc-slurm simulate --scenario`, DESIGN.md "Scenario format"):
a strict, pure loader. Text or a decoded document in, frozen dataclasses out; no
files, no clock, no piqc imports (stdlib only), so the simulator, the live
replay and the tests all see one reading of a scenario.

Strict because a scenario is hand-written: a misspelt key that were silently
ignored would leave a default in its place and the simulated findings would be
quietly wrong. Every error is a `ScenarioError` whose message is one line that
starts with the path of the faulty value (`jobs[3].gpu_load[0].util: expected
0..100, got 140`); the caller prefixes the file name.

Choices this module makes where DESIGN.md is silent (part of the scenario
contract, so README should carry them too):

- Times are ISO-8601 strings (anything `datetime.fromisoformat` reads), whole
  seconds; without a zone they are UTC, with one the zone is honoured. They
  become epoch seconds (int).
- A job "never started" when its state is PENDING, or CANCELLED without a
  `start` (cancelled while pending). It has no `node`, no `start` and holds no
  GPUs (`gpu_indices` absent or []). A PENDING job has no `end`; a job
  cancelled while pending may give `end` = the time it was cancelled. Every
  other job needs `node` and `start`, and `end` unless it is RUNNING (a
  RUNNING job without `end` was still running when the data was taken).
- Order: submit <= eligible <= start <= end (`eligible` defaults to `submit`);
  a job cancelled while pending only needs submit <= end.
- Job defaults: name "", account "", partition = the node's `partition` if it
  has one, else "gpu" (also for a job without a node); gpu_indices [];
  exit_code "0:0"; exit_signal, cpu_util, timelimit absent (None); cpus 1;
  sampled true; restarts 0; comment "".
- `timelimit` is in minutes, as `sbatch -t N`; `Job.timelimit` holds seconds.
- `req_gpus` (extension): the GPUs the job asked for, as sacct's ReqTRES
  gres/gpu. For a job that never started it is the only record of its demand
  (for the idle-gap "demand" figures); default 0. A started job holds what it
  asked for: default len(gpu_indices), and if given it must equal that.
- `partition_prices` (extension, top level, optional): USD per GPU-hour by
  partition, for jobs whose GPU type has no price (usage/prices.py: a known
  type's price wins).
- `gpu_indices` and the `gpus` of a load are stored ascending, as Slurm lists
  a job's GPUs; a load's position-relative live form (`live_load`) relies on it.
- No two started jobs hold one GPU of one node at the same time (intervals
  [start, end), a RUNNING job without end holds on): Slurm without sharding
  never does that, and a scenario that did would double-count the GPU.
- Load defaults: util 0 (as fakegpu-work), util_jitter 0, mem_gib 0, mem_util
  absent (None), power_frac / sm_active / tensor_active / dram_active absent
  (None: not measured). `process` defaults to true for a load that is named
  (fakegpu-work's default: a named load is a running program, and a framework
  opens a context on every GPU it sees); GPUs no load names are idle with no
  process. Say `"process": false` for a named GPU without one.
- `util_jitter` is noise a live replay adds at each refresh; the simulated
  mean of a load is its `util` (for phases: their time-weighted mean), and
  `iter_spans` yields no extra spans for it.
- `mem_gib` must be <= the node type's `mem_gib` where the scenario's own
  `catalog` gives one (the built-in catalog is not this module's business).
- `catalog` is passed through raw; it is only checked to be an object of
  objects whose values are numbers or booleans.
- NaN/Infinity (which Python's json reads) and a key given twice in one
  object are errors as well; so are integers above 4294967295 (Slurm's
  uint32 ids and counts), a node of more than 4096 GPUs, and phases so short
  that they would repeat more than a million times over their job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_PARTITION",
    "JOB_STATES",
    "Job",
    "Load",
    "Node",
    "Phase",
    "Scenario",
    "ScenarioError",
    "iter_spans",
    "live_load",
    "load_scenario",
    "parse_scenario",
]

JOB_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                        "PREEMPTED", "PENDING", "RUNNING"})
DEFAULT_PARTITION = "gpu"

TOP_KEYS = ("cluster", "prices", "partition_prices", "catalog", "nodes", "jobs")
NODE_KEYS = ("name", "gpu_type", "gpus", "partition")
JOB_KEYS = ("job_id", "name", "user", "account", "partition", "node", "gpu_indices", "req_gpus", "submit",
            "eligible", "start", "end", "state", "exit_code", "exit_signal", "cpus", "cpu_util", "sampled",
            "timelimit", "restarts", "comment", "gpu_load")
LOAD_KEYS = ("gpus", "util", "util_jitter", "mem_gib", "mem_util", "process", "power_frac", "sm_active",
             "tensor_active", "dram_active")
PHASE_KEYS = ("seconds", "util")
# fakegpu-work's --load vocabulary (it rejects any other key); the optional ones go only when set
LIVE_KEYS = ("gpus", "util", "util_jitter", "mem_gib", "mem_util", "process", "power_frac", "sm_active",
             "tensor_active", "dram_active")
_LIVE_OPTIONAL = ("mem_util", "power_frac", "sm_active", "tensor_active", "dram_active")

_EXIT_CODE = re.compile(r"\d+:\d+")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SHOW_MAX = 60
_INT_MAX = 0xFFFFFFFF
_MAX_PHASE_SPANS = 1_000_000
_NODE_GPUS_MAX = 4096  # device minors 0..4095 (hooks/context.py); simulate notes every GPU of a node


class ScenarioError(ValueError):
    """A scenario that does not load. `str()` is one line, `path: problem`
    (just `problem` for the document as a whole); `path` and `problem` are
    kept apart for callers that point at the faulty value themselves."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


@dataclass(frozen=True, slots=True)
class Phase:
    seconds: float
    util: float


@dataclass(frozen=True, slots=True)
class Load:
    """What some of a job's GPUs did. `gpus` are the node's GPU indices."""

    gpus: tuple[int, ...]
    util: float | tuple[Phase, ...]
    util_jitter: float = 0.0
    mem_gib: float = 0.0
    mem_util: float | None = None
    process: bool = True
    power_frac: float | None = None
    sm_active: float | None = None
    tensor_active: float | None = None
    dram_active: float | None = None


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    gpu_type: str
    gpus: int
    partition: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One accounting record. Times are epoch seconds (UTC); `timelimit` is
    seconds; `node`, `start` are None for a job that never started."""

    job_id: int
    name: str
    user: str
    account: str
    partition: str
    node: str | None
    gpu_indices: tuple[int, ...]
    submit: int
    eligible: int
    start: int | None
    end: int | None
    state: str
    exit_code: str = "0:0"
    exit_signal: int | None = None
    cpus: int = 1
    cpu_util: float | None = None
    sampled: bool = True
    timelimit: int | None = None
    restarts: int = 0
    comment: str = ""
    gpu_load: tuple[Load, ...] = ()
    req_gpus: int = 0

    @property
    def started(self) -> bool:
        return self.start is not None


@dataclass(frozen=True, slots=True)
class Scenario:
    cluster: str
    prices: dict[str, float]
    partition_prices: dict[str, float]
    catalog: dict[str, dict]
    nodes: tuple[Node, ...]
    jobs: tuple[Job, ...]

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)


# ---- entry points ----

def load_scenario(text: str) -> Scenario:
    """Parse scenario JSON text. A syntax error reads `line L column C: ...`."""
    try:
        doc = json.loads(text, object_pairs_hook=_Object)
    except json.JSONDecodeError as exc:
        raise ScenarioError("", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ScenarioError("", "not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of 4,300+ digits (int's own limit)
        raise ScenarioError("", f"not valid JSON: {str(exc).split(':')[0]}") from None
    return parse_scenario(doc)


def parse_scenario(doc: Mapping[str, Any]) -> Scenario:
    """Validate a decoded scenario document (as json.load gives it)."""
    if not isinstance(doc, Mapping):
        raise ScenarioError("", f"expected a JSON object at the top level, got {_show(doc)}")
    top = _object(doc, "", TOP_KEYS, ("cluster", "nodes", "jobs"))
    cluster = _text(top["cluster"], "cluster")
    prices = _price_table(top.get("prices", {}), "prices")
    partition_prices = _price_table(top.get("partition_prices", {}), "partition_prices")
    catalog = _catalog(top.get("catalog", {}), "catalog")

    nodes: dict[str, Node] = {}
    where_node: dict[str, int] = {}
    for i, raw in enumerate(_list(top["nodes"], "nodes")):
        node = _node(raw, f"nodes[{i}]")
        if node.name in nodes:
            raise ScenarioError(f"nodes[{i}].name", f"{node.name!r} repeats nodes[{where_node[node.name]}]")
        nodes[node.name] = node
        where_node[node.name] = i

    jobs: list[Job] = []
    seen: dict[tuple[int, int], int] = {}
    for i, raw in enumerate(_list(top["jobs"], "jobs")):
        path = f"jobs[{i}]"
        job = _job(raw, path, nodes, catalog)
        key = (job.job_id, job.submit)
        if key in seen:
            raise ScenarioError(f"{path}.job_id", f"{job.job_id} repeats jobs[{seen[key]}] (same submit)")
        seen[key] = i
        jobs.append(job)
    _check_no_sharing(jobs)
    return Scenario(cluster=cluster, prices=prices, partition_prices=partition_prices, catalog=catalog,
                    nodes=tuple(nodes.values()), jobs=tuple(jobs))


def iter_spans(load: Load, start: int, end: int) -> Iterator[tuple[float, float]]:
    """(seconds, util) stretches covering [start, end): one span for a constant
    util, else the phases repeated from `start`, the last repetition cut at
    `end`. Jitter adds no spans: the simulated mean is `util`."""
    total = float(end - start)
    if total < 0:
        raise ValueError(f"end {end} before start {start}")
    if total == 0:
        return
    if not isinstance(load.util, tuple):
        yield total, float(load.util)
        return
    done = 0.0
    while True:
        for phase in load.util:
            left = total - done
            if left <= 1e-9 * total:  # float residue of fractional phases, not a stretch
                return
            if phase.seconds >= left:
                yield left, phase.util
                return
            yield phase.seconds, phase.util
            done += phase.seconds


def live_load(job: Job) -> list[dict]:
    """The job's gpu_load as `fakegpu-work --load` takes it: `gpus` relative to
    the job's visible GPUs (position in `gpu_indices`, which Slurm lists
    ascending); an optional value that is absent (None) is left out, so
    fakegpu-work applies its own default."""
    position = {gpu: i for i, gpu in enumerate(job.gpu_indices)}
    out: list[dict] = []
    for load in job.gpu_load:
        util: float | list[dict] = (
            [{"seconds": p.seconds, "util": p.util} for p in load.util] if isinstance(load.util, tuple)
            else load.util)
        entry: dict = {"gpus": [position[g] for g in load.gpus], "util": util, "util_jitter": load.util_jitter,
                       "mem_gib": load.mem_gib, "process": load.process}
        for key in _LIVE_OPTIONAL:
            value = getattr(load, key)
            if value is not None:
                entry[key] = value
        out.append(entry)
    return out


# ---- the parts ----

def _node(raw: Any, path: str) -> Node:
    obj = _object(raw, path, NODE_KEYS, ("name", "gpu_type", "gpus"))
    name = obj["name"]
    if not isinstance(name, str) or not _HOST.fullmatch(name):
        raise ScenarioError(f"{path}.name", f"expected a host name like 'gpu01', got {_show(name)}")
    partition = _text(obj["partition"], f"{path}.partition") if "partition" in obj else None
    gpus = _int(obj["gpus"], f"{path}.gpus", 0)
    if gpus > _NODE_GPUS_MAX:
        raise ScenarioError(f"{path}.gpus", f"expected at most {_NODE_GPUS_MAX}, got {gpus}")
    return Node(name=name, gpu_type=_text(obj["gpu_type"], f"{path}.gpu_type"), gpus=gpus, partition=partition)


def _job(raw: Any, path: str, nodes: Mapping[str, Node], catalog: Mapping[str, dict]) -> Job:
    obj = _object(raw, path, JOB_KEYS, ("job_id", "user", "submit", "state"))
    job_id = _int(obj["job_id"], f"{path}.job_id", 1)
    state = obj["state"]
    if not isinstance(state, str) or state not in JOB_STATES:
        raise ScenarioError(f"{path}.state", f"expected one of {', '.join(sorted(JOB_STATES))}, got {_show(state)}")
    never_started = state == "PENDING" or (state == "CANCELLED" and "start" not in obj)
    if not never_started:
        for key in ("node", "start") if state == "RUNNING" else ("node", "start", "end"):
            if key not in obj:
                raise ScenarioError(path, f"missing key {key!r}")

    submit = _time(obj["submit"], f"{path}.submit")
    eligible = _time(obj["eligible"], f"{path}.eligible") if "eligible" in obj else submit
    if eligible < submit:
        raise ScenarioError(f"{path}.eligible", "before submit")
    start = end = None
    if never_started:
        if state == "PENDING":
            for key in ("start", "end"):
                if key in obj:
                    raise ScenarioError(f"{path}.{key}", f"a PENDING job has no {key}")
        why = "a PENDING job" if state == "PENDING" else "a job cancelled before it started (no start)"
        if "node" in obj:
            raise ScenarioError(f"{path}.node", f"{why} has no node")
        if obj.get("gpu_indices", []) != []:
            raise ScenarioError(f"{path}.gpu_indices", f"{why} holds no GPUs")
        if "end" in obj:
            end = _time(obj["end"], f"{path}.end")
            if end < submit:
                raise ScenarioError(f"{path}.end", "before submit")
    else:
        start = _time(obj["start"], f"{path}.start")
        if start < eligible:
            raise ScenarioError(f"{path}.start", "before eligible")
        if "end" in obj:
            end = _time(obj["end"], f"{path}.end")
            if end < start:
                raise ScenarioError(f"{path}.end", "before start")

    node: Node | None = None
    if not never_started:
        name = obj["node"]
        node = nodes.get(name) if isinstance(name, str) else None
        if node is None:
            raise ScenarioError(f"{path}.node", f"{_show(name)} is not in nodes")
    partition = (_text(obj["partition"], f"{path}.partition") if "partition" in obj
                 else (node.partition if node and node.partition else DEFAULT_PARTITION))

    gpu_indices = _gpu_indices(obj.get("gpu_indices", []), f"{path}.gpu_indices", node)
    if "req_gpus" in obj:
        req_gpus = _int(obj["req_gpus"], f"{path}.req_gpus", 0)
        if not never_started and req_gpus != len(gpu_indices):
            raise ScenarioError(f"{path}.req_gpus", f"{req_gpus}, but gpu_indices holds {len(gpu_indices)}")
    else:
        req_gpus = len(gpu_indices)

    exit_code = obj.get("exit_code", "0:0")
    if not isinstance(exit_code, str) or not _EXIT_CODE.fullmatch(exit_code):
        raise ScenarioError(f"{path}.exit_code", f"expected 'N:M' like '1:0', got {_show(exit_code)}")
    timelimit = _int(obj["timelimit"], f"{path}.timelimit", 1) * 60 if "timelimit" in obj else None

    loads: list[Load] = []
    held: dict[int, int] = {}  # GPU -> the load that names it
    mem_cap = _mem_cap(catalog, node)
    for k, raw_load in enumerate(_list(obj.get("gpu_load", []), f"{path}.gpu_load")):
        loads.append(_load(raw_load, f"{path}.gpu_load[{k}]", k, gpu_indices, held, mem_cap))
        util = loads[-1].util
        if isinstance(util, tuple) and start is not None and end is not None:
            # iter_spans yields a span per phase over the whole job: 1e-300 s phases would never end
            cycle = sum(ph.seconds for ph in util)
            if (end - start) / cycle > _MAX_PHASE_SPANS / len(util):
                raise ScenarioError(f"{path}.gpu_load[{k}].util", f"phases of {cycle:g} s in all repeat too "
                                    f"often over the job's {end - start} s (at most {_MAX_PHASE_SPANS:,} spans)")

    return Job(
        job_id=job_id,
        name=_text(obj.get("name", ""), f"{path}.name", empty=True),
        user=_text(obj["user"], f"{path}.user"),
        account=_text(obj.get("account", ""), f"{path}.account", empty=True),
        partition=partition,
        node=node.name if node else None,
        gpu_indices=gpu_indices,
        submit=submit,
        eligible=eligible,
        start=start,
        end=end,
        state=state,
        exit_code=exit_code,
        exit_signal=_int(obj["exit_signal"], f"{path}.exit_signal", 0, 255) if "exit_signal" in obj else None,
        cpus=_int(obj.get("cpus", 1), f"{path}.cpus", 1),
        cpu_util=_fraction(obj, "cpu_util", path),
        sampled=_bool(obj.get("sampled", True), f"{path}.sampled"),
        timelimit=timelimit,
        restarts=_int(obj.get("restarts", 0), f"{path}.restarts", 0),
        comment=_text(obj.get("comment", ""), f"{path}.comment", empty=True),
        gpu_load=tuple(loads),
        req_gpus=req_gpus,
    )


def _gpu_indices(raw: Any, path: str, node: Node | None) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise ScenarioError(path, f"expected a list of GPU indices, got {_show(raw)}")
    seen: set[int] = set()
    for i, gpu in enumerate(raw):
        _int(gpu, f"{path}[{i}]")
        if gpu in seen:
            raise ScenarioError(path, f"{gpu} named twice")
        if node is not None and not 0 <= gpu < node.gpus:
            have = f"0..{node.gpus - 1}" if node.gpus else "it has none"
            raise ScenarioError(path, f"{gpu} is not a GPU of {node.name} ({have})")
        seen.add(gpu)
    return tuple(sorted(seen))


def _mem_cap(catalog: Mapping[str, dict], node: Node | None) -> tuple[str, float] | None:
    if node is None:
        return None
    spec = catalog.get(node.gpu_type)
    cap = spec.get("mem_gib") if spec else None
    if isinstance(cap, bool) or not isinstance(cap, (int, float)):
        return None
    return node.gpu_type, float(cap)


def _load(raw: Any, path: str, index: int, gpu_indices: tuple[int, ...], held: dict[int, int],
          mem_cap: tuple[str, float] | None) -> Load:
    obj = _object(raw, path, LOAD_KEYS, ("gpus",))
    gpus = obj["gpus"]
    if not isinstance(gpus, list) or not gpus:
        raise ScenarioError(f"{path}.gpus", f"expected a non-empty list of GPU indices, got {_show(gpus)}")
    mine: set[int] = set()
    for i, gpu in enumerate(gpus):
        _int(gpu, f"{path}.gpus[{i}]")
        if gpu not in gpu_indices:
            raise ScenarioError(f"{path}.gpus", f"{gpu} is not in gpu_indices")
        if gpu in mine:
            raise ScenarioError(f"{path}.gpus", f"{gpu} named twice")
        if gpu in held:
            raise ScenarioError(f"{path}.gpus", f"{gpu} is already in gpu_load[{held[gpu]}]")
        mine.add(gpu)
    for gpu in mine:
        held[gpu] = index

    util_raw = obj.get("util", 0)
    util: float | tuple[Phase, ...]
    if isinstance(util_raw, list):
        util = _phases(util_raw, f"{path}.util")
    else:
        util = _number(util_raw, f"{path}.util", 0, 100)
    mem_gib = _number(obj.get("mem_gib", 0), f"{path}.mem_gib", 0)
    if mem_cap is not None and mem_gib > mem_cap[1]:
        raise ScenarioError(f"{path}.mem_gib", f"{_show(obj['mem_gib'])} exceeds the {mem_cap[0]}'s "
                                               f"{mem_cap[1]:g} GiB")
    return Load(
        gpus=tuple(sorted(mine)),
        util=util,
        util_jitter=_number(obj.get("util_jitter", 0), f"{path}.util_jitter", 0, 100),
        mem_gib=mem_gib,
        mem_util=_number(obj["mem_util"], f"{path}.mem_util", 0, 100) if "mem_util" in obj else None,
        process=_bool(obj.get("process", True), f"{path}.process"),
        power_frac=_fraction(obj, "power_frac", path),
        sm_active=_fraction(obj, "sm_active", path),
        tensor_active=_fraction(obj, "tensor_active", path),
        dram_active=_fraction(obj, "dram_active", path),
    )


def _phases(raw: list, path: str) -> tuple[Phase, ...]:
    if not raw:
        raise ScenarioError(path, "expected a number or a non-empty list of phases")
    phases = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        obj = _object(item, where, PHASE_KEYS, PHASE_KEYS)
        phases.append(Phase(seconds=_number(obj["seconds"], f"{where}.seconds", 0, strict_lo=True),
                            util=_number(obj["util"], f"{where}.util", 0, 100)))
    return tuple(phases)


def _check_no_sharing(jobs: list[Job]) -> None:
    """No GPU held by two started jobs at once; the first offender in file order is named."""
    spans: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for i, job in enumerate(jobs):
        if job.start is None or job.node is None:
            continue
        end = math.inf if job.end is None else job.end
        if end <= job.start:
            continue  # an empty interval holds nothing
        for gpu in job.gpu_indices:
            spans.setdefault((job.node, gpu), []).append((job.start, end, i))
    clashes: list[tuple[int, int, int, str]] = []
    for (node, gpu), items in spans.items():
        items.sort()
        holder_end, holder = -math.inf, -1
        for start, end, i in items:
            if start < holder_end:
                later, earlier = max(i, holder), min(i, holder)
                clashes.append((later, earlier, gpu, node))
            if end > holder_end:
                holder_end, holder = end, i
    if clashes:
        later, earlier, gpu, node = min(clashes)
        raise ScenarioError(f"jobs[{later}].gpu_indices", f"GPU {gpu} of {node} is also held by jobs[{earlier}] "
                                                         f"(job {jobs[earlier].job_id}) at that time")


# ---- values ----

class _Object(dict):
    """A decoded JSON object that remembers keys it saw twice (json keeps the
    last silently; a scenario with two `end`s is a mistake to name)."""

    duplicates: tuple[str, ...] = ()

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        if len(self) != len(pairs):
            seen: set[str] = set()
            self.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            try:
                text = repr(value)
            except (ValueError, RecursionError):  # 4,300+ digits; nested too deeply
                text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX - 3] + "..."


def _object(raw: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(path, f"expected an object, got {_show(raw)}")
    dups = getattr(raw, "duplicates", ())
    if dups:
        raise ScenarioError(path, f"key {dups[0]!r} given twice")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ScenarioError(path, f"unknown key{'s' if len(unknown) > 1 else ''} {names}")
    for key in required:
        if key not in raw:
            raise ScenarioError(path, f"missing key {key!r}")
    return raw


def _list(raw: Any, path: str) -> list:
    if not isinstance(raw, list):
        raise ScenarioError(path, f"expected a list, got {_show(raw)}")
    return raw


def _text(raw: Any, path: str, empty: bool = False) -> str:
    if not isinstance(raw, str) or (not empty and not raw):
        raise ScenarioError(path, f"expected a {'' if empty else 'non-empty '}string, got {_show(raw)}")
    return raw


def _bool(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise ScenarioError(path, f"expected true or false, got {_show(raw)}")
    return raw


def _int(raw: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ScenarioError(path, f"expected an integer, got {_show(raw)}")
    if hi is None and raw > _INT_MAX:  # ids, counts and minutes are uint32 in Slurm (and in the store)
        raise ScenarioError(path, f"expected at most {_INT_MAX}, got {_show(raw)}")
    if hi is not None and lo is not None and not lo <= raw <= hi:
        raise ScenarioError(path, f"expected {lo}..{hi}, got {raw}")
    if lo is not None and raw < lo:
        raise ScenarioError(path, f"expected >= {lo}, got {raw}")
    return raw


def _number(raw: Any, path: str, lo: float | None = None, hi: float | None = None,
            strict_lo: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not _finite(raw):
        raise ScenarioError(path, f"expected a number, got {_show(raw)}")
    if lo is not None and hi is not None:
        if not lo <= raw <= hi:
            raise ScenarioError(path, f"expected {lo:g}..{hi:g}, got {_show(raw)}")
    elif lo is not None and (raw <= lo if strict_lo else raw < lo):
        raise ScenarioError(path, f"expected {'>' if strict_lo else '>='} {lo:g}, got {_show(raw)}")
    return float(raw)


def _key(name: str) -> str:
    """A key of the file as a path part: quoted where it would break the one-line message."""
    return name if name.isprintable() else repr(name)


def _finite(x: int | float) -> bool:
    """Finite as a float: math.isfinite(10**400) is an OverflowError, not False."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _fraction(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    return _number(obj[key], f"{path}.{key}", 0, 1) if key in obj else None


def _time(raw: Any, path: str) -> int:
    """ISO-8601 -> epoch seconds; no zone = UTC."""
    if not isinstance(raw, str):
        raise ScenarioError(path, f"expected an ISO-8601 time, got {_show(raw)}")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ScenarioError(path, f"expected an ISO-8601 time like '2026-11-27T02:00:00', got {_show(raw)}") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.microsecond:
        raise ScenarioError(path, f"expected whole seconds, got {_show(raw)}")
    return (when - _EPOCH) // timedelta(seconds=1)


def _price_table(raw: Any, path: str) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(path, f"expected an object of USD per GPU-hour, got {_show(raw)}")
    _object(raw, path, tuple(raw), ())  # duplicates
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise ScenarioError(path, f"expected a GPU type or partition name as key, got {_show(key)}")
        out[key] = _number(value, f"{path}.{_key(key)}", 0)
    return out


def _catalog(raw: Any, path: str) -> dict[str, dict]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(path, f"expected an object of GPU types, got {_show(raw)}")
    _object(raw, path, tuple(raw), ())
    out: dict[str, dict] = {}
    for gpu_type, spec in raw.items():
        if not isinstance(gpu_type, str) or not gpu_type:
            raise ScenarioError(path, f"expected a GPU type as key, got {_show(gpu_type)}")
        where = f"{path}.{_key(gpu_type)}"
        if not isinstance(spec, Mapping):
            raise ScenarioError(where, f"expected an object, got {_show(spec)}")
        _object(spec, where, tuple(spec), ())
        for key, value in spec.items():
            if not isinstance(value, bool) and (not isinstance(value, (int, float)) or not _finite(value)):
                raise ScenarioError(f"{where}.{_key(key)}", f"expected a number or true/false, got {_show(value)}")
        out[gpu_type] = dict(spec)
    return out
