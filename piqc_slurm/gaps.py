"""`piqc-slurm gaps`: loading the analysis's inputs from the store, node events
from sacctmgr, printing the table, and keeping the gaps for the digest.

The rules (what is held, idle, down, demand, and the dollars) are
piqc_slurm/analyze/gaps.py's, documented in docs/gaps.md. Here:

- the store is read through query.store.Reader (the fast read-only path):
  the inventory (node_gpus), the jobs that held GPUs in the window with
  their job_gpus minors, the jobs that waited in it, and each node's
  partitions (those of the jobs that ever ran on it);
- node events come from `sacctmgr show event` (slurm/run.py); when it
  cannot be run the command warns and counts down time as idle;
- the computed stretches replace the window's earlier ones in `idle_gaps`
  (same clusters, same window), which the digest reads.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from piqc_slurm.analyze import gaps as A
from piqc_slurm.errors import ParseError, PiqcError, UsageError
from piqc_slurm.slurm.parse import NodeEvent, expand_nodelist
from piqc_slurm.usage.cost import money_text, parts_of
from piqc_slurm.usage.prices import PriceBook

FIELDS = A.FIELDS
BY = A.BY

_INV_SQL = 'SELECT "cluster", "node", "minor", "gpu_type" FROM node_gpus WHERE "cluster" IN ({cl})'
_PART_SQL = ('SELECT "cluster", "nodelist", "partition", COUNT(*) FROM jobs WHERE "cluster" IN ({cl}) '
             'AND "start" IS NOT NULL AND "nodelist" <> \'\' GROUP BY "cluster", "nodelist", "partition"')
_HELD_SQL = ('SELECT "id", "cluster", "job_id_raw", "start", "end", "nodelist", "alloc_gpus", "gpu_type", '
             '"alloc_tres" FROM jobs WHERE "cluster" IN ({cl}) AND "start" IS NOT NULL AND "start" < :until '
             'AND ("end" IS NULL OR "end" > :since) AND "alloc_gpus" > 0')
_MINOR_SQL = ('SELECT s."job_ref", g."node", g."minor" FROM job_gpus g '
              'JOIN node_summaries s ON s."id" = g."summary_id" JOIN jobs j ON j."id" = s."job_ref" '
              'WHERE j."cluster" IN ({cl}) AND j."start" IS NOT NULL AND j."start" < :until '
              'AND (j."end" IS NULL OR j."end" > :since) AND j."alloc_gpus" > 0')
_WAIT_SQL = ('SELECT "id", "cluster", "job_id_raw", "partition", "req_gpus", "alloc_gpus", "gpu_type", '
             '"eligible", "start", "end" FROM jobs WHERE "cluster" IN ({cl}) AND "eligible" IS NOT NULL '
             'AND "eligible" < :until AND ("start" IS NULL OR "start" > :since) '
             'AND ("start" IS NOT NULL OR "end" IS NULL OR "end" > :since) '
             'AND COALESCE("req_gpus", "alloc_gpus", 0) > 0')


def parse_fields(spec: str | None, by: str | None) -> list[str]:
    if not spec:
        return list(A.DEFAULT_FIELDS[by])
    by_lower = {f.lower(): f for f in FIELDS}
    out = []
    for name in spec.split(","):
        f = by_lower.get(name.strip().lower())
        if f is None:
            raise UsageError(f"gaps: unknown field {name.strip()!r} (fields: {', '.join(FIELDS)})")
        out.append(f)
    return out


def cluster_choice(given: Sequence[str], configured: str) -> list[str] | None:
    """-M values (repeatable, comma lists; `all` = every cluster) -> names, or None for all.
    Without -M: the config's cluster, else all."""
    names = [c.strip() for v in given for c in v.split(",") if c.strip()]
    if any(c.lower() in ("all", "-1") for c in names):
        return None
    if names:
        return list(dict.fromkeys(names))
    return [configured] if configured else None


def store_clusters(reader) -> list[str]:
    return sorted(r[0] for r in reader.all('SELECT DISTINCT "cluster" FROM node_gpus', {}))


def _in(clusters: Sequence[str]) -> tuple[str, dict[str, Any]]:
    params = {f"c{i}": c for i, c in enumerate(clusters)}
    return ", ".join(f":{k}" for k in params) or "NULL", params


def _nodes(nodelist: str) -> tuple[str, ...]:
    try:
        return tuple(expand_nodelist(nodelist))
    except ParseError:
        return ()


def load(reader, clusters: Sequence[str], since: int, until: int, book: PriceBook
         ) -> tuple[list[A.Node], list[A.Held], list[A.Waiting]]:
    """The analysis's inputs for these clusters and the window [since, until)."""
    cl, params = _in(clusters)
    win = {**params, "since": since, "until": until}

    def canon(cluster: str, t: str | None) -> str | None:
        if not t:
            return None
        return book.catalog_for(cluster).canonical(t) or t.lower()

    parts_seen: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for cluster, nodelist, partition, n in reader.all(_PART_SQL.format(cl=cl), params):
        if partition:
            for node in _nodes(nodelist):
                parts_seen[(cluster, node)][partition] += n
    gpus: dict[tuple[str, str], dict[int, str | None]] = defaultdict(dict)
    for cluster, node, minor, gpu_type in reader.all(_INV_SQL.format(cl=cl), params):
        gpus[(cluster, node)][int(minor)] = canon(cluster, gpu_type)
    nodes = []
    for (cluster, node), by_minor in sorted(gpus.items()):
        seen = parts_seen.get((cluster, node), Counter())
        primary = min(seen, key=lambda p: (-seen[p], p)) if seen else None
        nodes.append(A.Node(cluster, node, by_minor, frozenset(seen), primary))

    minors: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for ref, node, minor in reader.all(_MINOR_SQL.format(cl=cl), win):
        minors[ref][node].add(int(minor))
    held = []
    for ref, cluster, job, start, end, nodelist, alloc, gpu_type, tres in reader.all(_HELD_SQL.format(cl=cl), win):
        parts = tuple((p.gpus, canon(cluster, p.gpu_type)) for p in parts_of(alloc, gpu_type, tres or ""))
        held.append(A.Held(cluster, job, start, end, _nodes(nodelist or ""), alloc, parts,
                           {n: tuple(sorted(m)) for n, m in minors.get(ref, {}).items()}))
    waiting = []
    for _ref, cluster, job, partition, req, alloc, gpu_type, eligible, start, end in reader.all(
            _WAIT_SQL.format(cl=cl), win):
        asked = req if req is not None else (alloc if start is not None else 0)
        names = frozenset(p for p in (partition or "").split(",") if p)
        waiting.append(A.Waiting(cluster, job, asked or 0, eligible, start, end, names or None,
                                 canon(cluster, gpu_type)))
    return nodes, held, waiting


def load_events(clusters: Sequence[str], since: int, until: int, env: Mapping[str, str],
                warn: Callable[[str], None]) -> list[NodeEvent]:
    """Node events from sacctmgr; on any failure a warning and none."""
    from piqc_slurm.slurm.parse import parse_node_events
    from piqc_slurm.slurm.run import sacctmgr_events

    if not clusters:
        return []
    try:
        return parse_node_events(sacctmgr_events(since, until, list(clusters), env))
    except (PiqcError, ValueError) as exc:
        warn(f"piqc-slurm: gaps: node events not read ({exc}): down and drained time counts as idle")
        return []


def text_of(field: str, row: Mapping[str, Any]) -> str:
    v = row.get(field)
    if field == "GPUs":
        return str(v)
    if field.endswith(("Hours", "USD")):
        return money_text(v)  # two decimals, rounded half-up once (usage.cost), hours as dollars
    return "" if v is None else str(v)


def _table(header: Sequence[str], cells: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> list[str]:
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) if i in left else v.rjust(w)
                        for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()
    return [line(header), " ".join("-" * w for w in widths), *(line(c) for c in cells)]


def render(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], mode: str, header: bool,
           downs: Sequence[A.Down] = (), tz=None) -> str:
    """mode: 'P' ('|' between fields), 'p' (each field followed by '|'), 'table' (then the down
    time, when there is any, as a second table)."""
    cells = [[text_of(f, r) for f in fields] for r in rows]
    if mode in ("P", "p"):
        end = "|" if mode == "p" else ""
        lines = (["|".join(fields) + end] if header else []) + ["|".join(c) + end for c in cells]
        return "\n".join(lines) + "\n"
    out = _table(fields, cells)
    if not header:
        out = out[2:]
    if downs:
        from piqc_slurm.slurm.parse import format_time

        ev = [[d.node, d.event.cluster, format_time(d.start, epoch=False, tz=tz),
               format_time(d.end, epoch=False, tz=tz), d.event.state, money_text(d.gpu_s / 3600.0),
               d.event.reason] for d in downs]
        out += ["", "Down or drained (node events; not counted as idle):"]
        out += _table(["Node", "Cluster", "Start", "End", "State", "GPUHours", "Reason"], ev, left=(0, 1, 2, 3, 4, 6))
    return "\n".join(out) + "\n"


def store(url: str, gaps: A.Gaps, clusters: Sequence[str], computed_at: int) -> int:
    """Replace the window's stretches of these clusters in idle_gaps; how many rows were written."""
    from sqlalchemy import delete
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from piqc_slurm.errors import StoreError, first_line
    from piqc_slurm.store.db import open_engine
    from piqc_slurm.store.models import IdleGap

    engine = open_engine(url, mode="write")
    try:
        with Session(engine) as s, s.begin():
            s.execute(delete(IdleGap).where(IdleGap.cluster.in_(list(clusters)),
                                            IdleGap.window_start == gaps.since, IdleGap.window_end == gaps.until))
            rows = [dict(cluster=x.cluster, node=x.node, minor=x.minor, gpu_type=x.gpu_type, partition=x.partition,
                         kind=x.kind, start=x.start, end=x.end, gpus=x.gpus, demand_gpu_seconds=x.demand_gpu_s,
                         reason=x.reason, window_start=gaps.since, window_end=gaps.until, computed_at=computed_at)
                    for x in gaps.stretches]
            if rows:
                s.execute(IdleGap.__table__.insert(), rows)
        return len(rows)
    except SQLAlchemyError as exc:
        raise StoreError(f"gaps not stored: {first_line(exc)}") from None
    finally:
        engine.dispose()
