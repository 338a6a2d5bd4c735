"""Reading a number that may be missing, text or a glitch: one definition for the sampler,
the analysis inputs and the findings' evidence."""

from __future__ import annotations

import math
from typing import Any


def finite(x: Any) -> float | None:
    """x as a float, or None when absent, not a number, NaN or infinite (a driver glitch must not
    poison a job's sums, and JSON - PostgreSQL's json type - refuses NaN)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
