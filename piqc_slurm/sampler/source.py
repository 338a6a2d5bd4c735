"""What the sampler loop needs from a GPU source, without NVML.

The loop (run.py) talks to any object of this shape; NvmlSource (nvml.py)
is the production one, and tests hand in a scripted one, so the loop's
scheduling, attribution and checkpointing are tested without a driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from piqc_slurm.sampler.aggregate import Sample


@dataclass
class DeviceInfo:
    """Static facts of one GPU of the job, and whether it can still be read.

    Keyed by the device MINOR number (/dev/nvidia<minor>, what Slurm's gres
    hands out): NVML's index and the minor can differ on real nodes.

    `lost` with `error`: the device is no longer read. `errors` counts NVML
    failures that were retried (a device that recovered has errors > 0 and
    lost false), `skipped` the reads that gave no sample because of them
    (failed, or skipped while backing off), `last_error` the latest message.
    """

    minor: int
    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    mem_total_mib: float | None = None
    power_limit_w: float | None = None
    lost: bool = False
    error: str | None = None
    errors: int = 0
    skipped: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GpuSource(Protocol):
    """A source of GPU readings for a fixed set of minors."""

    driver_version: str | None

    @property
    def devices(self) -> Mapping[int, DeviceInfo]:
        """Every minor of the job, found or not, in the job's order."""
        ...

    def open(self) -> None:
        """Start talking to the driver; raise NvmlUnavailable when it cannot."""
        ...

    def read(self, minor: int) -> Sample | None:
        """One reading; None when the device is lost or failing (its DeviceInfo says why)."""
        ...

    def processes(self, minor: int) -> list[int] | None:
        """Pids of compute processes on the device; None when that is unknown."""
        ...

    def close(self) -> None:
        ...
