"""The GPU catalog (data/gpus.json): NVML device names -> GPU types, their
size and speed, and default prices. Config [prices] overrides the prices."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    with resources.files("piqc_slurm.data").joinpath("gpus.json").open() as fh:
        return json.load(fh)["types"]


def type_of(name: str | None) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; None if no pattern matches."""
    if not name:
        return None
    upper = name.upper()
    for gpu_type, spec in catalog().items():
        for pattern in spec["match"]:
            # whole-word-ish: 'L4' must not match 'L40S'
            idx = upper.find(pattern.upper())
            while idx >= 0:
                end = idx + len(pattern)
                if end == len(upper) or not upper[end].isalnum():
                    return gpu_type
                idx = upper.find(pattern.upper(), idx + 1)
    return None


def price(gpu_type: str | None, prices: dict[str, float] | None = None) -> float:
    """USD per GPU-hour: config prices, then the catalog's, then prices['default'] (2.0)."""
    prices = prices or {}
    key = (gpu_type or "").lower()
    if key in prices:
        return prices[key]
    if key in catalog():
        return float(catalog()[key]["price"])
    return float(prices.get("default", 2.0))
