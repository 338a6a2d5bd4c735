"""The sampler process: `python -m piqc_slurm.sampler RUN_DIR`.

One sampler per job and node, started (detached) by the Prolog, stopped with
SIGTERM by the Epilog. It samples every GPU of the job each `interval`,
asks NVML for running processes each `process_interval` (a costly call),
and checkpoints each `checkpoint_interval`, so the Epilog has a summary even
if the sampler dies. It must cost next to nothing: it sleeps on monotonic
deadlines (no drift, no busy loop), keeps O(1) state per GPU, and only
appends to the timeline.

The loop is I/O-free apart from what is handed in: the GPU source, a clock
(which also does the waiting, so a stop request can cut a sleep short), the
job-liveness probe and the pid-to-job lookup. Tests drive it with a fake
clock and a scripted source; production wires NVML, /proc and signals in
`main`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from piqc_slurm.sampler.aggregate import GpuAggregate, TimelineBinner
from piqc_slurm.sampler.checkpoint import (
    CHECKPOINT_NAME,
    CONTEXT_NAME,
    NO_EPILOG,
    PID_NAME,
    REASON_ALL_LOST,
    REASON_JOB_GONE,
    REASON_NO_GPUS,
    REASON_NVML,
    TIMELINE_NAME,
    append_lines,
    build_checkpoint,
    load_checkpoint,
    write_atomic,
    write_checkpoint,
)
from piqc_slurm.sampler.context import Context, load_context
from piqc_slurm.sampler.errors import ContextError, NvmlUnavailable
from piqc_slurm.sampler.procs import JobWatch, job_of_pid
from piqc_slurm.sampler.source import GpuSource

__all__ = ["Clock", "SystemClock", "Sampler", "main", "load_checkpoint", "ORPHAN_GRACE"]

log = logging.getLogger("piqc-slurm.sampler")

ORPHAN_GRACE = 300.0
"""Seconds after start within which a slurmstepd of the job must have been seen."""
FIRST_JOB_LOOK = 3.0
"""Seconds after start of the first look for the job's slurmstepds (then every orphan_check)."""

BACKOFF_SECONDS = 60.0
"""About the longest a failing GPU goes unread between two tries (see main)."""

PID_CACHE_MAX = 4096
"""Pid-to-job answers kept between process checks (bounds memory on busy nodes)."""


class Clock(Protocol):
    """Time and waiting, injectable. `wait` may return early (after `wake`)."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def wait(self, timeout: float) -> None: ...
    def wake(self) -> None: ...


class SystemClock:
    """The real clocks; waits in select() on a self-pipe so a signal handler can
    end a sleep at once (a plain time.sleep resumes after the handler)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        readable, _, _ = select.select([self._r], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 512)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):   # pipe full: a wake-up is pending anyway
            os.write(self._w, b"!")

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


def next_deadline(deadline: float, period: float, now: float) -> float:
    """The next deadline on the grid deadline + k*period strictly after `now`.

    Advancing by the period (not from `now`) keeps the schedule free of
    drift; skipping whole periods after a stall avoids a burst of catch-up
    samples (the aggregate caps the gap instead).
    """
    nxt = deadline + period
    if nxt <= now:
        nxt += (math.floor((now - nxt) / period) + 1) * period
    return nxt


def _limit(watts: float | None) -> float | None:
    """A device's power limit as the aggregate takes it: a positive finite number, or None."""
    if isinstance(watts, (int, float)) and not isinstance(watts, bool) and math.isfinite(watts) and watts > 0:
        return float(watts)
    return None


class Sampler:
    """The sampling loop for one job. `run()` returns the process exit code."""

    def __init__(self, ctx: Context, source: GpuSource, run_dir: str | Path, *,
                 clock: Clock | None = None,
                 job_alive: Callable[[], bool] | None = None,
                 job_of_pid: Callable[[int], int | None] | None = None,
                 orphan_grace: float = ORPHAN_GRACE,
                 job: dict | None = None):
        self.ctx, self.source, self.run_dir = ctx, source, Path(run_dir)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.job_alive = job_alive
        self.job_of_pid = job_of_pid
        self.orphan_grace = orphan_grace
        self.aggs: dict[int, GpuAggregate] = {}
        self.binner = TimelineBinner(ctx.timeline_bin)
        self.timeline_bins = 0
        self.stop_reason: str | None = None
        self._nvml_ok = False
        self._nvml_error: str | None = None
        self._m0 = 0.0
        self._wall0 = 0.0
        self._stepd_seen = False
        self._stepd_missing = 0
        self._gone_at: float | None = None      # monotonic time the job was first seen gone
        self._orphan_why = ""
        self._pid_jobs: dict[int, int | None] = {}
        # the live rules (sampler/watch.py) when the context asks for them; made once the devices are known
        self.job = job                            # RUN_DIR/job.json "job" (the Prolog's view of the job)
        self.watch = None
        self.oncall = None
        self.watch_actions: list[dict] = []      # what the watch did (checkpoint, summary)
        self._next_watch = self._next_text = 0.0
        self._text_name: str | None = None

    # ---- control ----

    def request_stop(self, reason: str) -> None:
        """Ask the loop to finish (from a signal handler): last sample, final checkpoint."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.clock.wake()

    # ---- the loop ----

    def run(self) -> int:
        self._m0 = self.clock.monotonic()
        self._wall0 = self.clock.time()
        try:
            try:
                self.source.open()
            except NvmlUnavailable as e:
                log.warning("job %d: GPU monitoring off: %s", self.ctx.job_id, e.reason)
                self._nvml_error = e.reason
                self._make_aggs()
                self._checkpoint(self._m0, final=True, reason=REASON_NVML)
                return 0
            self._nvml_ok = True
            self._make_aggs()
            self._make_watch()
            try:
                self._finish(self._loop())
            finally:
                self._drop_textfile()
            return 0
        except Exception as e:  # noqa: BLE001 - leave a final checkpoint saying why
            log.exception("job %d: sampler failed", self.ctx.job_id)
            with contextlib.suppress(Exception):
                if not self.aggs:
                    self._make_aggs()
                self._checkpoint(self.clock.monotonic(), final=True,
                                 reason=f"error: {type(e).__name__}: {e}")
            return 1
        finally:
            self.source.close()

    def _make_aggs(self) -> None:
        c = self.ctx
        self.aggs = {m: GpuAggregate(c.interval, process_interval=c.process_interval,
                                     active_util=c.active_util, power_limit_w=_limit(dev.power_limit_w))
                     for m, dev in self.source.devices.items()}

    def _make_watch(self) -> None:
        ws = self.ctx.watch
        if ws is None or not ws.windows():
            return
        from piqc_slurm.sampler.oncall import OnCall
        from piqc_slurm.sampler.watch import MAX_EVENTS, Watch, device_limits

        self._keep = MAX_EVENTS
        devices = self.source.devices
        self.watch = Watch(ws, started=self.ctx.started, interval=self.ctx.interval,
                           devices=device_limits(devices.items()))
        self.oncall = OnCall(ws, job_id=self.ctx.job_id, user=self.ctx.user, started=self.ctx.started,
                             run_dir=self.run_dir, job=self.job, gpu_names=[d.name for d in devices.values()])
        previous = self._previous_checkpoint()
        if previous is not None:   # a restarted sampler: what was told is not told again
            w = previous.get("watch") or {}
            self.watch.restore(w)
            acts = w.get("actions")
            if isinstance(acts, list):
                self.watch_actions = [a for a in acts if isinstance(a, dict)][-self._keep:]
        if ws.textfile_dir:
            from piqc_slurm.sampler.textfile import file_name

            self._text_name = file_name(self.ctx.cluster, self.ctx.job_id, self.ctx.restart_count)

    def _previous_checkpoint(self) -> dict | None:
        try:
            doc = load_checkpoint(self.run_dir / CHECKPOINT_NAME)
        except Exception:  # noqa: BLE001 - none, or unreadable: start afresh
            return None
        return doc if doc.get("job_id") == self.ctx.job_id and not doc.get("final") else None

    def _watch_step(self, now: float) -> None:
        """The live rules, about every bucket (at most every 5 s), and the textfile on its period."""
        if self.watch is None:
            return
        if now >= self._next_watch:
            self._next_watch = now + min(self.watch.bucket_s, 5.0)
            epoch = self._epoch(now)
            try:
                for ev in self.watch.evaluate(epoch):
                    self._record(self.oncall.act(ev))
                for step, rule, since, lead in self.watch.due(epoch):
                    self._record(self.oncall.policy(step, rule, since, lead, epoch))
            except Exception as e:  # noqa: BLE001 - a failed notice or scancel must not stop the sampling
                log.error("job %d: watch action failed: %s: %s", self.ctx.job_id, type(e).__name__, e)
        if self._text_name is not None and now >= self._next_text:
            self._next_text = now + self.ctx.watch.textfile_interval
            self._write_textfile(now)

    def _record(self, action: dict) -> None:
        """Keep what the watch did (checkpoint, summary), the newest MAX_EVENTS."""
        self.watch_actions = (self.watch_actions + [action])[-self._keep:]

    def _write_textfile(self, now: float) -> None:
        from piqc_slurm.sampler.textfile import render, write

        epoch = self._epoch(now)
        idle = self.watch.idle_seconds(epoch)
        labels = dict(self.ctx.watch.labels or {})
        job = {"jobid": str(self.ctx.job_id), "user": self.ctx.user, "account": labels.get("account", ""),
               "partition": labels.get("partition", ""), "cluster": self.ctx.cluster}
        gpus = []
        for minor, dev in self.source.devices.items():
            tr = self.watch.tracks.get(minor)
            last = tr.last if tr is not None and not dev.lost else None
            gpus.append({"gpu": minor, "uuid": dev.uuid, "type": dev.name,
                         "util": None if last is None else last.util,
                         "mem_bytes": None if last is None or last.mem_used_mib is None else last.mem_used_mib * 2**20,
                         "power_w": None if last is None else last.power_w,
                         "idle_s": None if dev.lost else idle.get(minor)})
        text = render(job, gpus, cost_usd=self.oncall.usd(epoch),
                      firing={r: True for r in self.watch.fired})
        try:
            write(self.ctx.watch.textfile_dir, self._text_name, text)
        except OSError as e:
            log.error("job %d: cannot write the textfile in %s: %s", self.ctx.job_id, self.ctx.watch.textfile_dir, e)

    def _drop_textfile(self) -> None:
        if self._text_name is not None:
            from piqc_slurm.sampler.textfile import remove

            try:
                remove(self.ctx.watch.textfile_dir, self._text_name)
            except OSError as e:
                log.error("job %d: cannot remove the textfile: %s", self.ctx.job_id, e)

    def _all_lost(self) -> bool:
        return all(d.lost for d in self.source.devices.values())

    def _loop(self) -> str:
        c, clock = self.ctx, self.clock
        if not self.source.devices:
            return REASON_NO_GPUS
        t0 = self._m0
        next_sample = next_proc = next_ckpt = t0          # first checkpoint right away
        # a first look soon after start: a job whose batch step ends before the first regular
        # check would otherwise never be known to have had one (procs.JobWatch)
        next_orphan = t0 + min(FIRST_JOB_LOOK, c.orphan_check)
        while self.stop_reason is None:
            now = clock.monotonic()
            if now >= next_sample:
                self._sample(now)
                next_sample = next_deadline(next_sample, c.interval, now)
                if self._all_lost():
                    return REASON_ALL_LOST
                self._watch_step(now)
            if now >= next_proc:
                self._processes(now)
                next_proc = next_deadline(next_proc, c.process_interval, now)
            if now >= next_orphan:
                if self._orphaned(now):
                    return REASON_JOB_GONE
                next_orphan = next_deadline(next_orphan, c.orphan_check, now)
            if now >= next_ckpt:
                self._checkpoint(now, final=False)
                next_ckpt = next_deadline(next_ckpt, c.checkpoint_interval, now)
            if self.stop_reason is not None:
                break
            clock.wait(min(next_sample, next_proc, next_orphan, next_ckpt) - clock.monotonic())
        # Stopped from outside (the Epilog's SIGTERM): one last look at the GPUs.
        self._sample(clock.monotonic())
        return self.stop_reason or "stopped"

    def _finish(self, reason: str) -> None:
        log.info("job %d: sampler done (%s)", self.ctx.job_id, reason)
        now = self.clock.monotonic()
        if reason != REASON_JOB_GONE:
            self._checkpoint(now, final=True, reason=reason)
            return
        # No Epilog came: say so in the checkpoint, and spool the summary the Epilog would have.
        why = f"{NO_EPILOG} ({self._orphan_why})"
        doc = self._checkpoint(now, final=True, reason=reason, partial_reason=why)
        ended = self._epoch(self._gone_at if self._gone_at is not None else now)
        try:
            from piqc_slurm.sampler.orphan import spool_summary

            key = spool_summary(self.run_dir, doc, ended=ended, reason=why)
        except Exception as e:  # noqa: BLE001 - the checkpoint is written; exit cleanly anyway
            log.error("job %d: %s; cannot spool its summary: %s: %s", self.ctx.job_id, why, type(e).__name__, e)
            return
        if key is not None:
            log.warning("job %d: %s; partial summary spooled to the outbox as %s", self.ctx.job_id, why, key)

    def _epoch(self, mono: float) -> float:
        # One wall-clock reading at start, then monotonic: bins never jump
        # with NTP steps, and stay ordered.
        return self._wall0 + (mono - self._m0)

    # ---- the work ----

    def _sample(self, now: float) -> None:
        epoch = self._epoch(now)
        for minor, dev in self.source.devices.items():
            if dev.lost:
                continue
            s = self.source.read(minor)
            if s is None:
                continue
            agg = self.aggs[minor]
            if agg.power_limit_w is None and dev.power_limit_w is not None:   # described late (retried)
                agg.power_limit_w = _limit(dev.power_limit_w)
            agg.add(now, s)
            self.binner.add(epoch, minor, s)
            if self.watch is not None:
                self.watch.add(epoch, minor, s)

    def _job_of(self, pid: int, fresh: dict[int, int | None]) -> int | None:
        if pid not in fresh:
            if pid in self._pid_jobs:
                fresh[pid] = self._pid_jobs[pid]
            else:
                fresh[pid] = self.job_of_pid(pid) if self.job_of_pid else None
        return fresh[pid]

    def _processes(self, now: float) -> None:
        fresh: dict[int, int | None] = {}
        for minor, dev in self.source.devices.items():
            if dev.lost:
                continue
            pids = self.source.processes(minor)
            if pids is None:
                continue
            mine = [p for p in pids if self._job_of(p, fresh) == self.ctx.job_id]
            self.aggs[minor].add_processes(now, pids, mine)
        # Keep only answers for pids still on a GPU: bounded, and a pid that
        # left and was reused is looked up afresh.
        self._pid_jobs = fresh if len(fresh) <= PID_CACHE_MAX else {}

    def _orphaned(self, now: float) -> bool:
        """True when the job is gone: its slurmstepd was seen and is now missing at
        two checks in a row, or none was seen within the grace period.

        Covers an Epilog that never ran or failed to stop us (slurmd crash,
        node reboot of slurmd only): a sampler must not outlive its job.
        """
        if self.job_alive is None:
            return False
        if self.job_alive():
            self._stepd_seen, self._stepd_missing = True, 0
            return False
        if self._stepd_seen:
            self._stepd_missing += 1
            if self._stepd_missing == 1:
                self._gone_at = now
            self._orphan_why = (f"its slurmstepd gone at {self._stepd_missing} checks "
                                f"{self.ctx.orphan_check:g}s apart")
            return self._stepd_missing >= 2
        self._orphan_why = f"no slurmstepd of the job seen within {self.orphan_grace:g}s of start"
        return now - self._m0 >= self.orphan_grace

    def _checkpoint(self, now: float, *, final: bool, reason: str | None = None,
                    partial_reason: str | None = None) -> dict:
        epoch = self._epoch(now)
        bins = self.binner.flush_all() if final else self.binner.flush_closed(epoch)
        try:
            self.timeline_bins += append_lines(self.run_dir / TIMELINE_NAME, bins)
        except OSError as e:
            log.error("job %d: cannot append the timeline: %s", self.ctx.job_id, e)
        doc = build_checkpoint(
            job_id=self.ctx.job_id, started=self.ctx.started, updated=epoch, final=final,
            exit_reason=reason, nvml_ok=self._nvml_ok, nvml_error=self._nvml_error,
            driver_version=getattr(self.source, "driver_version", None),
            interval=self.ctx.interval,
            gpus=[(dev, self.aggs[m]) for m, dev in self.source.devices.items()],
            timeline_bins=self.timeline_bins, partial_reason=partial_reason)
        if self.watch is not None:
            doc["watch"] = {**self.watch.state(), "actions": self.watch_actions}
        try:
            write_checkpoint(self.run_dir / CHECKPOINT_NAME, doc)
        except OSError as e:   # a full disk must not kill the sampler; try again next time
            log.error("job %d: cannot write the checkpoint: %s", self.ctx.job_id, e)
        return doc


# ---- the process ----

def _write_pidfile(run_dir: Path) -> None:
    write_atomic(run_dir / PID_NAME, f"{os.getpid()}\n".encode())


def _remove_pidfile(run_dir: Path) -> None:
    path = run_dir / PID_NAME
    try:
        if path.read_text().split()[0] == str(os.getpid()):
            path.unlink()
    except (OSError, IndexError):
        pass


def _job_record(run_dir: Path) -> dict | None:
    """The Prolog's RUN_DIR/job.json "job" (the watch's notices need the output path and ids)."""
    import json

    try:
        doc = json.loads((run_dir / "job.json").read_text())
    except (OSError, ValueError):
        return None
    job = doc.get("job") if isinstance(doc, dict) else None
    return job if isinstance(job, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit status (0 on every monitoring outcome;
    2 for a bad invocation or context; 1 for an unexpected failure)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m piqc_slurm.sampler RUN_DIR", file=sys.stderr)
        return 0 if args in (["-h"], ["--help"]) else 2
    run_dir = Path(args[0])
    try:
        ctx = load_context(run_dir / CONTEXT_NAME)
    except ContextError as e:
        log.error("sampler not started: %s", e)
        return 2
    from piqc_slurm.sampler.nvml import BACKOFF_CAP, NvmlSource  # pynvml only where it is needed

    clock = SystemClock()
    # A failing GPU is skipped for at most BACKOFF_CAP samples and about a minute between tries.
    backoff_cap = max(1, min(BACKOFF_CAP, round(BACKOFF_SECONDS / ctx.interval)))
    source = NvmlSource(ctx.gpus, max_errors=ctx.max_device_errors, backoff_cap=backoff_cap)
    sampler = Sampler(ctx, source, run_dir, clock=clock,
                      job_alive=JobWatch(ctx.job_id), job_of_pid=job_of_pid, job=_job_record(run_dir))

    def on_signal(signum: int, _frame: object) -> None:
        sampler.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)      # detached: a hangup means nothing
    try:
        _write_pidfile(run_dir)
    except OSError as e:   # the orphan check still ends us if no Epilog can find us
        log.error("job %d: cannot write %s: %s (sampling anyway)", ctx.job_id, PID_NAME, e)
    log.info("job %d: sampler started, GPUs %s, every %gs", ctx.job_id,
             ",".join(map(str, ctx.gpus)) or "none", ctx.interval)
    try:
        return sampler.run()
    finally:
        _remove_pidfile(run_dir)
        clock.close()
