"""Idle GPU gaps: GPU time no job held, and how much of it pending work could have used.

Pure: data in (the inventory, the jobs that held GPUs, the jobs that waited,
node events), data out (per-GPU or per-node totals, the gap stretches, the
down time); no store, no clock, no Slurm. `piqc_slurm/gaps.py` loads and
prints; docs/gaps.md is the user's account of the same rules.

Over a window [since, until), times in epoch seconds, every interval clipped
to the window:

- **GPUs** are the inventory's (node_gpus): each node's GPUs by device minor.
  A node is counted **per GPU** when every job that held GPUs there in the
  window has job_gpus rows (its minors, from its summary) and those minors
  are in the inventory; otherwise **per node**, by counts: such a node's
  GPUs of one type are one unit of that many GPUs.
- **Held**: a job holds its GPUs from Start to End (a job without End, still
  running, to the window's end). With job_gpus rows, the minors listed on
  each node; a job without them holds AllocGPUs on its nodes, split evenly
  over its node list (python-hostlist expands it): AllocGPUs // N on each,
  the remainder one each to the first nodes in node-list order. A job with
  rows on some nodes only: the GPUs not listed are split so over the other
  nodes. A count share of an unknown type on a node of several types counts
  against the node's most numerous type.
- **Idle** = GPU-time held by no job and not down: at each moment, per unit,
  capacity minus held (never below 0).
- **Down**: while a node has an open `sacctmgr show event` (down, drain,
  fail: every node event), its GPUs not held by a job are down, not idle;
  listed per event, excluded from idle. GPUs a job holds during a drain stay
  held.
- **Demand**: GPUs asked for (req_gpus; a started job's AllocGPUs where the
  store has no req_gpus) by jobs waiting, from Eligible (never Submit) to
  Start; a job still pending at the window's end: to the window's end; a job
  cancelled while pending: to its End. A job that started within `grace`
  seconds (default 60, a scheduler cycle) of Eligible waited for the scheduler's cycle, not
  for GPUs: it is no demand. Held jobs (no Eligible) are no demand.
  A waiting job can use a GPU when the types match (a job whose type is
  unknown, as every never-started job's is in the store, can use any type)
  and the partitions match: a job's partition (a pending job's list
  `a,b` is any of them) is one of the node's; a job of unknown partition,
  or a node of unknown partition (no job ever ran there), matches by type
  only. A node's partitions are those of the jobs that ran on it.
  At each moment the waiting jobs, most specific first (typed and
  partitioned, then one of the two, then neither; then by Eligible, then
  job id), take what they asked for from the idle GPUs they can use, in
  node then minor order: demand is never more than the idle GPUs, and one
  idle GPU meets one waiting GPU at most. Greedy: in contrived cases of
  crossing constraints an optimal matching could place a little more.
- **NoDemand** = Idle - Demand.
- **Dollars** (`table`): GPU-hours (usage.cost.gpu_hours) x the rate of the
  unit's GPU type (usage.prices, the cluster's PriceBook, the node's primary
  partition: the one most of its jobs ran in; none known: no partition);
  summed unrounded, rounded half-up to the cent once, when printed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hostlist

from piqc_slurm.errors import ParseError
from piqc_slurm.slurm.parse import NodeEvent, expand_nodelist
from piqc_slurm.usage.cost import gpu_hours
from piqc_slurm.usage.prices import PriceBook

GRACE_S = 60  # a job that starts within this of Eligible waited for the scheduler, not for GPUs


# --- input ----------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One node of the inventory: its GPUs by minor (type canonical, None unknown)."""

    cluster: str
    name: str
    gpus: Mapping[int, str | None]
    partitions: frozenset[str] = frozenset()  # of the jobs that ran on it; empty: unknown
    partition: str | None = None               # the primary one: pricing and --by partition


@dataclass(frozen=True)
class Held:
    """A job that held GPUs: Start to End (None: still running)."""

    cluster: str
    job: int
    start: int
    end: int | None
    nodes: tuple[str, ...]
    gpus: int                                               # AllocGPUs, all nodes
    parts: tuple[tuple[int, str | None], ...] = ()          # by type (usage.cost.parts_of); () = one, untyped
    minors: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # job_gpus: node -> minors


@dataclass(frozen=True)
class Waiting:
    """A job that waited for GPUs: from Eligible to Start (or End, or the window's end)."""

    cluster: str
    job: int
    gpus: int
    eligible: int | None
    start: int | None = None
    end: int | None = None
    partitions: frozenset[str] | None = None  # None: unknown
    gpu_type: str | None = None               # None: any


# --- output ---------------------------------------------------------------------
@dataclass
class Unit:
    """One GPU (minor) of a per-GPU node, or the GPUs of one type of a per-node node."""

    cluster: str
    node: str
    minor: int | None
    gpu_type: str | None
    partition: str | None
    partitions: frozenset[str]
    gpus: int
    idle_s: int = 0     # GPU-seconds
    demand_s: int = 0
    down_s: int = 0
    holds: list[tuple[int, int, int]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Stretch:
    """A maximal stretch of one unit with a constant count of idle (or down) GPUs."""

    cluster: str
    node: str
    minor: int | None
    gpu_type: str | None
    partition: str | None
    kind: str            # idle | down
    start: int
    end: int
    gpus: int
    demand_gpu_s: int    # idle: GPU-seconds waiting jobs could have used; down: 0
    reason: str | None   # down: the event's State and Reason


@dataclass(frozen=True)
class Down:
    """One node event, clipped to the window, with the GPU-seconds it took out of idle."""

    event: NodeEvent
    node: str
    start: int
    end: int
    gpu_s: int


@dataclass
class Gaps:
    since: int
    until: int
    units: list[Unit]
    stretches: list[Stretch]
    downs: list[Down]
    notes: list[str]


def wait_span(w: Waiting, since: int, until: int, grace: int = GRACE_S) -> tuple[int, int] | None:
    """The part of [since, until) a job waited for GPUs, or None."""
    if w.eligible is None or w.gpus <= 0:
        return None
    if w.start is not None:
        if w.start - w.eligible <= grace:
            return None
        stop = w.start
    else:
        stop = w.end if w.end is not None else until
    a, b = max(w.eligible, since), min(stop, until)
    return (a, b) if a < b else None


def split_evenly(gpus: int, n: int, i: int) -> int:
    """The i-th of n nodes' share of gpus: gpus // n, one more for each of the first gpus % n."""
    return gpus // n + (1 if i < gpus % n else 0)


def _nodes_of(nodelist: str) -> tuple[str, ...]:
    try:
        return tuple(expand_nodelist(nodelist))
    except ParseError:
        return ()


def _units(nodes: Iterable[Node], held: Iterable[Held], since: int, until: int, notes: list[str]) -> list[Unit]:
    inv = {(n.cluster, n.name): n for n in nodes}
    # (cluster, node) -> [(a, b, minors or None, [(count, type)])]
    per_node: dict[tuple[str, str], list[tuple[int, int, tuple[int, ...] | None, list]]] = defaultdict(list)
    for h in held:
        a = max(h.start, since)
        b = min(h.end if h.end is not None else until, until)
        if a >= b or h.gpus <= 0:
            continue
        known = {n: tuple(m) for n, m in h.minors.items() if m}
        unknown = [n for n in h.nodes if n not in known]
        rest = max(h.gpus - sum(len(m) for m in known.values()), 0)
        parts = [(c, t) for c, t in h.parts if c > 0] or [(h.gpus, None)]
        if known:
            rest_parts = [(rest, parts[0][1] if len(parts) == 1 else None)]
        else:
            rest_parts = parts
        if not h.nodes and not known:
            notes.append(f"job {h.job} ({h.cluster}) held {h.gpus} GPUs but has no node list: left out")
        for n, m in known.items():
            per_node[(h.cluster, n)].append((a, b, m, []))
        for i, n in enumerate(unknown):
            share = [(split_evenly(c, len(unknown), i), t) for c, t in rest_parts]
            share = [(c, t) for c, t in share if c > 0]
            if share:
                per_node[(h.cluster, n)].append((a, b, None, share))
    for cluster, node in sorted(k for k in per_node if k not in inv):
        notes.append(f"node {node} ({cluster}): jobs held GPUs there but the inventory has no GPUs for it: "
                     "left out")

    units: list[Unit] = []
    for key in sorted(inv):
        n = inv[key]
        holds = per_node.get(key, [])
        minors = sorted(n.gpus)
        if not minors:
            continue
        per_gpu = all(m is not None and set(m) <= set(n.gpus) for _, _, m, _ in holds)
        if per_gpu:
            for minor in minors:
                u = Unit(n.cluster, n.name, minor, n.gpus[minor], n.partition, n.partitions, 1)
                u.holds = [(a, b, 1) for a, b, m, _ in holds if m is not None and minor in m]
                units.append(u)
            continue
        by_type: dict[str | None, Unit] = {}
        for minor in minors:
            t = n.gpus[minor]
            if t not in by_type:
                by_type[t] = Unit(n.cluster, n.name, None, t, n.partition, n.partitions, 0)
            by_type[t].gpus += 1
        biggest = max(by_type.values(), key=lambda u: u.gpus)  # the first of the largest, by minor order
        for a, b, m, share in holds:
            for minor in m or ():
                by_type.get(n.gpus.get(minor), biggest).holds.append((a, b, 1))
            for c, t in share:
                by_type.get(t, biggest).holds.append((a, b, c))
        units.extend(by_type.values())
    return units


def _wait_order(w: Waiting) -> tuple:
    specific = (w.gpu_type is not None) + (w.partitions is not None)
    return (2 - specific, w.eligible if w.eligible is not None else 0, w.job)


def _can_use(w: Waiting, u: Unit) -> bool:
    if w.gpu_type is not None and w.gpu_type != u.gpu_type:
        return False
    if w.partitions is None or not u.partitions:
        return True
    return bool(w.partitions & u.partitions)


def compute(nodes: Iterable[Node], held: Iterable[Held], waiting: Iterable[Waiting], events: Iterable[NodeEvent],
            since: int, until: int, *, grace: int = GRACE_S) -> Gaps:
    """Idle, demand and down GPU-time per unit over [since, until) (the module docstring's rules)."""
    if since >= until:
        raise ValueError(f"empty window: {since} >= {until}")
    notes: list[str] = []
    units = _units(nodes, held, since, until, notes)
    stretches: list[Stretch] = []
    downs: list[Down] = []
    by_cluster: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        by_cluster[u.cluster].append(i)
    waits_by_cluster: dict[str, list[tuple[Waiting, int, int]]] = defaultdict(list)
    for w in waiting:
        span = wait_span(w, since, until, grace)
        if span is not None:
            waits_by_cluster[w.cluster].append((w, *span))
    events_by_cluster: dict[str, list[NodeEvent]] = defaultdict(list)
    for e in events:
        events_by_cluster[e.cluster].append(e)
    for cluster in sorted(by_cluster):
        _sweep(units, by_cluster[cluster], waits_by_cluster.get(cluster, []), events_by_cluster.get(cluster, []),
               since, until, stretches, downs)
    return Gaps(since, until, units, stretches, downs, notes)


def _sweep(units: list[Unit], mine: list[int], waits: list[tuple[Waiting, int, int]], events: list[NodeEvent],
           since: int, until: int, stretches: list[Stretch], downs: list[Down]) -> None:
    """One cluster: a sweep over every time something changes."""
    changes: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # t -> (kind, index, delta)
    for ui in mine:
        for a, b, n in units[ui].holds:
            changes[a].append((0, ui, n))
            changes[b].append((0, ui, -n))
    node_units: dict[str, list[int]] = defaultdict(list)
    for ui in mine:
        node_units[units[ui].node].append(ui)
    clipped: list[tuple[NodeEvent, str, int, int]] = []
    for e in events:
        for node in _nodes_of(e.node):
            if node not in node_units:
                continue
            a, b = max(e.start, since), min(e.end if e.end is not None else until, until)
            if a < b:
                clipped.append((e, node, a, b))
    clipped.sort(key=lambda c: (c[1], c[2], c[3]))
    for ei, (_e, _node, a, b) in enumerate(clipped):
        changes[a].append((1, ei, 1))
        changes[b].append((1, ei, -1))
    order = sorted(range(len(waits)), key=lambda i: _wait_order(waits[i][0]))
    rank = {wi: r for r, wi in enumerate(order)}
    usable = [{ui for ui in mine if _can_use(w, units[ui])} for w, _, _ in waits]
    for wi, (_w, a, b) in enumerate(waits):
        changes[a].append((2, wi, 1))
        changes[b].append((2, wi, -1))

    held = dict.fromkeys(mine, 0)
    open_events: dict[str, set[int]] = defaultdict(set)
    down_gpu_s = [0] * len(clipped)
    active: set[int] = set()
    # per unit: [start, idle, down, event index or -1, demand GPU-seconds]
    cur = {ui: [since, units[ui].gpus, 0, -1, 0] for ui in mine}
    idle_now = {ui for ui in mine if units[ui].gpus > 0}

    def state(ui: int) -> tuple[int, int, int]:
        free = max(units[ui].gpus - held[ui], 0)
        evs = open_events.get(units[ui].node)
        if evs:
            return 0, free, min(evs)
        return free, 0, -1

    def close(ui: int, t: int) -> None:
        start, idle, down, ev, demand = cur[ui]
        length = t - start
        if length <= 0:
            return
        u = units[ui]
        if idle:
            u.idle_s += idle * length
            u.demand_s += demand
            stretches.append(Stretch(u.cluster, u.node, u.minor, u.gpu_type, u.partition, "idle", start, t, idle,
                                     demand, None))
        if down:
            u.down_s += down * length
            down_gpu_s[ev] += down * length
            e = clipped[ev][0]
            stretches.append(Stretch(u.cluster, u.node, u.minor, u.gpu_type, u.partition, "down", start, t, down, 0,
                                     f"{e.state}: {e.reason}" if e.reason else e.state))

    times = sorted(set(changes) | {since, until})
    for i, t in enumerate(times):
        if t >= until:
            break
        touched: set[int] = set()
        for kind, idx, delta in changes.get(t, ()):
            if kind == 0:
                held[idx] += delta
                touched.add(idx)
            elif kind == 1:
                node = clipped[idx][1]
                (open_events[node].add if delta > 0 else open_events[node].discard)(idx)
                touched.update(node_units[node])
            elif delta > 0:
                active.add(idx)
            else:
                active.discard(idx)
        for ui in touched:
            idle, down, ev = state(ui)
            c = cur[ui]
            if (idle, down, ev) != (c[1], c[2], c[3]):
                close(ui, t)
                cur[ui] = [t, idle, down, ev, 0]
            if idle:
                idle_now.add(ui)
            else:
                idle_now.discard(ui)
        if not active or not idle_now:
            continue
        dt = times[i + 1] - t
        avail = {ui: cur[ui][1] for ui in idle_now}
        pool = sorted(idle_now)
        for wi in sorted(active, key=rank.__getitem__):
            need = waits[wi][0].gpus
            can = usable[wi]
            for ui in pool:
                if need <= 0:
                    break
                k = avail[ui]
                if k and ui in can:
                    take = min(k, need)
                    avail[ui] = k - take
                    need -= take
                    cur[ui][4] += take * dt
    for ui in mine:
        close(ui, until)
    for ei, (e, node, a, b) in enumerate(clipped):
        downs.append(Down(e, node, a, b, down_gpu_s[ei]))


# --- tables ---------------------------------------------------------------------
VALUE_FIELDS = ("GPUs", "IdleGPUHours", "IdleUSD", "DemandGPUHours", "DemandUSD", "NoDemandGPUHours", "NoDemandUSD")
FIELDS = ("Cluster", "Node", "GPU", "Partition", "GPUType", *VALUE_FIELDS, "DownGPUHours")
BY = ("node", "gpu", "partition", "gputype")
DEFAULT_FIELDS: dict[str | None, tuple[str, ...]] = {
    None: ("Node", "GPUType", *VALUE_FIELDS),   # DESIGN.md's header
    "node": ("Node", "GPUType", *VALUE_FIELDS),
    "gpu": ("Node", "GPU", "GPUType", *VALUE_FIELDS),
    "partition": ("Partition", "GPUType", *VALUE_FIELDS),
    "gputype": ("GPUType", *VALUE_FIELDS),
}
GROUP_FIELD = {None: "Node", "node": "Node", "gpu": "Node", "partition": "Partition", "gputype": "GPUType"}


def _key(u: Unit, by: str | None) -> tuple:
    if by in (None, "node"):
        return (u.cluster, u.node)
    if by == "gpu":
        return (u.cluster, u.node, -1 if u.minor is None else u.minor, u.gpu_type or "")
    if by == "partition":
        return (u.cluster, u.partition or "")
    if by == "gputype":
        return (u.cluster, u.gpu_type or "unknown")
    raise ValueError(f"gaps: --by must be one of {', '.join(BY)}, got {by!r}")


def _row(units: Sequence[Unit], book: PriceBook) -> dict[str, Any]:
    idle_usd = demand_usd = nodemand_usd = 0.0
    idle = demand = down = 0
    for u in units:
        rate = book.for_cluster(u.cluster).gpu_rate(u.gpu_type, u.partition or None).usd
        idle_usd += gpu_hours(1, u.idle_s) * rate
        demand_usd += gpu_hours(1, u.demand_s) * rate
        nodemand_usd += gpu_hours(1, u.idle_s - u.demand_s) * rate
        idle, demand, down = idle + u.idle_s, demand + u.demand_s, down + u.down_s
    one = units[0] if len(units) == 1 else None
    return {
        "Cluster": ",".join(sorted({u.cluster for u in units})),
        "Node": hostlist.collect_hostlist(sorted({u.node for u in units})),
        "GPU": "" if one is None or one.minor is None else str(one.minor),
        "Partition": ",".join(sorted({u.partition or "" for u in units} - {""})),
        "GPUType": ",".join(sorted({u.gpu_type or "unknown" for u in units})),
        "GPUs": sum(u.gpus for u in units),
        "IdleGPUHours": gpu_hours(1, idle), "IdleUSD": idle_usd,
        "DemandGPUHours": gpu_hours(1, demand), "DemandUSD": demand_usd,
        "NoDemandGPUHours": gpu_hours(1, idle - demand), "NoDemandUSD": nodemand_usd,
        "DownGPUHours": gpu_hours(1, down),
        "_idle_s": idle,
    }


def table(gaps: Gaps, by: str | None, book: PriceBook) -> list[dict[str, Any]]:
    """One row per group (every node without --by), largest IdleUSD first, then the `total` row."""
    groups: dict[tuple, list[Unit]] = defaultdict(list)
    for u in gaps.units:
        groups[_key(u, by)].append(u)
    rows = [_row(us, book) for _, us in sorted(groups.items())]
    rows.sort(key=lambda r: (-round(r["IdleUSD"], 9), -r["_idle_s"]))  # stable: ties stay in key order
    total = _row(gaps.units, book)
    gf = GROUP_FIELD[by]
    for f in ("Node", "GPU"):
        if f != gf:
            total[f] = ""
    total[gf] = "total"
    return [*rows, total]
