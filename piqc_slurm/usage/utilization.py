"""A job's GPU use over its allocation, from its per-GPU rows: one definition.

  GPUs used       GPUs whose did_work is true (rules.did_work)
  util over alloc sum over sampled GPUs of util_mean x (its sampled seconds /
                  the longest sampled GPU of its node), divided by the
                  ALLOCATED GPU count (at least the sampled count): an idle
                  or unsampled allocated GPU counts as 0%, a GPU lost half
                  way counts half
  memory peak     max over GPUs of mem_used_max_mib
  energy          sum over GPUs of energy_j
  GPU-hours used  sum over GPUs that did work of the job's elapsed hours;
                  idle = allocated - used (usage.cost.gpu_hours)

Rows are dicts or tuples with the gpu_usage columns named in ROW_FIELDS, and
`node` (their summary's node, or any key that is the same for the GPUs of
one node summary).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ROW_FIELDS = ("node", "seconds", "util_mean", "did_work", "mem_used_max_mib", "energy_j", "gpu_type")


class GpuStats:
    """The folded per-GPU rows of one job."""

    __slots__ = ("gpus", "used", "idle", "util_sum", "mem_peak_mib", "energy_j", "types")

    def __init__(self, gpus: int = 0, used: int = 0, idle: int = 0, util_sum: float = 0.0,
                 mem_peak_mib: float | None = None, energy_j: float | None = None,
                 types: set[str] | None = None) -> None:
        self.gpus = gpus                   # sampled GPU rows
        self.used = used                   # did_work true
        self.idle = idle                   # did_work false
        self.util_sum = util_sum           # sum of seconds-weighted util_mean
        self.mem_peak_mib = mem_peak_mib
        self.energy_j = energy_j
        self.types = set(types or ())

    def __repr__(self) -> str:
        return (f"GpuStats(gpus={self.gpus}, used={self.used}, idle={self.idle}, util_sum={self.util_sum:.3f}, "
                f"mem_peak_mib={self.mem_peak_mib}, energy_j={self.energy_j}, types={sorted(self.types)})")


def fold(rows: Iterable[Mapping[str, Any]]) -> GpuStats:
    rows = list(rows)
    longest: dict[Any, float] = {}
    for r in rows:
        longest[r["node"]] = max(longest.get(r["node"], 0.0), float(r.get("seconds") or 0.0))
    st = GpuStats()
    for r in rows:
        st.gpus += 1
        dw = r.get("did_work")
        if dw is not None:
            if bool(dw):
                st.used += 1
            else:
                st.idle += 1
        util = r.get("util_mean")
        if util is not None:
            span = longest.get(r["node"], 0.0)
            weight = min(1.0, float(r.get("seconds") or 0.0) / span) if span > 0 else 1.0
            st.util_sum += float(util) * weight
        mem = r.get("mem_used_max_mib")
        if mem is not None:
            st.mem_peak_mib = max(st.mem_peak_mib or 0.0, float(mem))
        e = r.get("energy_j")
        if e is not None:
            st.energy_j = (st.energy_j or 0.0) + float(e)
        if r.get("gpu_type"):
            st.types.add(r["gpu_type"])
    return st


def util_over_allocation(st: GpuStats | None, alloc_gpus: int) -> float | None:
    """Mean utilization (%) over the allocated GPUs; None without sampler data."""
    if st is None or st.gpus == 0:
        return None
    return st.util_sum / max(alloc_gpus, st.gpus)


def idle_share(st: GpuStats | None, alloc_gpus: int) -> float | None:
    """Share of the allocated GPUs that did no work; None without sampler data."""
    if st is None or st.gpus == 0:
        return None
    return idle_share_of(st.idle, st.gpus, alloc_gpus)


def idle_share_of(idle: int, sampled: int, alloc_gpus: int) -> float | None:
    """idle GPUs / allocated GPUs (at least the sampled count); None when none was sampled."""
    if not sampled:
        return None
    alloc = max(alloc_gpus, sampled)
    return min(idle, alloc) / alloc if alloc else 0.0
