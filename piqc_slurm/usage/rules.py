"""Did a GPU work? One rule, used by the Epilog summary, the store and the analysis.

A GPU did work when it was active (utilization.gpu at or above
`active_util`) for at least `min_active_share` of the time it was sampled.
Activity over the whole job decides, not one sample: a single warm-up spike
on an otherwise idle GPU (the complaint raised against "max utilization"
rules) does not make it used. Memory is evidence, never use: frameworks
open a context on every visible device, and TensorFlow or vLLM reserve most
of a GPU's memory whether or not they compute on it.

The summary keeps each GPU's time-weighted utilization histogram (101 bins,
one per percent, milliseconds in each), so both thresholds can be applied
again later without re-sampling (`active_seconds_from_hist`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ACTIVE_UTIL = 5.0
"""Default: utilization (%) at or above which a sample counts as active (config sampler.active_util)."""

MIN_ACTIVE_SHARE = 0.05
"""Default: share of the sampled time a GPU must be active to have done work (config usage.min_active_share)."""

BARE_CONTEXT_MIB = 1024
"""A CUDA context on an unused device; more than this is memory really held (evidence for a person)."""


def active_seconds_from_hist(hist_ms: Sequence[int] | None, active_util: float = ACTIVE_UTIL
                             ) -> tuple[float, float] | None:
    """(active seconds, sampled seconds) from a 101-bin utilization histogram; None without one.

    Bin k holds the milliseconds spent at a utilization in [k, k+1): a
    threshold u counts the bins from ceil(u) up (a sample at 4.9% is in bin 4
    and is not active at 5%)."""
    if not hist_ms:
        return None
    first = int(-(-float(active_util) // 1))  # ceil
    total = sum(hist_ms)
    return sum(hist_ms[max(first, 0):]) / 1000.0, total / 1000.0


def active_share(active_seconds: float | None, seconds: float | None) -> float | None:
    """Share of the sampled time at or above the activity threshold; None when nothing was sampled."""
    if active_seconds is None or not seconds or seconds <= 0:
        return None
    return min(max(float(active_seconds) / float(seconds), 0.0), 1.0)


def did_work(gpu: Mapping[str, Any], min_share: float = MIN_ACTIVE_SHARE,
             active_util: float | None = None) -> bool | None:
    """True if this GPU did work over the job, False if not, None if there is no evidence.

    `gpu` is a summary device or a gpu_usage row: `active_seconds` and
    `seconds` (and, to re-apply another `active_util`, `util_hist_ms` or
    `util_hist`)."""
    if not gpu.get("samples"):
        return None
    if active_util is not None:
        hist = gpu.get("util_hist_ms", gpu.get("util_hist"))
        got = active_seconds_from_hist(hist, active_util)
        if got is not None:
            return (active_share(*got) or 0.0) >= min_share
    share = active_share(gpu.get("active_seconds"), gpu.get("seconds"))
    if share is None:
        return None
    return share >= min_share


def did_work_vector(active_seconds, seconds, samples, min_share: float = MIN_ACTIVE_SHARE):
    """did_work for pandas Series of GPUs (the analyzer): the same rule as did_work, elementwise;
    NaN-free bools, False where nothing was sampled (callers count those apart by `samples`)."""
    ok = (samples.fillna(0) > 0) & (seconds.fillna(0) > 0)
    share = (active_seconds.fillna(0) / seconds.where(seconds > 0)).clip(0.0, 1.0)
    return ok & (share >= min_share)
