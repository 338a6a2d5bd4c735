"""NvmlSource: the GPU source over the real pynvml (nvidia-ml-py).

Three kinds of failure, three reactions, because a monitoring agent must
never cost more than it observes:
- NVML itself unusable (no library, no driver, init error): NvmlUnavailable,
  monitoring is off for the job and the reason is recorded.
- A metric the device does not offer (NotSupported, and the alike
  NoPermission / FunctionNotFound): that field is None from then on and is
  not asked again; the rest of the device goes on.
- A device that is gone for good (GPU_IS_LOST, GPU_NOT_FOUND,
  RESET_REQUIRED, LIB_RM_VERSION_MISMATCH: nvml.h's words for a GPU that
  fell off the bus, is not there, needs a reset or a driver that no longer
  matches this process's library): the device is marked lost at once,
  logged once and skipped thereafter; what was aggregated so far is kept by
  the caller.
- Any other error on a device (Unknown, Timeout, IrqIssue, Memory, ...) is
  taken as a hiccup: the device is skipped for 1, 2, 4, ... reads (capped at
  `backoff_cap`) and tried again; only `max_errors` failures in a row mark
  it lost. Its DeviceInfo counts the errors (`errors`), the reads that
  produced no sample because of them (`skipped`) and the last message
  (`last_error`). A failure at open (enumeration, description) is retried
  the same way on later reads.

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


MAX_ERRORS = 5
"""Failures in a row after which a device that keeps failing counts as lost."""

BACKOFF_CAP = 8
"""Most reads a failing device is skipped for between two tries."""

# pynvml error classes that mean the device is gone for good (see the module docstring).
_FATAL_ERRORS = ("NVMLError_GpuIsLost", "NVMLError_GpuNotFound", "NVMLError_ResetRequired",
                 "NVMLError_LibRmVersionMismatch")

WARN_ERRORS = 10
"""Errors per device logged as warnings; later ones at debug level (a flapping device must not flood syslog)."""


class _Lost(Exception):
    """Internal: a per-device call failed in a way that ends the device."""


class _Failed(Exception):
    """Internal: a per-device call failed in a way worth retrying."""


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
    that spaces GPM samples; `max_errors` the failures in a row that lose a
    device, `backoff_cap` the most reads it is skipped for between tries.
    """

    def __init__(self, minors: Iterable[int], *, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_errors: int = MAX_ERRORS, backoff_cap: int = BACKOFF_CAP):
        self._nvml = pynvml if nvml is None else nvml
        self._clock = clock
        self._max_errors = max(1, int(max_errors))
        self._backoff_cap = max(1, int(backoff_cap))
        self._gpm: dict[int, _Gpm] = {}
        self._minors = list(dict.fromkeys(int(m) for m in minors))
        self._devices: dict[int, DeviceInfo] = {m: DeviceInfo(minor=m) for m in self._minors}
        self._handles: dict[int, Any] = {}
        self._unsupported: dict[int, set[str]] = {m: set() for m in self._minors}
        self._streak: dict[int, int] = {m: 0 for m in self._minors}     # failures in a row
        self._skip: dict[int, int] = {m: 0 for m in self._minors}       # reads left to skip
        self._undescribed: set[int] = set()        # found, but its description failed: retried
        self._retry_indices: dict[int, str] = {}   # NVML index -> why it could not be read (retried)
        self._unreadable: list[str] = []           # NVML indices gone for good, and why
        self._count = 0
        self._open = False
        self.driver_version: str | None = None
        N = self._nvml
        self._soft = (N.NVMLError_NotSupported, N.NVMLError_NoPermission, N.NVMLError_FunctionNotFound)
        self._fatal = tuple(c for c in (getattr(N, name, None) for name in _FATAL_ERRORS)
                            if isinstance(c, type))

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
        self._count = count
        for index in range(count):
            try:
                minor = self._map_index(index)
                if minor is not None:
                    self._take_on(self._devices[minor])
            except _Failed as e:   # worth another try: the minor may be one of ours
                self._retry_indices[index] = str(e)
            except _Lost as e:     # a broken device must not stop the others
                self._unreadable.append(f"index {index}: {e}")
        for minor, dev in self._devices.items():
            if minor in self._handles or dev.lost:
                continue
            if self._retry_indices:
                self._failed(dev, self._not_found(minor), read=False)
            else:
                self._mark_lost(dev, self._not_found(minor))

    def _not_found(self, minor: int) -> str:
        why = f"minor {minor} not found among {self._count} NVML devices"
        if self._retry_indices:
            why += " (failing: " + "; ".join(f"index {i}: {e}" for i, e in self._retry_indices.items()) + ")"
        if self._unreadable:
            why += " (unreadable: " + "; ".join(self._unreadable) + ")"
        return why

    def _map_index(self, index: int) -> int | None:
        """Look NVML device `index` up; the minor when it is one of the job's not yet found, else None."""
        N = self._nvml
        try:
            handle = N.nvmlDeviceGetHandleByIndex(index)
            minor = int(N.nvmlDeviceGetMinorNumber(handle))
        except Exception as e:  # noqa: BLE001 - classified: gone for good, or worth a retry
            raise (_Lost if isinstance(e, self._fatal) else _Failed)(f"{type(e).__name__}: {e}") from e
        dev = self._devices.get(minor)
        if dev is None or minor in self._handles:
            return None
        self._handles[minor] = handle
        dev.index = index
        self._undescribed.add(minor)
        return minor

    def _take_on(self, dev: DeviceInfo) -> None:
        """At open: describe a found device and set GPM up; a failure to describe is retried later."""
        try:
            self._describe(dev, self._handles[dev.minor])
        except _Lost as e:
            self._mark_lost(dev, str(e))
        except _Failed as e:
            self._failed(dev, str(e), read=False)
        else:
            self._undescribed.discard(dev.minor)
            self._gpm_open(dev, self._handles[dev.minor])

    def _find(self, dev: DeviceInfo) -> None:
        """Retry the NVML indices that failed at open until dev's minor turns up; _Failed while
        some index still fails, _Lost when none is left to try."""
        for index in list(self._retry_indices):
            try:
                self._map_index(index)
            except _Failed as e:
                self._retry_indices[index] = str(e)
                continue
            except _Lost as e:
                self._unreadable.append(f"index {index}: {e}")
            del self._retry_indices[index]
            if dev.minor in self._handles:
                return
        raise (_Failed if self._retry_indices else _Lost)(self._not_found(dev.minor))

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
        """fn(*args), or None when the device does not support it; _Lost when the
        device is gone for good, _Failed for any other error."""
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
            raise (_Lost if isinstance(e, self._fatal) else _Failed)(f"{what}: {type(e).__name__}: {e}") from e

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

    def _failed(self, dev: DeviceInfo, why: str, *, read: bool = True) -> None:
        """A failure worth retrying: count it, back off, or lose the device after max_errors in a row."""
        m = dev.minor
        dev.errors += 1
        dev.last_error = why
        if read:
            dev.skipped += 1
        self._streak[m] += 1
        n = self._streak[m]
        if n >= self._max_errors:
            self._mark_lost(dev, f"{n} NVML errors in a row, last: {why}")
            return
        self._skip[m] = min(1 << (n - 1), self._backoff_cap)
        level = logging.WARNING if dev.errors <= WARN_ERRORS else logging.DEBUG
        log.log(level, "GPU minor %d: NVML error %d in a row (%s); skipped for %d read(s), lost after %d in a row%s",
                m, n, why, self._skip[m], self._max_errors,
                "; further errors of this GPU logged at debug level" if dev.errors == WARN_ERRORS else "")

    def _recovered(self, dev: DeviceInfo) -> None:
        n = self._streak[dev.minor]
        if n:
            self._streak[dev.minor] = 0
            log.log(logging.INFO if dev.errors <= WARN_ERRORS else logging.DEBUG,
                    "GPU minor %d: readable again after %d error(s) in a row (%d in all, %d sample(s) skipped)",
                    dev.minor, n, dev.errors, dev.skipped)

    def _ready(self, dev: DeviceInfo) -> Any:
        """The device's handle once it is found and described (retrying what failed before)."""
        if dev.minor not in self._handles:
            self._find(dev)
        if dev.minor in self._undescribed:
            self._describe(dev, self._handles[dev.minor])
            self._undescribed.discard(dev.minor)
            self._gpm_open(dev, self._handles[dev.minor])
        return self._handles[dev.minor]

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
        """Read every metric of one GPU; None once the device is lost, and for a
        read skipped or failed while a failing device is retried."""
        dev = self._devices[minor]
        if dev.lost:
            return None
        if self._skip[minor] > 0:
            self._skip[minor] -= 1
            dev.skipped += 1
            return None
        N = self._nvml
        try:
            h = self._ready(dev)
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
        except _Failed as e:
            self._failed(dev, str(e))
            return None
        self._recovered(dev)
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
        """Pids of compute processes; None when lost, not supported or failing (unknown, not "none")."""
        dev = self._devices[minor]
        if dev.lost or self._skip[minor] > 0 or minor not in self._handles or minor in self._undescribed:
            return None
        try:
            procs = self._call(dev, "processes", self._nvml.nvmlDeviceGetComputeRunningProcesses,
                               self._handles[minor])
        except _Lost as e:
            self._mark_lost(dev, str(e))
            return None
        except _Failed as e:
            self._failed(dev, str(e), read=False)
            return None
        self._recovered(dev)
        return None if procs is None else [int(p.pid) for p in procs]
