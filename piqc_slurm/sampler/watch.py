"""The live rules: the sampler's on-call engineer (config [watch]).

The sampler sees every allocated GPU every interval; `Watch` turns those
samples into three rules that fire while the job runs, each at most once per
job until the job recovers (and again if it relapses):

  IDLE_GPUS      every GPU of the job idle for `idle_minutes`
  IDLE_GPU       one GPU (or more) idle for `gpu_idle_minutes` while another works
  UNDER_BATCHED  analyze.rules' under-batching evidence over the last
                 `underbatched_minutes` (GPM SM activity, else power / limit,
                 else utilization with free memory)

Idle is the nightly rule (usage.rules.did_work): a GPU is idle over a stretch
when it was active (utilization >= active_util) for less than
min_active_share of the sampled time. The stretch is kept in buckets (at most
a tenth of the shortest rule's window, at least one interval, at most 60 s):
a bucket closed idle extends the GPU's idle run, a bucket closed busy ends it,
so one warm-up spike does not reset a rule and a model that loads for a
minute and then works never makes one fire. IDLE_GPUS and IDLE_GPU both
become IDLE_GPUS in the nightly analysis; UNDER_BATCHED is rules.judge itself
on the window's figures, so the live call and the nightly one cannot
disagree on the same evidence.

Pure: no I/O, no clock. O(1) work per sample; a rule check per call of
`evaluate` is O(GPUs x buckets in the longest window) (<= 10 x GPUs).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import piqc_slurm.analyze.rules as R
from piqc_slurm.sampler.aggregate import Sample

RULES = ("IDLE_GPUS", "IDLE_GPU", "UNDER_BATCHED")
NIGHTLY = {"IDLE_GPUS": "IDLE_GPUS", "IDLE_GPU": "IDLE_GPUS", "UNDER_BATCHED": "UNDER_BATCHED"}
"""The finding code the nightly analysis gives the same waste."""
MAX_EVENTS = 64
"""Events kept in the state (checkpoint, summary): a flapping job cannot grow it without bound."""
BUCKET_MAX_S = 60.0
PRICE_KEYS = ("prices", "partition_prices", "usage.cpu_core_hour_price")
"""The config keys usage.prices.Prices.from_config reads: the Prolog copies them into the context."""


class WatchSettings(NamedTuple):
    """What the Prolog passes in context.json "watch" (config [watch], sampler.active_util,
    usage.min_active_share and the [analyze] thresholds rules.judge reads)."""

    idle_minutes: float = 30.0
    gpu_idle_minutes: float = 60.0
    underbatched_minutes: float = 60.0
    active_util: float = 5.0
    min_active_share: float = 0.05
    thresholds: Mapping[str, float] | None = None  # rules.Thresholds fields; None: UNDER_BATCHED off
    notices: bool = True
    textfile_dir: str = ""
    textfile_interval: float = 15.0
    prices: Mapping[str, Any] | None = None  # {"prices", "partition_prices", "usage.cpu_core_hour_price"}
    labels: Mapping[str, str] | None = None  # the job's account, partition (textfile labels)
    cancel_after_minutes: float = 0.0        # the opt-in cancel policy; 0: never
    cancel_rules: tuple[str, ...] = ("IDLE_GPUS",)
    cancel_warn_minutes: tuple[float, ...] = (15.0, 5.0)  # lead times of the warnings
    cancel_dry_run: bool = False
    cancel_exempt: str = ""                  # why this job is exempt (the Prolog decides); "": not
    mail_prog: str = ""                      # [watch] mail_prog when [watch] mail is on; "": no mail

    @classmethod
    def from_dict(cls, doc: Any) -> WatchSettings:
        """Strict: ValueError names an unknown or mistyped key."""
        if not isinstance(doc, dict):
            raise ValueError(f"watch: expected an object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - set(cls._fields))
        if unknown:
            raise ValueError(f"watch: unknown key(s) {', '.join(unknown)}")
        v = {**cls()._asdict(), **doc}
        for k in ("idle_minutes", "gpu_idle_minutes", "underbatched_minutes", "active_util", "min_active_share",
                  "textfile_interval", "cancel_after_minutes"):
            x = v[k]
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) or x < 0:
                raise ValueError(f"watch.{k}: expected a number >= 0, got {x!r}")
            v[k] = float(x)
        if v["textfile_interval"] < 1:
            raise ValueError(f"watch.textfile_interval: expected seconds >= 1, got {v['textfile_interval']!r}")
        for k in ("notices", "cancel_dry_run"):
            if not isinstance(v[k], bool):
                raise ValueError(f"watch.{k}: expected true or false, got {v[k]!r}")
        rules = v["cancel_rules"]
        if not isinstance(rules, (list, tuple)) or not all(r in RULES for r in rules):
            raise ValueError(f"watch.cancel_rules: expected rules of {', '.join(RULES)}, got {rules!r}")
        v["cancel_rules"] = tuple(rules)
        leads = v["cancel_warn_minutes"]
        if not isinstance(leads, (list, tuple)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in leads):
            raise ValueError(f"watch.cancel_warn_minutes: expected minutes >= 0, got {leads!r}")
        v["cancel_warn_minutes"] = tuple(sorted((float(x) for x in leads), reverse=True))
        for k in ("cancel_exempt", "mail_prog"):
            if not isinstance(v[k], str):
                raise ValueError(f"watch.{k}: expected a string, got {v[k]!r}")
        if not isinstance(v["textfile_dir"], str):
            raise ValueError(f"watch.textfile_dir: expected a path, got {v['textfile_dir']!r}")
        t = v["thresholds"]
        if t is not None:
            if not isinstance(t, dict) or set(t) != set(R.Thresholds._fields):
                raise ValueError(f"watch.thresholds: expected the keys {', '.join(R.Thresholds._fields)}")
            v["thresholds"] = dict(t)
        p = v["prices"]
        if p is not None and (not isinstance(p, dict) or set(p) != set(PRICE_KEYS)
                              or not all(isinstance(p[k], dict) for k in PRICE_KEYS[:2])):
            raise ValueError(f"watch.prices: expected the keys {', '.join(PRICE_KEYS)}")
        lab = v["labels"]
        if lab is not None and (not isinstance(lab, dict) or not all(isinstance(x, str) for x in lab.values())):
            raise ValueError("watch.labels: expected an object of strings")
        return cls(**v)

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        for k in ("thresholds", "prices", "labels"):
            d[k] = None if d[k] is None else dict(d[k])
        d["cancel_rules"], d["cancel_warn_minutes"] = list(self.cancel_rules), list(self.cancel_warn_minutes)
        return d

    def windows(self) -> list[float]:
        """The rules' windows in seconds (those switched on)."""
        return [m * 60.0 for m in (self.idle_minutes, self.gpu_idle_minutes, self.underbatched_minutes) if m > 0]


class _Bucket:
    __slots__ = ("start", "sampled", "active", "util", "power", "power_t", "sm", "sm_t", "mem_max")

    def __init__(self, start: float) -> None:
        self.start = start
        self.sampled = self.active = self.util = self.power = self.power_t = self.sm = self.sm_t = 0.0
        self.mem_max = -1.0


class GpuTrack:
    """One GPU's recent activity: the current bucket, the closed ones within the longest window,
    and the start of its idle run (None: it worked in the last closed bucket)."""

    __slots__ = ("bucket_s", "keep_s", "active_util", "min_share", "power_limit_w", "mem_total_mib", "cur",
                 "closed", "run_start", "last_t", "interval", "last")

    def __init__(self, *, bucket_s: float, keep_s: float, interval: float, active_util: float, min_share: float,
                 power_limit_w: float | None = None, mem_total_mib: float | None = None) -> None:
        self.bucket_s, self.keep_s, self.interval = bucket_s, keep_s, interval
        self.active_util, self.min_share = active_util, min_share
        self.power_limit_w, self.mem_total_mib = power_limit_w, mem_total_mib
        self.cur: _Bucket | None = None
        self.closed: deque[_Bucket] = deque()
        self.run_start: float | None = None
        self.last_t: float | None = None
        self.last: Sample | None = None

    def add(self, t: float, s: Sample) -> None:
        dt = self.interval if self.last_t is None else min(max(t - self.last_t, 0.0), 3 * self.interval)
        self.last_t, self.last = t, s
        if self.cur is None:
            self.cur = _Bucket(t)
        elif t >= self.cur.start + self.bucket_s:
            self._close(t)
        if s.util is None or dt <= 0:
            return
        b = self.cur
        b.sampled += dt
        if s.util >= self.active_util:
            b.active += dt
        b.util += s.util * dt
        if s.power_w is not None and self.power_limit_w:
            b.power += s.power_w / self.power_limit_w * dt
            b.power_t += dt
        if s.sm_active is not None:
            b.sm += s.sm_active * dt
            b.sm_t += dt
        if s.mem_used_mib is not None and s.mem_used_mib > b.mem_max:
            b.mem_max = s.mem_used_mib

    def _close(self, t: float) -> None:
        b = self.cur
        assert b is not None
        if b.sampled > 0:
            if b.active / b.sampled < self.min_share:
                if self.run_start is None:
                    self.run_start = b.start
            else:
                self.run_start = None
        self.closed.append(b)
        while self.closed and self.closed[0].start < t - self.keep_s - self.bucket_s:
            self.closed.popleft()
        # the next bucket starts on the grid (a stall skips whole buckets)
        n = math.floor((t - b.start) / self.bucket_s)
        self.cur = _Bucket(b.start + n * self.bucket_s)

    def working(self) -> bool:
        """Active at least min_share of the current bucket so far (a sample says it works)."""
        b = self.cur
        return b is not None and b.sampled > 0 and b.active / b.sampled >= self.min_share

    def idle_for(self, now: float) -> float:
        """Seconds this GPU has been idle (the did_work rule per bucket); 0 while it works."""
        b = self.cur
        if b is None:
            return 0.0
        if b.sampled > 0 and b.active / b.sampled >= self.min_share:
            return 0.0
        start = self.run_start if self.run_start is not None else b.start
        return max(now - start, 0.0)

    def window(self, now: float, seconds: float) -> _Bucket:
        """The sums over the buckets that start within the last `seconds` (the current one too)."""
        w = _Bucket(now - seconds)
        for b in (*self.closed, self.cur):
            if b is None or b.start < now - seconds - 1e-9:
                continue
            w.sampled += b.sampled
            w.active += b.active
            w.util += b.util
            w.power += b.power
            w.power_t += b.power_t
            w.sm += b.sm
            w.sm_t += b.sm_t
            w.mem_max = max(w.mem_max, b.mem_max)
        return w


class Event(NamedTuple):
    rule: str          # of RULES; "recovered:<rule>" when the condition ended
    at: float          # epoch
    since: float       # epoch the condition began
    gpus: tuple[int, ...]  # the minors concerned
    evidence: str      # one line a person reads

    @property
    def nightly(self) -> str:
        return NIGHTLY.get(self.rule, "")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "at": round(self.at, 3), "since": round(self.since, 3), "gpus": list(self.gpus),
                "evidence": self.evidence}


class Watch:
    """The live rules over a job's GPUs; `add` per sample, `evaluate` for what newly fired."""

    def __init__(self, settings: WatchSettings, *, started: float, interval: float,
                 devices: Mapping[int, tuple[float | None, float | None]]) -> None:
        """devices: minor -> (power limit W, memory total MiB)."""
        self.s = settings
        self.started = started
        windows = settings.windows()
        shortest = min(windows) if windows else 60.0
        self.bucket_s = max(interval, min(BUCKET_MAX_S, shortest / 10.0))
        keep = max(windows) if windows else 0.0
        self.tracks = {m: GpuTrack(bucket_s=self.bucket_s, keep_s=keep, interval=interval,
                                   active_util=settings.active_util, min_share=settings.min_active_share,
                                   power_limit_w=pl, mem_total_mib=mt) for m, (pl, mt) in devices.items()}
        self.fired: dict[str, tuple[float, tuple[int, ...]]] = {}  # rule -> (since, GPUs) while it holds
        self.events: list[Event] = []
        self.t_first: float | None = None     # this sampler's first sample (a restarted one starts afresh)
        self.warned: set[tuple[str, float]] = set()  # (rule, lead minutes) warned, for the rule's current run
        self.cancelled: str | None = None      # the rule the job was cancelled for

    @property
    def enabled(self) -> bool:
        return bool(self.s.windows())

    def add(self, t: float, minor: int, s: Sample) -> None:
        tr = self.tracks.get(minor)
        if tr is not None:
            if self.t_first is None:
                self.t_first = t
            tr.add(t, s)

    # ---- the rules ----
    def conditions(self, now: float) -> dict[str, tuple[float, tuple[int, ...], str]]:
        """The rules whose condition holds now: rule -> (since, GPUs, evidence)."""
        out: dict[str, tuple[float, tuple[int, ...], str]] = {}
        if not self.tracks:
            return out
        idle = {m: tr.idle_for(now) for m, tr in self.tracks.items()}
        if self.s.idle_minutes > 0 and all(v >= self.s.idle_minutes * 60 for v in idle.values()):
            since = now - min(idle.values())
            out["IDLE_GPUS"] = (since, tuple(sorted(idle)),
                                f"all {len(idle)} GPUs active under {self.s.min_active_share:.0%} of the time "
                                f"for {_minutes(now - since)}")
        working = [m for m, v in idle.items() if v == 0.0]
        if self.s.gpu_idle_minutes > 0 and working:
            slack = [m for m, v in idle.items() if v >= self.s.gpu_idle_minutes * 60]
            if slack:
                since = now - min(idle[m] for m in slack)
                out["IDLE_GPU"] = (since, tuple(sorted(slack)),
                                   f"{len(slack)} of {len(idle)} GPUs idle for {_minutes(now - since)} "
                                   f"while {len(working)} work")
        ub = self._under_batched(now)
        if ub is not None:
            out["UNDER_BATCHED"] = ub
        return out

    def _under_batched(self, now: float) -> tuple[float, tuple[int, ...], str] | None:
        if self.s.underbatched_minutes <= 0 or self.s.thresholds is None:
            return None
        secs = self.s.underbatched_minutes * 60.0
        if not self._ub_ready(now):
            return None
        wins = {m: tr.window(now, secs) for m, tr in self.tracks.items()}
        used = {m: w for m, w in wins.items() if w.sampled > 0 and w.active / w.sampled >= self.s.min_active_share}
        if not used:
            return None
        sampled = sum(w.sampled for w in used.values())
        power_t = sum(w.power_t for w in used.values())
        sm_t = sum(w.sm_t for w in used.values())
        mem_peak = max(w.mem_max for w in used.values())
        totals = [self.tracks[m].mem_total_mib for m in used if self.tracks[m].mem_total_mib]
        nan = R.NAN
        j = {
            "cost": 1.0, "elapsed": now - self.started, "alloc_gpus": len(self.tracks), "started": 1, "failed": 0,
            "sampled_gpus": len(wins), "used_gpus": len(used), "idle_gpus": len(wins) - len(used),
            "util_used": sum(w.util for w in used.values()) / sampled,
            "active_used": sum(w.active for w in used.values()) / sampled,
            "power_used": sum(w.power for w in used.values()) / power_t if power_t > 0 else nan,
            "sm_used": sum(w.sm for w in used.values()) / sm_t if sm_t > 0 else nan,
            "tensor_used": nan, "dram_used": nan,
            "mem_peak_gib": mem_peak / 1024.0 if mem_peak >= 0 else nan,
            "mem_total_gib": max(totals) / 1024.0 if totals else nan,
            "cpu_eff": nan, "shared": 0, "tflops": nan, "mem_bw": nan, "rate": nan,
            "runs_before": nan, "elapsed_median": nan, "cost_median": nan,
        }
        out = R.judge(j, R.Thresholds(**self.s.thresholds))
        if not out["UNDER_BATCHED"]:
            return None
        how = out["ub_evidence"]
        figure = {"gpm": f"SM activity {j['sm_used']:.0%}", "power": f"power {j['power_used']:.0%} of the limit",
                  "util": f"utilization {j['util_used']:.0f}%"}[how]
        return (now - secs, tuple(sorted(used)),
                f"{figure} on {len(used)} working GPU{'s' if len(used) != 1 else ''} over {_minutes(secs)} "
                f"(about {out['est_factor']:.0%} of what they could do)")

    def _ub_ready(self, now: float) -> bool:
        """This sampler has seen a whole UNDER_BATCHED window of the job."""
        first = self.t_first if self.t_first is not None else now
        return now - max(self.started, first) >= self.s.underbatched_minutes * 60.0

    def _recovered(self, rule: str, gpus: tuple[int, ...], now: float, held: Mapping[str, Any]) -> bool:
        """A fired rule ends on evidence of work, not on a lack of evidence (a restarted sampler
        knows nothing of the idle time before it): a GPU of the job (IDLE_GPUS), each idle one
        (IDLE_GPU) works again; a whole window judged and not under-batched (UNDER_BATCHED)."""
        if rule == "IDLE_GPUS":
            return any(tr.working() for tr in self.tracks.values())
        if rule == "IDLE_GPU":
            return all(self.tracks[m].working() for m in gpus if m in self.tracks)
        return self._ub_ready(now) and rule not in held

    def evaluate(self, now: float) -> list[Event]:
        """What fired since the last call (and what recovered); fired rules are remembered."""
        held = self.conditions(now)
        new: list[Event] = []
        for rule in RULES:
            if rule in held and rule not in self.fired:
                since, gpus, why = held[rule]
                self.fired[rule] = (since, gpus)
                new.append(Event(rule, now, since, gpus, why))
            elif rule in self.fired and rule not in held and self._recovered(rule, self.fired[rule][1], now, held):
                since, gpus = self.fired.pop(rule)
                new.append(Event(f"recovered:{rule}", now, since, gpus, "the GPUs work again"))
        if new:
            self.events = (self.events + new)[-MAX_EVENTS:]
        return new

    def due(self, now: float) -> list[tuple[str, str, float, float]]:
        """The cancel policy's steps that are due: ("warn", rule, since, lead minutes) and
        ("cancel", rule, since, 0), each once; nothing when the policy is off or the job exempt.
        A rule that recovers forgets its warnings (a relapse is warned afresh)."""
        s = self.s
        self.warned = {(r, lead) for r, lead in self.warned if r in self.fired}
        if s.cancel_after_minutes <= 0 or s.cancel_exempt or self.cancelled is not None:
            return []
        out: list[tuple[str, str, float, float]] = []
        for rule in s.cancel_rules:
            if rule not in self.fired:
                continue
            since = self.fired[rule][0]
            held = (now - since) / 60.0
            if held >= s.cancel_after_minutes:
                self.cancelled = rule
                return [("cancel", rule, since, 0.0)]
            for lead in s.cancel_warn_minutes:
                if lead < s.cancel_after_minutes and held >= s.cancel_after_minutes - lead \
                        and (rule, lead) not in self.warned:
                    self.warned.add((rule, lead))
                    out.append(("warn", rule, since, lead))
        return out

    def idle_seconds(self, now: float) -> dict[int, float]:
        return {m: tr.idle_for(now) for m, tr in self.tracks.items()}

    # ---- the checkpoint ----
    def state(self) -> dict[str, Any]:
        return {"fired": {k: {"since": round(v[0], 3), "gpus": list(v[1])} for k, v in self.fired.items()},
                "events": [e.to_dict() for e in self.events],
                "warned": [[r, lead] for r, lead in sorted(self.warned)], "cancelled": self.cancelled}

    def restore(self, doc: Any) -> None:
        """A restarted sampler's fired rules and events (its checkpoint's "watch"): no second notice."""
        if not isinstance(doc, dict):
            return
        fired = doc.get("fired")
        if isinstance(fired, dict):
            for k, v in fired.items():
                try:
                    if k in RULES:
                        self.fired[k] = (float(v["since"]), tuple(int(g) for g in v["gpus"]))
                except (KeyError, TypeError, ValueError):
                    continue
        warned = doc.get("warned")
        if isinstance(warned, list):
            self.warned = {(str(x[0]), float(x[1])) for x in warned
                           if isinstance(x, list) and len(x) == 2 and isinstance(x[1], (int, float))}
        if doc.get("cancelled") in RULES:
            self.cancelled = doc["cancelled"]
        events = doc.get("events")
        if isinstance(events, list):
            self.events = [e for e in (_event(x) for x in events) if e is not None][-MAX_EVENTS:]


def _event(x: Any) -> Event | None:
    try:
        return Event(str(x["rule"]), float(x["at"]), float(x["since"]), tuple(int(g) for g in x["gpus"]),
                     str(x["evidence"]))
    except (KeyError, TypeError, ValueError):
        return None


def _minutes(seconds: float) -> str:
    m = seconds / 60.0
    return f"{m:.0f} min" if m >= 10 else f"{m:.1f} min"


def device_limits(devices: Iterable[tuple[int, Any]]) -> dict[int, tuple[float | None, float | None]]:
    """minor -> (power limit W, memory MiB) from the source's DeviceInfo objects."""
    return {m: (getattr(d, "power_limit_w", None), getattr(d, "mem_total_mib", None)) for m, d in devices}
