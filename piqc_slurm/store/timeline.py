"""The store's packed GPU timeline: the format of table `timeline`, encoded and decoded here only.

The sampler writes one bin per GPU per `sampler.timeline_bin` seconds (60 by default), each
`{"t", "gpu", "util", "mem_mib", "power_w"}` (spool timeline.jsonl; a reading may be absent). The
store keeps one row per summary and GPU (models.py GpuTimeline, table `timeline`):

    summary_id, minor   the summary and the GPU's device minor (the primary key)
    t0                  epoch seconds of the GPU's first bin
    step                seconds between slots: the bin width (see below); 0 when the summary
                        has bins at one time only (a single slot, width unknown)
    n                   slot count; slot i is the bin starting at t0 + i * step
    data                zlib.compress(U + M + P, level 6), where, little-endian:
                        U  n x uint8   utilization, percent rounded half up, clamped to 0..100
                        M  n x uint16  memory used, in units of 4 MiB rounded half up,
                                       clamped to 0..65534 (262,136 MiB)
                        P  n x uint16  power, watts rounded half up, clamped to 0..65534
                        A null reading, and every reading of a slot no bin fell on (a gap:
                        the sampler was stopped, the GPU unreadable), is the type's largest
                        value: 255, 65535, 65535.

`step` comes from the bins of the whole summary (all its GPUs): the gcd of the gaps between
their distinct times. The sampler's bins start on multiples of its bin width, so that is the
width (or a multiple of it, when bins are missing in a regular pattern). Bins not on one grid
(the gcd under half the commonest gap: never written by the sampler) are put on the grid of
the commonest gap, each in the nearest slot, the first one in time kept where two meet: lossy.
A bin repeated (same t and gpu) counts once, the first one given. A GPU's slots are capped at
MAX_SLOTS (about two years of 60 s bins): a timeline spanning more is a ValueError.

The values decode to whole numbers: util 37.4 -> 37, mem_mib 1023 -> 1024, power_w 550.7 -> 551.
About 5 bytes per bin before compression; a steady hour of 60 bins compresses to some tens of
bytes. Changing the format needs a migration that rewrites the rows (0008 wrote them from the
old one-row-per-bin table with `pack`; its downgrade reads them back with `unpack`).

Standard library only: store/summaries.py and migration 0008 import it.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import pairwise

LEVEL = 6
MEM_UNIT_MIB = 4
NULL_U8, NULL_U16 = 0xFF, 0xFFFF
MAX_SLOTS = 1 << 20


def _code(v, scale: int, top: int, null: int) -> int:
    """`v` / `scale` rounded half up and clamped to 0..top; `null` where `v` is no finite number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return null
    return min(max(math.floor(v / scale + 0.5), 0), top)


def _step(times: list[int]) -> tuple[int, bool]:
    """(step, exact) for a summary's distinct bin times, sorted (module docstring)."""
    gaps = [b - a for a, b in pairwise(times)]
    if not gaps:
        return 0, True
    g = math.gcd(*gaps)
    counts = Counter(gaps)
    common = min(counts, key=lambda d: (-counts[d], d))
    return (g, True) if 2 * g >= common else (common, False)


def pack(bins: Iterable[Mapping]) -> list[dict]:
    """One summary's timeline bins -> its rows, one per GPU (by minor): dicts of minor, t0, step,
    n and data (the caller adds summary_id). ValueError for a GPU spanning more than MAX_SLOTS."""
    per_gpu: dict[int, dict[int, Mapping]] = {}
    for b in bins:
        t, gpu = int(b["t"]), int(b["gpu"])
        per_gpu.setdefault(gpu, {}).setdefault(t, b)  # a repeated (t, gpu): the first one
    step, exact = _step(sorted({t for by_t in per_gpu.values() for t in by_t}))
    rows = []
    for gpu in sorted(per_gpu):
        by_t = per_gpu[gpu]
        times = sorted(by_t)
        t0 = times[0]
        if step == 0:
            slots = {0: by_t[t0]}
        elif exact:
            slots = {(t - t0) // step: by_t[t] for t in times}
        else:  # nearest slot, the first bin in time kept
            slots = {}
            for t in times:
                slots.setdefault((2 * (t - t0) + step) // (2 * step), by_t[t])
        n = max(slots) + 1
        if n > MAX_SLOTS:
            raise ValueError(f"timeline of GPU {gpu} spans {n} bins of {step} s, more than {MAX_SLOTS}")
        util, mem, power = [NULL_U8] * n, [NULL_U16] * n, [NULL_U16] * n
        for i, b in slots.items():
            util[i] = _code(b.get("util"), 1, 100, NULL_U8)
            mem[i] = _code(b.get("mem_mib"), MEM_UNIT_MIB, NULL_U16 - 1, NULL_U16)
            power[i] = _code(b.get("power_w"), 1, NULL_U16 - 1, NULL_U16)
        raw = bytes(util) + struct.pack(f"<{n}H", *mem) + struct.pack(f"<{n}H", *power)
        rows.append({"minor": gpu, "t0": t0, "step": step, "n": n, "data": zlib.compress(raw, LEVEL)})
    return rows


def _field(row, name: str):
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def unpack(row) -> list[dict]:
    """A row (a mapping or an object with minor, t0, step, n, data) -> its n slots in time order,
    each {"t", "gpu", "util", "mem_mib", "power_w"}: whole numbers, None where null (a gap's
    slot has all three None). ValueError if data does not hold n slots."""
    minor, t0, step, n = (int(_field(row, k)) for k in ("minor", "t0", "step", "n"))
    raw = zlib.decompress(bytes(_field(row, "data")))
    if n < 0 or len(raw) != 5 * n:
        raise ValueError(f"timeline of GPU {minor}: {len(raw)} bytes for {n} slots (want {5 * n})")
    mem = struct.unpack_from(f"<{n}H", raw, n)
    power = struct.unpack_from(f"<{n}H", raw, 3 * n)
    return [{"t": t0 + i * step, "gpu": minor,
             "util": None if raw[i] == NULL_U8 else raw[i],
             "mem_mib": None if mem[i] == NULL_U16 else mem[i] * MEM_UNIT_MIB,
             "power_w": None if power[i] == NULL_U16 else power[i]} for i in range(n)]
