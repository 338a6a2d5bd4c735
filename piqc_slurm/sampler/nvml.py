"""NvmlSource: the GPU source over the real pynvml (nvidia-ml-py).

Three kinds of failure, three reactions, because a monitoring agent must
never cost more than it observes:
- NVML itself unusable (no library, no driver, init error): NvmlUnavailable,
  monitoring is off for the job and the reason is recorded.
- A metric the device does not offer (NotSupported, and the alike
  NoPermission / FunctionNotFound): that field is None from then on and is
  not asked again; the rest of the device goes on.
- Anything else on a device (GPU_IS_LOST, Unknown, ...): the device is
  marked lost, logged once and skipped thereafter; what was aggregated so
  far is kept by the caller.

GPUs are matched to the job by minor number (nvmlDeviceGetMinorNumber), never
by position: NVML's enumeration order is not /dev/nvidia<N> order.

GPM (Hopper and newer): where nvmlGpmQueryDeviceSupport says so, each read
also takes a GPM sample and computes SM_UTIL, SM_OCCUPANCY, ANY_TENSOR_UTIL
and DRAM_BW_UTIL against the previous sample (at least GPM_MIN_GAP apart),
so a value covers the time since the previous read, the same span the
aggregate weights it by. GPM is extra evidence and never costs the device:
a metric whose per-metric result is not success is None in that Sample; a
device without GPM is not asked again; any GPM exception disables GPM for
that device (logged once) and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pynvml

from piqc_slurm.sampler.aggregate import Sample
from piqc_slurm.sampler.errors import NvmlUnavailable
from piqc_slurm.sampler.source import DeviceInfo

log = logging.getLogger("piqc-slurm.sampler")

MIB = 1 << 20

GPM_MIN_GAP = 0.1
"""Seconds two GPM samples must be apart for nvmlGpmMetricsGet to mean anything."""

# (pynvml constant, Sample field), in the order of the metrics request.
_GPM_METRICS = (("NVML_GPM_METRIC_SM_UTIL", "sm_active"),
                ("NVML_GPM_METRIC_SM_OCCUPANCY", "sm_occupancy"),
                ("NVML_GPM_METRIC_ANY_TENSOR_UTIL", "tensor_active"),
                ("NVML_GPM_METRIC_DRAM_BW_UTIL", "dram_active"))


class _Lost(Exception):
    """Internal: a per-device call failed in a way that ends the device."""


class _Gpm:
    """One device's GPM state: two sample buffers (previous, scratch), the time
    of the previous sample, and a metrics request reused on every read."""

    __slots__ = ("prev", "cur", "prev_t", "request")

    def __init__(self, prev: Any, cur: Any, prev_t: float, request: Any):
        self.prev, self.cur, self.prev_t, self.request = prev, cur, prev_t, request


def _text(value: Any) -> str:
    # pynvml returns bytes from older releases and str from newer ones.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Reads the GPUs of one job through NVML.

    `nvml` is the pynvml module (injectable so unit tests can script error
    paths with pynvml's own exception classes); `clock` the monotonic clock
    that spaces GPM samples.
    """

    def __init__(self, minors: Iterable[int], *, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self._nvml = pynvml if nvml is None else nvml
        self._clock = clock
        self._gpm: dict[int, _Gpm] = {}
        self._minors = list(dict.fromkeys(int(m) for m in minors))
        self._devices: dict[int, DeviceInfo] = {m: DeviceInfo(minor=m) for m in self._minors}
        self._handles: dict[int, Any] = {}
        self._unsupported: dict[int, set[str]] = {m: set() for m in self._minors}
        self._open = False
        self.driver_version: str | None = None
        N = self._nvml
        self._soft = (N.NVMLError_NotSupported, N.NVMLError_NoPermission, N.NVMLError_FunctionNotFound)

    @property
    def devices(self) -> Mapping[int, DeviceInfo]:
        return self._devices

    # ---- lifecycle ----

    def open(self) -> None:
        """Initialise NVML and map the job's minors to handles."""
        N = self._nvml
        try:
            N.nvmlInit()
        except N.NVMLError_LibraryNotFound as e:
            raise NvmlUnavailable(f"NVML library not found (libnvidia-ml.so.1): {e}") from e
        except N.NVMLError_DriverNotLoaded as e:
            raise NvmlUnavailable(f"NVIDIA driver not loaded: {e}") from e
        except Exception as e:  # noqa: BLE001 - any init failure means no monitoring
            raise NvmlUnavailable(f"nvmlInit failed: {type(e).__name__}: {e}") from e
        self._open = True
        try:
            self.driver_version = _text(N.nvmlSystemGetDriverVersion())
        except Exception:  # noqa: BLE001 - informational only
            self.driver_version = None
        try:
            count = int(N.nvmlDeviceGetCount())
        except Exception as e:  # noqa: BLE001
            self.close()
            raise NvmlUnavailable(f"nvmlDeviceGetCount failed: {e}") from e
        failures: list[str] = []
        for index in range(count):
            try:
                handle = N.nvmlDeviceGetHandleByIndex(index)
                minor = int(N.nvmlDeviceGetMinorNumber(handle))
            except Exception as e:  # noqa: BLE001 - a broken device must not stop the others
                failures.append(f"index {index}: {e}")
                continue
            dev = self._devices.get(minor)
            if dev is None or minor in self._handles:
                continue
            self._handles[minor] = handle
            dev.index = index
            try:
                self._describe(dev, handle)
            except _Lost as e:
                self._mark_lost(dev, str(e))
            else:
                self._gpm_open(dev, handle)
        for minor, dev in self._devices.items():
            if minor not in self._handles and not dev.lost:
                why = f"minor {minor} not found among {count} NVML devices"
                if failures:
                    why += " (unreadable: " + "; ".join(failures) + ")"
                self._mark_lost(dev, why)

    def close(self) -> None:
        for minor in list(self._gpm):
            self._gpm_free(minor)
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass

    # ---- per-device calls ----

    def _call(self, dev: DeviceInfo, what: str, fn: Any, *args: Any) -> Any:
        """fn(*args), or None when the device does not support it; _Lost otherwise."""
        unsupported = self._unsupported[dev.minor]
        if what in unsupported:
            return None
        try:
            return fn(*args)
        except self._soft as e:
            unsupported.add(what)
            log.info("GPU minor %d: %s not available (%s); reported as absent", dev.minor, what, e)
            return None
        except Exception as e:  # noqa: BLE001 - see module docstring
            raise _Lost(f"{what}: {type(e).__name__}: {e}") from e

    def _describe(self, dev: DeviceInfo, h: Any) -> None:
        N = self._nvml
        uuid = self._call(dev, "uuid", N.nvmlDeviceGetUUID, h)
        name = self._call(dev, "name", N.nvmlDeviceGetName, h)
        dev.uuid = None if uuid is None else _text(uuid)
        dev.name = None if name is None else _text(name)
        mem = self._call(dev, "memory total", N.nvmlDeviceGetMemoryInfo, h)
        dev.mem_total_mib = None if mem is None else round(mem.total / MIB, 3)
        limit = self._call(dev, "power limit", N.nvmlDeviceGetPowerManagementLimit, h)
        dev.power_limit_w = None if limit is None else limit / 1000.0

    def _mark_lost(self, dev: DeviceInfo, why: str) -> None:
        if not dev.lost:
            dev.lost, dev.error = True, why
            log.warning("GPU minor %d: lost, no longer sampled: %s", dev.minor, why)
        self._gpm_free(dev.minor)

    # ---- GPM ----

    def _gpm_open(self, dev: DeviceInfo, h: Any) -> None:
        """Set GPM up for a device that offers it, with a first sample taken now."""
        N = self._nvml
        samples: list[Any] = []
        try:
            if not N.nvmlGpmQueryDeviceSupport(h).isSupportedDevice:
                log.info("GPU minor %d: no GPM; SM/tensor/DRAM activity reported as absent", dev.minor)
                return
            request = N.c_nvmlGpmMetricsGet_t()
            request.version = N.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(_GPM_METRICS)
            for i, (const, _) in enumerate(_GPM_METRICS):
                request.metrics[i].metricId = getattr(N, const)
            samples.append(N.nvmlGpmSampleAlloc())
            samples.append(N.nvmlGpmSampleAlloc())
            N.nvmlGpmSampleGet(h, samples[0])
            self._gpm[dev.minor] = _Gpm(samples[0], samples[1], self._clock(), request)
        except Exception as e:  # noqa: BLE001 - GPM is optional evidence, never fatal
            log.info("GPU minor %d: GPM unavailable (%s: %s); SM/tensor/DRAM activity reported as absent",
                     dev.minor, type(e).__name__, e)
            for sample in samples:
                self._gpm_sample_free(sample)

    def _gpm_sample_free(self, sample: Any) -> None:
        try:
            self._nvml.nvmlGpmSampleFree(sample)
        except Exception:  # noqa: BLE001 - freeing anyway
            pass

    def _gpm_free(self, minor: int) -> None:
        g = self._gpm.pop(minor, None)
        if g is not None:
            self._gpm_sample_free(g.prev)
            self._gpm_sample_free(g.cur)

    def _gpm_read(self, minor: int, h: Any) -> dict[str, float | None]:
        """This read's GPM metrics as fractions (None: not measured); {} without GPM."""
        g = self._gpm.get(minor)
        if g is None:
            return {}
        now = self._clock()
        if now - g.prev_t < GPM_MIN_GAP:
            return {}       # too close to the previous sample: this read has no GPM values
        N, req = self._nvml, g.request
        try:
            N.nvmlGpmSampleGet(h, g.cur)
            req.sample1, req.sample2 = g.prev, g.cur
            N.nvmlGpmMetricsGet(req)
            out: dict[str, float | None] = {}
            for i, (_, field) in enumerate(_GPM_METRICS):
                m = req.metrics[i]
                out[field] = m.value / 100.0 if m.nvmlReturn == N.NVML_SUCCESS else None
        except Exception as e:  # noqa: BLE001 - see the module docstring
            log.warning("GPU minor %d: GPM failed (%s: %s); GPM off for this device, the rest goes on",
                        minor, type(e).__name__, e)
            self._gpm_free(minor)
            return {}
        g.prev, g.cur, g.prev_t = g.cur, g.prev, now
        return out

    def read(self, minor: int) -> Sample | None:
        """Read every metric of one GPU; None once the device is lost."""
        dev = self._devices[minor]
        if dev.lost:
            return None
        N, h = self._nvml, self._handles[minor]
        try:
            rates = self._call(dev, "utilization", N.nvmlDeviceGetUtilizationRates, h)
            mem = self._call(dev, "memory", N.nvmlDeviceGetMemoryInfo, h)
            power = self._call(dev, "power", N.nvmlDeviceGetPowerUsage, h)
            energy = self._call(dev, "energy", N.nvmlDeviceGetTotalEnergyConsumption, h)
            sm = self._call(dev, "SM clock", N.nvmlDeviceGetClockInfo, h, N.NVML_CLOCK_SM)
            temp = self._call(dev, "temperature", N.nvmlDeviceGetTemperature, h,
                              N.NVML_TEMPERATURE_GPU)
        except _Lost as e:
            self._mark_lost(dev, str(e))
            return None
        gpm = self._gpm_read(minor, h)
        return Sample(
            util=None if rates is None else float(rates.gpu),
            mem_util=None if rates is None else float(rates.memory),
            mem_used_mib=None if mem is None else mem.used / MIB,
            power_w=None if power is None else power / 1000.0,
            energy_mj=None if energy is None else float(energy),
            sm_clock_mhz=None if sm is None else float(sm),
            temp_c=None if temp is None else float(temp),
            **gpm,
        )

    def processes(self, minor: int) -> list[int] | None:
        """Pids of compute processes; None when lost or not supported (unknown, not "none")."""
        dev = self._devices[minor]
        if dev.lost:
            return None
        try:
            procs = self._call(dev, "processes", self._nvml.nvmlDeviceGetComputeRunningProcesses,
                               self._handles[minor])
        except _Lost as e:
            self._mark_lost(dev, str(e))
            return None
        return None if procs is None else [int(p.pid) for p in procs]
