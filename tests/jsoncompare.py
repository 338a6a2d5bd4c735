"""Comparing our `sacct --json` with real sacct's (unit tests on recorded output, live tests)."""

from __future__ import annotations


def differences(real, got, path: str = "") -> list[str]:
    """Every path where `got` differs from `real`: keys and their order, list lengths, types and
    values; but sacct's text keeps CPU times in milliseconds, so a `.../microseconds` of ours is
    compared with the real value cut to whole milliseconds."""
    if isinstance(real, dict) and isinstance(got, dict):
        out = [] if list(real) == list(got) else [f"{path}: keys {list(real)} != {list(got)}"]
        return out + [d for k in real if k in got for d in differences(real[k], got[k], f"{path}/{k}")]
    if isinstance(real, list) and isinstance(got, list):
        if len(real) != len(got):
            return [f"{path}: {len(real)} items != {len(got)}: {real} != {got}"]
        return [d for i, (a, b) in enumerate(zip(real, got, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    if path.endswith("/microseconds") and isinstance(real, int):
        real = real // 1000 * 1000
    return [] if type(real) is type(got) and real == got else [f"{path}: {real!r} != {got!r}"]
