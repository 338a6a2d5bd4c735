"""The node GPU inventory (node_gpus): every GPU of every node, by device minor.

Sources, by how much they know: `summary` (the sampler read the device:
type, UUID, NVML name), `scenario` (simulate: a scenario's nodes), `scontrol`
(Gres= of `scontrol show node` at ingest: only counts and types, minors
numbered 0..N-1 in order). A source never overwrites what a better one
recorded; a better source wins whatever its date (ingest reads scontrol
before it replays the day's summaries), the same source when newer."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from piqc_slurm.store.models import NodeGpu

RANK = {"scontrol": 0, "scenario": 1, "summary": 2}


def note_gpus(session: Session, cluster: str, node: str,
              gpus: Iterable[tuple[int, str | None, str | None, str | None]], source: str, seen_at: int) -> int:
    """gpus: (minor, gpu type, uuid, NVML name). Returns how many rows were added or changed."""
    n = 0
    for minor, gpu_type, uuid, name in gpus:
        row = session.get(NodeGpu, (cluster, node, minor))
        if row is None:
            session.add(NodeGpu(cluster=cluster, node=node, minor=minor, gpu_type=gpu_type, uuid=uuid, name=name,
                                source=source, seen_at=seen_at))
            n += 1
        elif RANK[source] > RANK.get(row.source, 0) or (RANK[source] == RANK.get(row.source, 0)
                                                        and seen_at >= row.seen_at):
            row.gpu_type = gpu_type or row.gpu_type
            row.uuid, row.name = uuid or row.uuid, name or row.name
            row.source, row.seen_at = source, seen_at
            n += 1
    return n


def from_scontrol(session: Session, cluster: str, gres: dict[str, list[tuple[str | None, int]]], now: int) -> int:
    """parse_node_gres output -> inventory rows (minors 0..N-1, types in Gres order)."""
    n = 0
    for node, items in gres.items():
        minors, m = [], 0
        for gpu_type, count in items:
            for _ in range(count):
                minors.append((m, gpu_type, None, None))
                m += 1
        n += note_gpus(session, cluster, node, minors, "scontrol", now)
    return n
