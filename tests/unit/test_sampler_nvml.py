"""NvmlSource's error handling, scripted with pynvml's own exception classes.

The happy path and the fault switches run through the fake driver in
test_sampler_run.py; here every branch NVML can take is forced directly
(errors the fake driver cannot produce: NoPermission, Unknown on one call,
LibraryNotFound, bytes names from older pynvml releases).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from piqc_slurm.sampler.errors import NvmlUnavailable
from piqc_slurm.sampler.nvml import NvmlSource

pytestmark = pytest.mark.unit

MIB = 1 << 20


class FakeNvml:
    """The subset of the pynvml module NvmlSource uses; `fail` maps
    (function name, minor) -> exception to raise."""

    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, minors: list[int], *, init_error: Exception | None = None,
                 fail: dict[tuple[str, int], Exception] | None = None, names_as_bytes: bool = False):
        self.minors, self.init_error, self.fail = minors, init_error, fail or {}
        self.names_as_bytes = names_as_bytes
        self.calls: list[tuple[str, int]] = []
        self.shutdown = 0
        for name in dir(pynvml):
            if name.startswith("NVMLError"):
                setattr(self, name, getattr(pynvml, name))

    def _go(self, fn: str, h: int) -> None:
        self.calls.append((fn, h))
        err = self.fail.get((fn, h))
        if err is not None:
            raise err

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown += 1

    def nvmlSystemGetDriverVersion(self) -> Any:
        return b"535.1" if self.names_as_bytes else "535.1"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.minors)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return self.minors[i]          # the handle is the minor, for readable tests

    def nvmlDeviceGetMinorNumber(self, h: int) -> int:
        self._go("minor", h)
        return h

    def nvmlDeviceGetUUID(self, h: int) -> Any:
        self._go("uuid", h)
        return f"GPU-{h}".encode() if self.names_as_bytes else f"GPU-{h}"

    def nvmlDeviceGetName(self, h: int) -> Any:
        self._go("name", h)
        return b"Tesla T4" if self.names_as_bytes else "Tesla T4"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        self._go("memory", h)
        return SimpleNamespace(total=16 * 1024 * MIB, used=512 * MIB, free=0)

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        self._go("limit", h)
        return 70_000

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        self._go("util", h)
        return SimpleNamespace(gpu=42, memory=7)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._go("power", h)
        return 35_500

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._go("energy", h)
        return 123_456

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        assert clock == pynvml.NVML_CLOCK_SM
        self._go("clock", h)
        return 1590

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._go("temp", h)
        return 61

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        self._go("procs", h)
        return [SimpleNamespace(pid=4242, usedGpuMemory=1)]


def err(cls: type) -> Exception:
    return cls()


def test_reads_every_metric_by_minor() -> None:
    nv = FakeNvml([5, 2, 7])
    src = NvmlSource([7, 2], nvml=nv)
    src.open()
    assert list(src.devices) == [7, 2]
    d7 = src.devices[7]
    assert (d7.index, d7.uuid, d7.name, d7.mem_total_mib, d7.power_limit_w, d7.lost) == \
        (2, "GPU-7", "Tesla T4", 16384.0, 70.0, False)
    s = src.read(7)
    assert s is not None
    assert (s.util, s.mem_util, s.mem_used_mib, s.power_w, s.energy_mj, s.sm_clock_mhz, s.temp_c) == \
        (42.0, 7.0, 512.0, 35.5, 123456.0, 1590.0, 61.0)
    assert src.processes(2) == [4242]
    assert src.driver_version == "535.1"
    assert ("util", 5) not in nv.calls            # a GPU of another job is never read
    src.close()
    src.close()
    assert nv.shutdown == 1


def test_bytes_from_older_pynvml() -> None:
    src = NvmlSource([0], nvml=FakeNvml([0], names_as_bytes=True))
    src.open()
    assert (src.devices[0].name, src.devices[0].uuid, src.driver_version) == ("Tesla T4", "GPU-0", "535.1")


@pytest.mark.parametrize(("error", "words"), [
    (pynvml.NVMLError_LibraryNotFound, "library not found"),
    (pynvml.NVMLError_DriverNotLoaded, "driver not loaded"),
    (pynvml.NVMLError_Unknown, "nvmlinit failed"),
    (OSError, "nvmlinit failed"),
])
def test_init_failures_are_typed(error: type, words: str) -> None:
    src = NvmlSource([0], nvml=FakeNvml([0], init_error=err(error)))
    with pytest.raises(NvmlUnavailable) as info:
        src.open()
    assert words in info.value.reason.lower()


@pytest.mark.parametrize("error", [pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission,
                                   pynvml.NVMLError_FunctionNotFound])
def test_unsupported_metric_is_absent_and_not_asked_again(error: type) -> None:
    nv = FakeNvml([0], fail={("power", 0): err(error), ("energy", 0): err(error)})
    src = NvmlSource([0], nvml=nv)
    src.open()
    for _ in range(3):
        s = src.read(0)
        assert s is not None and s.power_w is None and s.energy_mj is None and s.util == 42.0
    assert nv.calls.count(("power", 0)) == 1 and nv.calls.count(("util", 0)) == 3
    assert not src.devices[0].lost


@pytest.mark.parametrize("error", [pynvml.NVMLError_GpuIsLost, pynvml.NVMLError_Unknown,
                                   pynvml.NVMLError_Timeout, ValueError])
def test_other_errors_lose_the_device_once(error: type, caplog: pytest.LogCaptureFixture) -> None:
    nv = FakeNvml([0, 1], fail={("clock", 1): err(error)})
    src = NvmlSource([0, 1], nvml=nv)
    src.open()
    with caplog.at_level(logging.WARNING, logger="piqc-slurm.sampler"):
        assert src.read(1) is None
        assert src.read(1) is None and src.processes(1) is None
    assert src.devices[1].lost and "SM clock" in (src.devices[1].error or "")
    assert sum("lost" in r.getMessage() for r in caplog.records) == 1
    assert nv.calls.count(("util", 1)) == 1       # skipped thereafter
    assert src.read(0) is not None                # the others go on


def test_unreadable_minor_leaves_the_job_gpu_lost_with_a_reason() -> None:
    nv = FakeNvml([0, 1], fail={("minor", 1): err(pynvml.NVMLError_GpuIsLost)})
    src = NvmlSource([0, 1, 9], nvml=nv)
    src.open()
    assert not src.devices[0].lost
    for m in (1, 9):
        d = src.devices[m]
        assert d.lost and d.index is None and f"minor {m} not found among 2" in (d.error or "")
        assert "GPU is lost" in (d.error or "")
        assert src.read(m) is None


def test_lost_while_describing() -> None:
    src = NvmlSource([0], nvml=FakeNvml([0], fail={("uuid", 0): err(pynvml.NVMLError_GpuIsLost)}))
    src.open()
    assert src.devices[0].lost and src.devices[0].index == 0


def test_processes_not_supported_is_unknown_not_none() -> None:
    src = NvmlSource([0], nvml=FakeNvml([0], fail={("procs", 0): err(pynvml.NVMLError_NotSupported)}))
    src.open()
    assert src.processes(0) is None
    assert not src.devices[0].lost
