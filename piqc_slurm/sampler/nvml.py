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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pynvml

from piqc_slurm.sampler.aggregate import Sample
from piqc_slurm.sampler.errors import NvmlUnavailable
from piqc_slurm.sampler.source import DeviceInfo

log = logging.getLogger("piqc-slurm.sampler")

MIB = 1 << 20


class _Lost(Exception):
    """Internal: a per-device call failed in a way that ends the device."""


def _text(value: Any) -> str:
    # pynvml returns bytes from older releases and str from newer ones.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Reads the GPUs of one job through NVML.

    `nvml` is the pynvml module (injectable so unit tests can script error
    paths with pynvml's own exception classes).
    """

    def __init__(self, minors: Iterable[int], *, nvml: Any = None):
        self._nvml = pynvml if nvml is None else nvml
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
        for minor, dev in self._devices.items():
            if minor not in self._handles and not dev.lost:
                why = f"minor {minor} not found among {count} NVML devices"
                if failures:
                    why += " (unreadable: " + "; ".join(failures) + ")"
                self._mark_lost(dev, why)

    def close(self) -> None:
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
        return Sample(
            util=None if rates is None else float(rates.gpu),
            mem_util=None if rates is None else float(rates.memory),
            mem_used_mib=None if mem is None else mem.used / MIB,
            power_w=None if power is None else power / 1000.0,
            energy_mj=None if energy is None else float(energy),
            sm_clock_mhz=None if sm is None else float(sm),
            temp_c=None if temp is None else float(temp),
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
