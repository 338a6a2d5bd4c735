"""A job's GPU-hours and cost: the one definition every surface prints.

  GPU-hours allocated = GPUs x elapsed seconds / 3600, summed over the job's
                        nodes (one part per GPU type when a job spans types)
  cost (GPU job)      = sum over parts of GPU-hours x the part's rate
                        (prices.py for the lookup order)
  cost (CPU-only job) = AllocCPUS x elapsed hours x usage.cpu_core_hour_price
                        (0 unless configured: a GPU-hour price already covers
                        the CPUs that come with the GPU, so GPU jobs never add it)
  money               = rounded half-up to the cent, once, where it is shown

Elapsed is Slurm's (End - Start, whole seconds): the Epilog's estimate uses
the same whole seconds from its own clocks, so it agrees with the accounting
figure to within a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from piqc_slurm.usage.prices import Prices, Rate

_CENT = Decimal("0.01")


class Part(NamedTuple):
    gpus: int
    gpu_type: str | None


class Cost(NamedTuple):
    usd: float            # unrounded
    gpu_hours: float
    rate: Rate | None     # the rate of the (first) GPU part; None for a CPU job
    known: bool           # every part's GPU type had a known price


def parts_of(alloc_gpus: int, gpu_type: str | None, alloc_tres: str = "") -> list[Part]:
    """A job's GPUs by type: one part when Slurm recorded one type (or none); one
    part per type when its AllocTRES names several (gres/gpu:h100=4,gres/gpu:a100=4)."""
    if gpu_type or not alloc_tres or "gres/gpu:" not in alloc_tres:
        return [Part(alloc_gpus, gpu_type)]
    from piqc_slurm.slurm.parse import parse_tres, tres_count

    tres = parse_tres(alloc_tres)
    typed = [Part(tres_count(tres, k), k.split(":", 1)[1]) for k in tres if k.startswith("gres/gpu:")]
    typed = [p for p in typed if p.gpus > 0]
    if not typed or sum(p.gpus for p in typed) != alloc_gpus:
        return [Part(alloc_gpus, gpu_type)]
    return typed


def rated_parts(alloc_gpus: int, gpu_type: str | None, alloc_tres: str, prices: Prices,
                partition: str | None = None) -> list[tuple[int, str | None, float]]:
    """(GPUs, type, USD per GPU-hour) of each part job_cost prices: what a page shows beside the cost
    of a job whose nodes hold different GPU types."""
    return [(p.gpus, p.gpu_type, prices.gpu_rate(p.gpu_type, partition).usd)
            for p in parts_of(alloc_gpus, gpu_type, alloc_tres or "") if p.gpus and p.gpus > 0]


def gpu_hours(gpus: int, elapsed_s: float) -> float:
    if gpus <= 0 or elapsed_s <= 0:
        return 0.0
    return gpus * float(elapsed_s) / 3600.0


def job_cost(parts: Iterable[Part | tuple[int, str | None]], elapsed_s: float, prices: Prices,
             partition: str | None = None, cpus: int = 0) -> Cost:
    parts = [Part(*p) for p in parts if p[0] and p[0] > 0]
    if elapsed_s is None or elapsed_s <= 0:
        rate = prices.gpu_rate(parts[0].gpu_type, partition) if parts else None
        return Cost(0.0, 0.0, rate, rate.known if rate else True)
    if not parts:
        return Cost(_cpu_usd(max(cpus, 0), float(elapsed_s), prices), 0.0, None, True)
    rates = [prices.gpu_rate(p.gpu_type, partition) for p in parts]
    usd, hours = _gpu_usd([(p.gpus, r.usd) for p, r in zip(parts, rates, strict=True)], float(elapsed_s))
    return Cost(usd, hours, rates[0], all(r.known for r in rates))


def _gpu_usd(parts: list[tuple[int, float]], elapsed):
    """(USD, GPU-hours) of (GPUs, rate) parts over `elapsed` seconds (> 0): a float, or a numpy
    array of them (job_costs), computed by the same operations in the same order."""
    usd = hours = 0.0
    for gpus, rate in parts:
        h = gpus * elapsed / 3600.0  # gpu_hours
        hours = hours + h
        usd = usd + h * rate
    return usd, hours


def _cpu_usd(cpus, elapsed, prices: Prices):
    return cpus * elapsed / 3600.0 * prices.cpu_core_hour


def job_costs(cluster, alloc_gpus, gpu_type, alloc_tres, elapsed, partition, cpus, book):
    """job_cost(parts_of(...), ...).usd for many jobs at once (columns of equal length; `book`: a
    PriceBook), as a numpy array: the rates are looked up once per job shape (cluster, GPUs, type,
    AllocTRES, partition) and the arithmetic is job_cost's, on each shape's elapsed times."""
    import numpy as np
    import pandas as pd

    n = len(elapsed)
    e = pd.to_numeric(pd.Series(elapsed), errors="coerce").fillna(0).to_numpy(dtype="float64")
    a = pd.to_numeric(pd.Series(alloc_gpus), errors="coerce").fillna(0).to_numpy(dtype="int64")
    c = pd.to_numeric(pd.Series(cpus), errors="coerce").fillna(0).to_numpy(dtype="int64")
    out = np.zeros(n, dtype="float64")
    shapes = pd.DataFrame({"cl": list(cluster), "a": a, "t": list(gpu_type),
                           "tres": ["" if x is None else x for x in alloc_tres], "p": list(partition)})
    for (cl, alloc, gtype, tres, part), rows in shapes.groupby(["cl", "a", "t", "tres", "p"], dropna=False,
                                                              sort=False).indices.items():
        prices = book.for_cluster(cl)
        gtype = None if gtype is None or gtype != gtype else gtype  # groupby's NaN for a missing type
        part = None if part is None or part != part else part
        parts = [p for p in parts_of(int(alloc), gtype, tres) if p.gpus and p.gpus > 0]
        er = e[rows]
        if parts:
            usd, _ = _gpu_usd([(p.gpus, prices.gpu_rate(p.gpu_type, part).usd) for p in parts], er)
        else:
            usd = _cpu_usd(np.maximum(c[rows], 0), er, prices)
        out[rows] = np.where(er > 0, usd, 0.0)
    return out


_NANO = Decimal("0.000000001")


def money(usd: float | None) -> float | None:
    """USD rounded half-up to the cent (not float round()'s half-even on a binary value).

    The float is first rounded to 1e-9 to drop binary noise: 1 GPU x 1044 s x $1.50/h is
    exactly $0.435, computed as 0.43499999999999994, and must print 0.44 as by hand."""
    if usd is None:
        return None
    usd = float(usd)
    if not math.isfinite(usd) or abs(usd) >= 1e15:
        return usd  # no cents to round (a float has none there; quantize would overflow 28 digits)
    exact = Decimal(repr(usd)).quantize(_NANO, rounding=ROUND_HALF_UP)
    return float(exact.quantize(_CENT, rounding=ROUND_HALF_UP))


def money_text(usd: float | None) -> str:
    return "" if usd is None else f"{money(usd):.2f}"
