"""Streaming per-GPU aggregation: the pure core of the sampler.

A job may run for weeks at one sample a second, so nothing here keeps a
list of samples: every statistic is a running sum, an extreme or a counter,
and the utilization distribution is a fixed 101-bin histogram. The state of
one GPU therefore has the same size after ten samples and after ten million,
and a checkpoint costs the same at the end of a job as at its start. The GPM
activity metrics (fractions 0..1) get a 101-bin histogram each as well, so
their p95 is O(1) too.

Samples are weighted by the time they stand for (the interval since the
previous one) rather than counted, because a loaded node delays the sampler
unevenly; the first sample stands for one nominal interval, and a gap is
capped at three nominal intervals so a stalled or suspended sampler does not
invent hours of a state it never saw.

No I/O, no clock: callers pass the times (monotonic seconds for the weights,
epoch seconds for the timeline) in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from piqc_slurm.usage.numbers import finite

HIST_BINS = 101
"""Utilization histogram bins: one per integer percent 0..100."""

GAP_CAP = 3.0
"""A gap between samples counts for at most this many nominal intervals."""

MAX_PIDS = 16
"""Distinct pids remembered per GPU: evidence for a person, not a census."""

# Sample fields kept as [weighted sum, weight seconds, min, max]; the order is
# the order of the derived keys in to_dict().
_STAT_FIELDS = ("util", "mem_util", "mem_used", "power", "sm_clock", "temp", "sm_active", "tensor_active",
                "dram_active", "sm_occupancy")

GPM_FIELDS = ("sm_active", "sm_occupancy", "tensor_active", "dram_active")
"""GPM activity metrics (fractions 0..1): summary keys <name>_mean and <name>_p95."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one GPU. None means the device does not report that
    metric (NVML NotSupported): it stays absent from the output, because a
    zero would read as "idle" or "no power" and mislead the analysis."""

    util: float | None = None
    mem_util: float | None = None
    mem_used_mib: float | None = None
    power_w: float | None = None
    energy_mj: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None
    sm_active: float | None = None       # GPM-style activity, 0..1 (absent: not measured)
    tensor_active: float | None = None
    dram_active: float | None = None
    sm_occupancy: float | None = None


class _Stat:
    """Time-weighted running statistics of one metric."""

    __slots__ = ("wsum", "weight", "lo", "hi")

    def __init__(self, wsum: float = 0.0, weight: float = 0.0, lo: float = math.inf,
                 hi: float = -math.inf):
        self.wsum, self.weight, self.lo, self.hi = wsum, weight, lo, hi

    def add(self, value: float, dt: float) -> None:
        self.wsum += value * dt
        self.weight += dt
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value

    def mean(self) -> float:
        # A metric seen only in zero-length intervals has no time weight; its
        # extremes still bound it, and the mean must stay within them.
        m = self.wsum / self.weight if self.weight > 0 else self.hi
        return min(max(m, self.lo), self.hi)

    def to_list(self) -> list[float]:
        return [self.wsum, self.weight, self.lo, self.hi]

    @classmethod
    def from_list(cls, name: str, value: Any) -> _Stat:
        if (not isinstance(value, list) or len(value) != 4
                or not all(_is_number(x) for x in value)):
            raise ValueError(f"acc.{name}: expected [wsum, weight, min, max], got {value!r}")
        wsum, weight, lo, hi = (float(x) for x in value)
        if weight < 0 or lo > hi:
            raise ValueError(f"acc.{name}: inconsistent statistics {value!r}")
        return cls(wsum, weight, lo, hi)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_finite = finite  # usage.numbers: absent, unparseable, NaN or infinite readings are None


def _r(x: float) -> float:
    # Rounding is monotonic, so rounded means stay within rounded extremes.
    return round(x, 3)


def _weight(last: float | None, t: float, nominal: float) -> float:
    if last is None:
        return nominal
    return min(max(t - last, 0.0), GAP_CAP * nominal)


def _gpm_bin(frac: float) -> int:
    # Floor to the whole percent (a percentile must not exceed the maximum);
    # the epsilon keeps 0.29 (28.999...% in binary) in bin 29.
    return min(max(int(frac * 100.0 + 1e-9), 0), HIST_BINS - 1)


def _hist_percentile(hist: list[int], q: float) -> int | None:
    """The bin at quantile q of a time histogram (None when it holds no time)."""
    total = sum(hist)
    if total <= 0:
        return None
    target = q * total
    cum = 0
    for pct, ms in enumerate(hist):
        cum += ms
        if cum >= target and ms:
            return pct
    return HIST_BINS - 1


def _check_hist(name: str, hist: Any) -> list[int]:
    if (not isinstance(hist, list) or len(hist) != HIST_BINS
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in hist)):
        raise ValueError(f"aggregate: {name}: expected {HIST_BINS} counts >= 0")
    return list(hist)


def _add_pids(seen: list[int], pids: Iterable[int]) -> None:
    for pid in pids:
        if len(seen) >= MAX_PIDS:
            return
        if pid not in seen:
            seen.append(pid)


class GpuAggregate:
    """Everything the analysis needs about one GPU over one job, in O(1) memory.

    `interval` and `process_interval` are the nominal periods of `add` and
    `add_processes` calls (they weight the first call and cap gaps);
    `active_util` is the utilization (%) at or above which time counts as
    active; `power_limit_w` (the device's, when known) turns mean power into
    `power_frac_mean`.
    """

    __slots__ = ("interval", "process_interval", "active_util", "power_limit_w", "samples", "seconds",
                 "active_seconds", "hist_ms", "gpm_hist_ms", "stats", "energy_counter_mj",
                 "energy_last_mj", "energy_readings", "power_j", "last_t", "process_checks",
                 "process_seconds", "job_process_seconds", "pids", "job_pids", "last_process_t")

    def __init__(self, interval: float = 1.0, *, process_interval: float = 10.0,
                 active_util: float = 5.0, power_limit_w: float | None = None):
        if not (_is_number(interval) and interval > 0):
            raise ValueError(f"interval must be > 0, got {interval!r}")
        if not (_is_number(process_interval) and process_interval > 0):
            raise ValueError(f"process_interval must be > 0, got {process_interval!r}")
        if not _is_number(active_util):
            raise ValueError(f"active_util must be a number, got {active_util!r}")
        if power_limit_w is not None and not (_is_number(power_limit_w) and power_limit_w > 0):
            raise ValueError(f"power_limit_w must be > 0 or None, got {power_limit_w!r}")
        self.interval = float(interval)
        self.process_interval = float(process_interval)
        self.active_util = float(active_util)
        self.power_limit_w = None if power_limit_w is None else float(power_limit_w)
        self.samples = 0
        self.seconds = 0.0
        self.active_seconds = 0.0
        self.hist_ms: list[int] | None = None     # created at the first util value
        # GPM metric -> 101 bins of ms per whole percent; created at the metric's
        # first value (a metric restored from a checkpoint older than these
        # histograms has none, and no p95, rather than a p95 of part of the job)
        self.gpm_hist_ms: dict[str, list[int]] = {}
        self.stats: dict[str, _Stat] = {}
        self.energy_counter_mj = 0.0
        self.energy_last_mj: float | None = None
        self.energy_readings = 0
        self.power_j = 0.0
        self.last_t: float | None = None
        self.process_checks = 0
        self.process_seconds = 0.0
        self.job_process_seconds = 0.0
        self.pids: list[int] = []
        self.job_pids: list[int] = []
        self.last_process_t: float | None = None

    # ---- accumulation ----

    def _stat(self, name: str, value: float, dt: float) -> None:
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = _Stat()
        st.add(value, dt)

    def add(self, t: float, s: Sample) -> None:
        """Fold in one sample taken at monotonic time `t` (seconds)."""
        dt = _weight(self.last_t, t, self.interval)
        self.last_t = t if self.last_t is None else max(t, self.last_t)
        self._fold(dt, s, 1)

    def add_span(self, seconds: float, s: Sample) -> None:
        """Fold in a stretch of `seconds` over which every sample would have read `s`
        (simulate: a constant stretch is one call, not one call per interval). It
        counts as seconds / interval samples; the energy counter is not used."""
        if not (_is_number(seconds) and seconds > 0):
            raise ValueError(f"span must be > 0 seconds, got {seconds!r}")
        self._fold(float(seconds), replace(s, energy_mj=None), max(1, round(seconds / self.interval)))

    def add_process_span(self, seconds: float, has_process: bool, job_process: bool) -> None:
        """A stretch of `seconds` with (or without) a compute process listed, for simulate."""
        self.process_checks += max(1, round(seconds / self.process_interval))
        if has_process or job_process:
            self.process_seconds += seconds
        if job_process:
            self.job_process_seconds += seconds

    def _fold(self, dt: float, s: Sample, n: int) -> None:
        self.samples += n
        self.seconds += dt
        util = _finite(s.util)
        if util is not None:
            util = min(max(util, 0.0), 100.0)
            self._stat("util", util, dt)
            if util >= self.active_util:
                self.active_seconds += dt
            if self.hist_ms is None:
                self.hist_ms = [0] * HIST_BINS
            # Floor, not round: a percentile read from the histogram must never
            # exceed the true maximum. At least 1 ms so every sample is counted.
            self.hist_ms[int(util)] += max(1, round(dt * 1000))
        for name, value in (("mem_util", s.mem_util), ("mem_used", s.mem_used_mib),
                            ("sm_clock", s.sm_clock_mhz), ("temp", s.temp_c)):
            v = _finite(value)
            if v is not None:
                self._stat(name, v, dt)
        for name, value in (("sm_active", s.sm_active), ("sm_occupancy", s.sm_occupancy),
                            ("tensor_active", s.tensor_active), ("dram_active", s.dram_active)):
            v = _finite(value)
            if v is None:
                continue
            v = min(max(v, 0.0), 1.0)
            hist = self.gpm_hist_ms.get(name)
            if hist is None and name not in self.stats:
                hist = self.gpm_hist_ms[name] = [0] * HIST_BINS
            if hist is not None:
                hist[_gpm_bin(v)] += max(1, round(dt * 1000))
            self._stat(name, v, dt)
        power = _finite(s.power_w)
        if power is not None:
            self._stat("power", power, dt)
            self.power_j += power * dt
        e = _finite(s.energy_mj)
        if e is not None:
            # The counter only grows; a drop means it was reset (driver reload):
            # start a new segment rather than subtract.
            if self.energy_last_mj is not None and e >= self.energy_last_mj:
                self.energy_counter_mj += e - self.energy_last_mj
            self.energy_last_mj = e
            self.energy_readings += 1

    def add_processes(self, t: float, pids: Iterable[int], job_pids: Iterable[int]) -> None:
        """Fold in one running-process query at monotonic time `t`.

        `pids` are all compute processes NVML lists on the GPU, `job_pids`
        those of them that belong to the job. The time since the previous
        query is attributed to "had a process" / "had a job process", so a
        GPU that merely held a CUDA context can be told from one that was
        never touched.
        """
        pids, job_pids = list(pids), list(job_pids)
        dt = _weight(self.last_process_t, t, self.process_interval)
        self.last_process_t = t if self.last_process_t is None else max(t, self.last_process_t)
        self.process_checks += 1
        if pids or job_pids:
            self.process_seconds += dt
        if job_pids:
            self.job_process_seconds += dt
        _add_pids(self.pids, pids)
        _add_pids(self.pids, job_pids)
        _add_pids(self.job_pids, job_pids)

    # ---- derived values ----

    def percentile(self, q: float) -> int | None:
        """Utilization percentile (integer percent) over time, from the histogram."""
        if self.hist_ms is None:
            return None
        return _hist_percentile(self.hist_ms, q)

    def gpm_percentile(self, name: str, q: float) -> float | None:
        """Percentile of a GPM metric (fraction 0..1, whole-percent resolution,
        kept within the metric's extremes); None when not known."""
        hist, st = self.gpm_hist_ms.get(name), self.stats.get(name)
        if hist is None or st is None:
            return None
        pct = _hist_percentile(hist, q)
        return None if pct is None else min(max(pct / 100.0, st.lo), st.hi)

    def energy(self) -> tuple[float, str] | None:
        """(joules, source): the counter when it gave a delta, else integrated power."""
        if self.energy_readings >= 2:
            return self.energy_counter_mj / 1000.0, "counter"
        if "power" in self.stats:
            return self.power_j, "power"
        return None

    def summary(self) -> dict[str, Any]:
        """The derived statistics; a metric the device never reported is absent."""
        out: dict[str, Any] = {"samples": self.samples, "seconds": _r(self.seconds)}
        st = self.stats
        if "util" in st:
            u = st["util"]
            out.update(util_mean=_r(u.mean()), util_min=_r(u.lo), util_max=_r(u.hi),
                       util_p50=self.percentile(0.50), util_p95=self.percentile(0.95),
                       active_seconds=_r(self.active_seconds))
        if "mem_util" in st:
            out.update(mem_util_mean=_r(st["mem_util"].mean()), mem_util_max=_r(st["mem_util"].hi))
        if "mem_used" in st:
            out.update(mem_used_mean_mib=_r(st["mem_used"].mean()),
                       mem_used_max_mib=_r(st["mem_used"].hi))
        if "power" in st:
            out.update(power_mean_w=_r(st["power"].mean()), power_max_w=_r(st["power"].hi))
            if self.power_limit_w is not None:
                out["power_frac_mean"] = _r(st["power"].mean() / self.power_limit_w)
        energy = self.energy()
        if energy is not None:
            out.update(energy_j=_r(energy[0]), energy_source=energy[1])
        if "sm_clock" in st:
            out.update(sm_clock_mean_mhz=_r(st["sm_clock"].mean()),
                       sm_clock_max_mhz=_r(st["sm_clock"].hi))
        if "temp" in st:
            out["temp_max_c"] = _r(st["temp"].hi)
        for name in GPM_FIELDS:
            if name in st:
                out[f"{name}_mean"] = _r(st[name].mean())
                p95 = self.gpm_percentile(name, 0.95)
                if p95 is not None:
                    out[f"{name}_p95"] = _r(p95)
        out.update(process_checks=self.process_checks,
                   process_seconds=_r(self.process_seconds),
                   job_process_seconds=_r(self.job_process_seconds),
                   pids=list(self.pids), job_pids=list(self.job_pids))
        return out

    # ---- serialization ----

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, fixed-size state: the summary plus the exact accumulators.

        The summary keys are what readers use; `acc` (and `util_hist_ms`) are
        what `from_dict` restores from, so a round trip is exact and a
        restored aggregate keeps accumulating as if never interrupted.
        """
        out: dict[str, Any] = {"interval": self.interval, "process_interval": self.process_interval,
                               "active_util": self.active_util}
        out.update(self.summary())
        if self.hist_ms is not None:
            out["util_hist_ms"] = list(self.hist_ms)
        acc: dict[str, Any] = {name: self.stats[name].to_list()
                               for name in _STAT_FIELDS if name in self.stats}
        acc.update(seconds=self.seconds, active_seconds=self.active_seconds,
                   power_j=self.power_j, process_seconds=self.process_seconds,
                   job_process_seconds=self.job_process_seconds, last_t=self.last_t,
                   last_process_t=self.last_process_t)
        if self.power_limit_w is not None:
            acc["power_limit_w"] = self.power_limit_w
        if self.gpm_hist_ms:
            acc["gpm_hist_ms"] = {name: list(self.gpm_hist_ms[name])
                                  for name in GPM_FIELDS if name in self.gpm_hist_ms}
        if self.energy_readings:
            acc["energy"] = [self.energy_counter_mj, self.energy_last_mj, self.energy_readings]
        out["acc"] = acc
        return out

    @classmethod
    def from_dict(cls, d: Any) -> GpuAggregate:
        """Restore from `to_dict()` output; ValueError names the first bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"aggregate: expected an object, got {type(d).__name__}")

        def num(src: dict[str, Any], key: str, *, optional: bool = False, where: str = "") -> Any:
            if key not in src:
                if optional:
                    return None
                raise ValueError(f"aggregate: missing {where}{key}")
            v = src[key]
            if v is None and optional:
                return None
            if not _is_number(v):
                raise ValueError(f"aggregate: {where}{key}: expected a number, got {v!r}")
            return v

        def count(src: dict[str, Any], key: str) -> int:
            v = src.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"aggregate: {key}: expected a count, got {v!r}")
            return v

        def pid_list(key: str) -> list[int]:
            v = d.get(key)
            if (not isinstance(v, list) or len(v) > MAX_PIDS
                    or not all(isinstance(p, int) and not isinstance(p, bool) for p in v)):
                raise ValueError(f"aggregate: {key}: expected at most {MAX_PIDS} pids, got {v!r}")
            return list(v)

        acc = d.get("acc")
        if not isinstance(acc, dict):
            raise ValueError(f"aggregate: acc: expected an object, got {acc!r}")
        limit = num(acc, "power_limit_w", optional=True, where="acc.")
        if limit is not None and limit <= 0:
            raise ValueError(f"aggregate: acc.power_limit_w: expected > 0, got {limit!r}")
        agg = cls(num(d, "interval"), process_interval=num(d, "process_interval"),
                  active_util=num(d, "active_util"), power_limit_w=limit)
        agg.samples = count(d, "samples")
        agg.process_checks = count(d, "process_checks")
        agg.pids, agg.job_pids = pid_list("pids"), pid_list("job_pids")
        w = "acc."
        agg.seconds = float(num(acc, "seconds", where=w))
        agg.active_seconds = float(num(acc, "active_seconds", where=w))
        agg.power_j = float(num(acc, "power_j", where=w))
        agg.process_seconds = float(num(acc, "process_seconds", where=w))
        agg.job_process_seconds = float(num(acc, "job_process_seconds", where=w))
        agg.last_t = num(acc, "last_t", optional=True, where=w)
        agg.last_process_t = num(acc, "last_process_t", optional=True, where=w)
        for name in _STAT_FIELDS:
            if name in acc:
                agg.stats[name] = _Stat.from_list(name, acc[name])
        if "energy" in acc:
            e = acc["energy"]
            if (not isinstance(e, list) or len(e) != 3 or not _is_number(e[0])
                    or not _is_number(e[1]) or not isinstance(e[2], int) or e[2] < 1):
                raise ValueError(f"aggregate: acc.energy: expected [mj, last_mj, readings], got {e!r}")
            agg.energy_counter_mj, agg.energy_last_mj, agg.energy_readings = float(e[0]), e[1], e[2]
        hist = d.get("util_hist_ms")
        if hist is not None:
            agg.hist_ms = _check_hist("util_hist_ms", hist)
        if (hist is None) != ("util" not in agg.stats):
            raise ValueError("aggregate: util_hist_ms and acc.util must be present together")
        # Optional (checkpoints from before GPM percentiles have none): a
        # histogram needs its metric's statistics; statistics without one
        # restore without a p95.
        gpm = acc.get("gpm_hist_ms", {})
        if not isinstance(gpm, dict):
            raise ValueError(f"aggregate: acc.gpm_hist_ms: expected an object, got {gpm!r}")
        for name, h in gpm.items():
            if name not in GPM_FIELDS:
                raise ValueError(f"aggregate: acc.gpm_hist_ms: unknown metric {name!r}")
            if name not in agg.stats:
                raise ValueError(f"aggregate: acc.gpm_hist_ms.{name} without acc.{name}")
            agg.gpm_hist_ms[name] = _check_hist(f"acc.gpm_hist_ms.{name}", h)
        return agg

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GpuAggregate):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable


class TimelineBinner:
    """Per-GPU, per-bin means for charts, emitted once a bin is closed.

    Only the open bin of each GPU is kept (plus closed bins not yet flushed),
    so memory is constant in job length; closed bins are meant to be appended
    to a JSON-lines file and forgotten.
    """

    __slots__ = ("bin_seconds", "_open", "_closed")

    def __init__(self, bin_seconds: int = 60):
        if not isinstance(bin_seconds, int) or isinstance(bin_seconds, bool) or bin_seconds < 1:
            raise ValueError(f"bin_seconds must be an integer >= 1, got {bin_seconds!r}")
        self.bin_seconds = bin_seconds
        # gpu -> [start, util_sum, util_n, mem_max, power_sum, power_n]
        self._open: dict[int, list[Any]] = {}
        self._closed: list[dict[str, Any]] = []

    def add(self, t: float, gpu: int, s: Sample) -> None:
        """Add a sample of GPU (minor) `gpu` taken at epoch time `t`."""
        start = int(t // self.bin_seconds) * self.bin_seconds
        cur = self._open.get(gpu)
        if cur is not None and cur[0] != start:
            self._closed.append(self._emit(gpu, cur))
            cur = None
        if cur is None:
            cur = self._open[gpu] = [start, 0.0, 0, None, 0.0, 0]
        util, mem, power = _finite(s.util), _finite(s.mem_used_mib), _finite(s.power_w)
        if util is not None:
            cur[1] += util
            cur[2] += 1
        if mem is not None:
            cur[3] = mem if cur[3] is None else max(cur[3], mem)
        if power is not None:
            cur[4] += power
            cur[5] += 1

    @staticmethod
    def _emit(gpu: int, b: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"t": b[0], "gpu": gpu}
        if b[2]:
            out["util"] = round(b[1] / b[2], 1)
        if b[3] is not None:
            out["mem_mib"] = round(b[3])
        if b[5]:
            out["power_w"] = round(b[4] / b[5], 1)
        return out

    def flush_closed(self, now: float) -> list[dict[str, Any]]:
        """Bins that ended at or before epoch `now`, oldest first; forgets them."""
        for gpu in list(self._open):
            b = self._open[gpu]
            if b[0] + self.bin_seconds <= now:
                self._closed.append(self._emit(gpu, b))
                del self._open[gpu]
        return self._take()

    def flush_all(self) -> list[dict[str, Any]]:
        """Every bin, open ones included (end of job)."""
        for gpu, b in self._open.items():
            self._closed.append(self._emit(gpu, b))
        self._open.clear()
        return self._take()

    def _take(self) -> list[dict[str, Any]]:
        out = sorted(self._closed, key=lambda b: (b["t"], b["gpu"]))
        self._closed = []
        return out
