"""NvmlSource's error handling, scripted with pynvml's own exception classes.

The happy path and the fault switches run through the fake driver in
test_sampler_run.py; here every branch NVML can take is forced directly
(errors the fake driver cannot produce: NoPermission, Unknown on one call,
LibraryNotFound, bytes names from older pynvml releases), GPM included
(SM_OCCUPANCY values, GPM calls that fail, sample spacing, freeing).
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


class GpmRequest:
    """Stands in for pynvml.c_nvmlGpmMetricsGet_t (whose sample fields only take ctypes pointers)."""

    def __init__(self) -> None:
        self.version = self.numMetrics = 0
        self.sample1 = self.sample2 = None
        self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=-1, value=-1.0) for _ in range(8)]


class FakeNvml:
    """The subset of the pynvml module NvmlSource uses; `fail` maps
    (function name, minor) -> exception to raise. `gpm` maps a minor with GPM
    to {metric id: percent, or an NVML return code as int for a per-metric
    failure}; a minor not in it has no GPM (isSupportedDevice 0)."""

    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_SM_UTIL = pynvml.NVML_GPM_METRIC_SM_UTIL
    NVML_GPM_METRIC_SM_OCCUPANCY = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    NVML_GPM_METRIC_DRAM_BW_UTIL = pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
    c_nvmlGpmMetricsGet_t = GpmRequest

    def __init__(self, minors: list[int], *, init_error: Exception | None = None,
                 fail: dict[tuple[str, int], Exception] | None = None, names_as_bytes: bool = False,
                 gpm: dict[int, dict[int, float | int]] | None = None,
                 fail_n: dict[tuple[str, int], tuple[Exception, int]] | None = None):
        self.minors, self.init_error, self.fail = minors, init_error, fail or {}
        self.fail_n = dict(fail_n or {})      # (function, minor) -> (exception, how many more calls fail)
        self.names_as_bytes = names_as_bytes
        self.gpm = gpm or {}
        self.calls: list[tuple[str, int]] = []
        self.shutdown = 0
        self.allocated: list[SimpleNamespace] = []
        self.freed: list[SimpleNamespace] = []
        self.requests: list[tuple[int, ...]] = []     # metric ids of each nvmlGpmMetricsGet
        for name in dir(pynvml):
            if name.startswith("NVMLError"):
                setattr(self, name, getattr(pynvml, name))

    def _go(self, fn: str, h: int) -> None:
        self.calls.append((fn, h))
        err = self.fail.get((fn, h))
        if err is not None:
            raise err
        left = self.fail_n.get((fn, h))
        if left is not None and left[1] > 0:
            self.fail_n[(fn, h)] = (left[0], left[1] - 1)
            raise left[0]

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

    def nvmlGpmQueryDeviceSupport(self, h: int) -> Any:
        self._go("gpm support", h)
        return SimpleNamespace(version=1, isSupportedDevice=int(h in self.gpm))

    def nvmlGpmSampleAlloc(self) -> Any:
        sample = SimpleNamespace(n=len(self.allocated), h=None, taken=0)
        self.allocated.append(sample)
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        assert sample in self.allocated and sample not in self.freed, "double or foreign free"
        self.freed.append(sample)

    def nvmlGpmSampleGet(self, h: int, sample: Any) -> Any:
        assert sample not in self.freed, "use after free"
        self._go("gpm sample", h)
        if h not in self.gpm:
            raise pynvml.NVMLError_NotSupported()
        sample.h, sample.taken = h, sample.taken + 1
        return sample

    def nvmlGpmMetricsGet(self, req: GpmRequest) -> GpmRequest:
        s1, s2 = req.sample1, req.sample2
        assert req.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        assert s1 is not s2 and s1.h == s2.h is not None and s1 not in self.freed and s2 not in self.freed
        self._go("gpm metrics", s1.h)
        ids = tuple(req.metrics[i].metricId for i in range(req.numMetrics))
        self.requests.append(ids)
        for i, mid in enumerate(ids):
            v = self.gpm[s1.h].get(mid, pynvml.NVML_ERROR_NOT_SUPPORTED)
            m = req.metrics[i]
            if isinstance(v, int):
                m.nvmlReturn, m.value = v, 0.0
            else:
                m.nvmlReturn, m.value = pynvml.NVML_SUCCESS, v
        return req


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


@pytest.mark.parametrize("error", [pynvml.NVMLError_GpuIsLost, pynvml.NVMLError_GpuNotFound,
                                   pynvml.NVMLError_ResetRequired, pynvml.NVMLError_LibRmVersionMismatch])
def test_gone_for_good_errors_lose_the_device_at_once(error: type, caplog: pytest.LogCaptureFixture) -> None:
    nv = FakeNvml([0, 1], fail={("clock", 1): err(error)})
    src = NvmlSource([0, 1], nvml=nv)
    src.open()
    with caplog.at_level(logging.WARNING, logger="piqc-slurm.sampler"):
        assert src.read(1) is None
        assert src.read(1) is None and src.processes(1) is None
    d = src.devices[1]
    assert d.lost and "SM clock" in (d.error or "") and error.__name__ in (d.error or "")
    assert (d.errors, d.skipped) == (0, 0)        # not a retried error: lost at the first
    assert sum("lost" in r.getMessage() for r in caplog.records) == 1
    assert nv.calls.count(("util", 1)) == 1       # skipped thereafter
    assert src.read(0) is not None                # the others go on


# The reads (0, 1, 2, ...) that try a device failing on every call, skipping 1, 2, 4, 8 reads
# after the 1st, 2nd, 3rd, 4th failure: 0, 0+1+1, 2+2+1, 5+4+1, 10+8+1.
TRIED_UNTIL_LOST = [0, 2, 5, 10, 19]


@pytest.mark.parametrize("error", [pynvml.NVMLError_Unknown, pynvml.NVMLError_Timeout,
                                   pynvml.NVMLError_IrqIssue, ValueError])
def test_other_errors_are_retried_with_backoff_and_lose_the_device_after_max_errors(
        error: type, caplog: pytest.LogCaptureFixture) -> None:
    nv = FakeNvml([0, 1], fail={("clock", 1): err(error)})
    src = NvmlSource([0, 1], nvml=nv, max_errors=5)
    src.open()
    tried = []
    with caplog.at_level(logging.INFO, logger="piqc-slurm.sampler"):
        for i in range(30):
            before = nv.calls.count(("util", 1))
            assert src.read(1) is None
            if nv.calls.count(("util", 1)) > before:
                tried.append(i)
            if i < 19:
                assert not src.devices[1].lost, i
            assert src.read(0) is not None          # the other device is read every time
    assert tried == TRIED_UNTIL_LOST
    d = src.devices[1]
    assert d.lost and d.error and d.error.startswith("5 NVML errors in a row, last: SM clock: ")
    assert (d.errors, d.skipped) == (5, 20)         # reads 0..19 gave no sample
    assert "SM clock" in (d.last_error or "")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("skipped for" in m for m in msgs) == 4 and sum("lost, no longer" in m for m in msgs) == 1


def test_backoff_is_capped() -> None:
    nv = FakeNvml([0], fail={("util", 0): err(pynvml.NVMLError_Unknown)})
    src = NvmlSource([0], nvml=nv, max_errors=100, backoff_cap=4)
    src.open()
    tried = []
    for i in range(30):
        before = nv.calls.count(("util", 0))
        src.read(0)
        if nv.calls.count(("util", 0)) > before:
            tried.append(i)
    # skips of 1, 2, 4, then 4 (the cap) between tries
    assert tried == [0, 2, 5, 10, 15, 20, 25]
    assert not src.devices[0].lost and src.devices[0].errors == 7


def test_a_device_that_recovers_is_sampled_again(caplog: pytest.LogCaptureFixture) -> None:
    nv = FakeNvml([0, 1], fail_n={("util", 1): (err(pynvml.NVMLError_Unknown), 2)})
    src = NvmlSource([0, 1], nvml=nv, max_errors=3)
    src.open()
    with caplog.at_level(logging.INFO, logger="piqc-slurm.sampler"):
        got = [src.read(1) for _ in range(12)]
    # read 0 fails (skip 1), read 2 fails (skip 2), read 5 and every later one samples
    assert [s is not None for s in got] == [False] * 5 + [True] * 7
    assert got[5] is not None and got[5].util == 42.0
    d = src.devices[1]
    assert not d.lost and d.error is None
    assert (d.errors, d.skipped) == (2, 5) and "utilization" in (d.last_error or "")
    assert sum("readable again" in r.getMessage() for r in caplog.records) == 1
    # a later failure starts a new run of errors: max_errors counts failures in a row only
    nv.fail_n[("util", 1)] = (err(pynvml.NVMLError_Unknown), 2)
    got = [src.read(1) for _ in range(8)]
    assert [s is not None for s in got] == [False] * 5 + [True] * 3
    assert not d.lost and (d.errors, d.skipped) == (4, 10)


def test_processes_while_backing_off_are_unknown_and_their_errors_count() -> None:
    nv = FakeNvml([0], fail_n={("procs", 0): (err(pynvml.NVMLError_Unknown), 1)})
    src = NvmlSource([0], nvml=nv, max_errors=2)
    src.open()
    assert src.processes(0) is None                 # failed: unknown, one error, no sample lost
    d = src.devices[0]
    assert (d.errors, d.skipped, d.lost) == (1, 0, False)
    assert src.processes(0) is None                 # backing off: not asked
    assert nv.calls.count(("procs", 0)) == 1
    assert src.read(0) is None and d.skipped == 1   # the backoff skips a read
    assert src.read(0) is not None and src.processes(0) == [4242]
    assert not d.lost


def test_a_device_unreadable_at_open_is_looked_up_again() -> None:
    nv = FakeNvml([0, 1], fail_n={("minor", 1): (err(pynvml.NVMLError_Unknown), 2)})
    src = NvmlSource([1, 0], nvml=nv)
    src.open()
    d = src.devices[1]
    assert not d.lost and d.index is None and d.errors == 1
    assert "minor 1 not found among 2" in (d.last_error or "") and "index 1" in (d.last_error or "")
    # open's failure: skip read 0; read 1 fails again (skip 2); read 4 finds and describes it
    got = [src.read(1) for _ in range(6)]
    assert [s is not None for s in got] == [False] * 4 + [True] * 2
    assert (d.index, d.uuid, d.name, d.power_limit_w) == (1, "GPU-1", "Tesla T4", 70.0)
    assert (d.errors, d.skipped, d.lost) == (2, 4, False)


def test_a_minor_never_found_is_lost_when_nothing_is_left_to_retry() -> None:
    nv = FakeNvml([0, 1], fail_n={("minor", 1): (err(pynvml.NVMLError_Unknown), 1)})
    src = NvmlSource([0, 7], nvml=nv)
    src.open()
    assert not src.devices[7].lost                   # index 1 could have been minor 7
    assert src.read(7) is None                       # backing off
    assert src.read(7) is None                       # index 1 read again: minor 1, not ours
    d = src.devices[7]
    assert d.lost and "minor 7 not found among 2" in (d.error or "")


def test_description_failing_at_open_is_retried() -> None:
    nv = FakeNvml([0], fail_n={("uuid", 0): (err(pynvml.NVMLError_Timeout), 1)})
    src = NvmlSource([0], nvml=nv)
    src.open()
    d = src.devices[0]
    assert not d.lost and d.uuid is None and d.errors == 1
    assert src.read(0) is None                       # skipped once
    assert src.read(0) is not None and d.uuid == "GPU-0" and d.mem_total_mib == 16384.0


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


# ---------------------------------------------------------------------------
# GPM
# ---------------------------------------------------------------------------

SM, OCC, TENSOR, DRAM = (pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
                         pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL)
GPM_FIELDS = ("sm_active", "sm_occupancy", "tensor_active", "dram_active")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def gpm_of(s: Any) -> tuple[Any, ...]:
    return tuple(getattr(s, f) for f in GPM_FIELDS)


def test_gpm_metrics_as_fractions_from_sample_pairs() -> None:
    clock = Clock()
    nv = FakeNvml([0, 1], gpm={0: {SM: 30.0, OCC: 62.5, TENSOR: 10.0, DRAM: 50.0}})
    src = NvmlSource([0, 1], nvml=nv, clock=clock)
    src.open()
    assert gpm_of(src.read(0)) == (None,) * 4      # right after open: < 100 ms since the first sample
    clock.t += 1.0
    assert gpm_of(src.read(0)) == (0.3, 0.625, 0.1, 0.5)
    assert nv.requests == [(SM, OCC, TENSOR, DRAM)]
    clock.t += 0.05                                 # too soon: no sample taken, none computed
    assert gpm_of(src.read(0)) == (None,) * 4
    clock.t += 0.06
    assert gpm_of(src.read(0)) == (0.3, 0.625, 0.1, 0.5)
    assert nv.calls.count(("gpm sample", 0)) == 3   # open, then one per computed read
    assert gpm_of(src.read(1)) == (None,) * 4       # no GPM on minor 1
    assert ("gpm sample", 1) not in nv.calls and len(nv.allocated) == 2
    src.close()
    assert len(nv.freed) == 2 and nv.shutdown == 1


def test_gpm_per_metric_failure_is_absent_for_that_metric_only() -> None:
    clock = Clock()
    nv = FakeNvml([0], gpm={0: {SM: 80.0, OCC: pynvml.NVML_ERROR_NOT_SUPPORTED, TENSOR: 0.0,
                                DRAM: pynvml.NVML_ERROR_UNKNOWN}})
    src = NvmlSource([0], nvml=nv, clock=clock)
    src.open()
    for _ in range(3):
        clock.t += 1.0
        assert gpm_of(src.read(0)) == (0.8, None, 0.0, None)   # 0 is measured, not absent
    assert len(nv.requests) == 3 and not src.devices[0].lost


def test_no_gpm_device_is_not_asked_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    nv = FakeNvml([0])
    src = NvmlSource([0], nvml=nv, clock=clock)
    with caplog.at_level(logging.INFO, logger="piqc-slurm.sampler"):
        src.open()
        for _ in range(3):
            clock.t += 1.0
            s = src.read(0)
            assert s is not None and s.util == 42.0 and gpm_of(s) == (None,) * 4
    assert nv.calls.count(("gpm support", 0)) == 1 and ("gpm sample", 0) not in nv.calls
    assert nv.allocated == []
    assert sum("no GPM" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("error", [pynvml.NVMLError_FunctionNotFound,    # an older driver
                                   pynvml.NVMLError_GpuIsLost, RuntimeError])
def test_gpm_support_query_failure_means_no_gpm(error: type) -> None:
    clock = Clock()
    nv = FakeNvml([0], gpm={0: {SM: 40.0}}, fail={("gpm support", 0): err(error)})
    src = NvmlSource([0], nvml=nv, clock=clock)
    src.open()
    clock.t += 1.0
    s = src.read(0)
    assert s is not None and s.util == 42.0 and gpm_of(s) == (None,) * 4
    assert not src.devices[0].lost and nv.allocated == [] and ("gpm sample", 0) not in nv.calls


@pytest.mark.parametrize(("where", "error"), [
    ("gpm sample", pynvml.NVMLError_NotSupported),         # said supported, then is not
    ("gpm sample", pynvml.NVMLError_Unknown),
    ("gpm sample", pynvml.NVMLError_GpuIsLost),
    ("gpm metrics", pynvml.NVMLError_InvalidArgument),
    ("gpm metrics", RuntimeError),
])
def test_gpm_errors_turn_gpm_off_for_that_device_only(where: str, error: type,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    values = {SM: 40.0, TENSOR: 20.0}
    nv = FakeNvml([0, 1], gpm={0: values, 1: values})
    src = NvmlSource([0, 1], nvml=nv, clock=clock)
    src.open()
    nv.fail[(where, 0)] = err(error)               # from the first read on, not at open
    before = nv.calls.count((where, 0))
    with caplog.at_level(logging.INFO, logger="piqc-slurm.sampler"):
        for _ in range(3):
            clock.t += 1.0
            s = src.read(0)
            assert s is not None and s.util == 42.0 and gpm_of(s) == (None,) * 4
            assert gpm_of(src.read(1)) == (0.4, None, 0.2, None)     # the other device keeps GPM
    assert not src.devices[0].lost
    assert nv.calls.count((where, 0)) == before + 1               # not tried again
    assert sum("GPM off" in r.getMessage() and "minor 0" in r.getMessage() for r in caplog.records) == 1
    assert {x.n for x in nv.freed} == {0, 1}                     # minor 0's pair freed at once
    src.close()
    assert len(nv.freed) == len(nv.allocated) == 4


def test_gpm_samples_freed_when_the_device_is_lost() -> None:
    clock = Clock()
    nv = FakeNvml([0], gpm={0: {SM: 40.0}})
    src = NvmlSource([0], nvml=nv, clock=clock)
    src.open()
    clock.t += 1.0
    assert gpm_of(src.read(0))[0] == 0.4
    nv.fail[("util", 0)] = err(pynvml.NVMLError_GpuIsLost)
    assert src.read(0) is None and src.devices[0].lost
    assert len(nv.freed) == 2
    src.close()
    assert len(nv.freed) == 2                       # not freed twice


def test_gpm_alloc_failure_frees_what_was_allocated() -> None:
    nv = FakeNvml([0], gpm={0: {SM: 40.0}})
    real_alloc = nv.nvmlGpmSampleAlloc
    calls = []

    def alloc() -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise pynvml.NVMLError_Memory()
        return real_alloc()

    nv.nvmlGpmSampleAlloc = alloc  # type: ignore[method-assign]
    src = NvmlSource([0], nvml=nv, clock=Clock())
    src.open()
    assert len(nv.allocated) == 1 and nv.freed == nv.allocated
    assert src.read(0) is not None and not src.devices[0].lost
