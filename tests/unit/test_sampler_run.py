"""The sampler loop and the sampler process.

First the loop itself, driven by a fake clock and a scripted GPU source (no
NVML, no sleeping: a simulated hour takes milliseconds). Then the real
process, `python -m piqc_slurm.sampler RUN_DIR`, against the fake NVML
driver (docker-slurm/fakenvml) read through the real pynvml, with
docker-slurm/fakegpu-work publishing the load, as on the test cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from piqc_slurm.sampler.aggregate import Sample
from piqc_slurm.sampler.checkpoint import load_checkpoint, read_timeline
from piqc_slurm.sampler.context import Context
from piqc_slurm.sampler.errors import NvmlUnavailable
from piqc_slurm.sampler.run import Sampler, SystemClock, next_deadline
from piqc_slurm.sampler.source import DeviceInfo

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FAKENVML_SRC = REPO / "docker-slurm" / "fakenvml"
WORKLOAD = REPO / "docker-slurm" / "fakegpu-work"
# (minor, uuid, MiB, W, name) in NVML index order: minor 3 is index 2 and
# minor 2 is index 3, so anything matching GPUs by position shows up wrong.
GPUS = [
    (0, "GPU-5a3c2a10-0000-4000-8000-000000000000", 81559, 700, "NVIDIA H100 80GB HBM3"),
    (1, "GPU-5a3c2a10-0000-4000-8000-000000000001", 81559, 700, "NVIDIA H100 80GB HBM3"),
    (3, "GPU-5a3c2a10-0000-4000-8000-000000000003", 23028, 300, "NVIDIA A10G"),
    (2, "GPU-5a3c2a10-0000-4000-8000-000000000002", 23028, 300, "NVIDIA A10G"),
]


def context(**kw: Any) -> Context:
    base: dict[str, Any] = dict(cluster="test", job_id=4242, restart_count=0, node="n1", uid=1000,
                                user="alice", gpus=(0, 1), interval=1.0, process_interval=10.0,
                                checkpoint_interval=30.0, timeline_bin=60, active_util=5.0,
                                orphan_check=60.0, started=1_700_000_000.0)
    base.update(kw)
    return Context(**base)


# ---------------------------------------------------------------------------
# The loop, with a fake clock and a scripted source
# ---------------------------------------------------------------------------

class FakeClock:
    """Monotonic time that only moves when the loop waits; events fire at set times."""

    def __init__(self, t: float = 5000.0, wall: float = 1_700_000_000.0):
        self.t0, self.t, self.wall = t, t, wall
        self.waits: list[float] = []
        self.events: list[tuple[float, Callable[[], None]]] = []
        self.stall: dict[float, float] = {}     # at time T, a wait overruns by S seconds

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.wall + (self.t - self.t0)

    def at(self, offset: float, fn: Callable[[], None]) -> None:
        self.events.append((self.t0 + offset, fn))
        self.events.sort(key=lambda e: e[0])

    def wait(self, timeout: float) -> None:
        assert timeout > 0, f"busy loop: wait({timeout})"
        self.waits.append(timeout)
        target = self.t + timeout
        for when, over in list(self.stall.items()):
            if self.t <= self.t0 + when < target:
                target += over
                del self.stall[when]
        if self.events and self.events[0][0] <= target:
            when, fn = self.events.pop(0)
            self.t = max(self.t, when)
            fn()
            return
        self.t = target

    def wake(self) -> None:
        pass


class ScriptedSource:
    """A GpuSource whose readings are functions of the fake clock's time."""

    driver_version = "test-1.0"

    def __init__(self, clock: FakeClock, minors: list[int], *,
                 util: Callable[[int, float], float | None] = lambda m, t: 50.0,
                 procs: Callable[[int, float], list[int] | None] = lambda m, t: [],
                 lose: dict[int, float] | None = None, fail_open: str | Exception | None = None,
                 explode_at: float | None = None):
        self.clock, self.util, self.procs = clock, util, procs
        self.lose, self.fail_open, self.explode_at = lose or {}, fail_open, explode_at
        self._devices = {m: DeviceInfo(minor=m, index=i, uuid=f"GPU-{m}", name="Fake")
                         for i, m in enumerate(minors)}
        self.reads = 0
        self.closed = False

    @property
    def devices(self) -> dict[int, DeviceInfo]:
        return self._devices

    def open(self) -> None:
        if isinstance(self.fail_open, Exception):
            raise self.fail_open
        if self.fail_open:
            raise NvmlUnavailable(self.fail_open)

    def _elapsed(self) -> float:
        return self.clock.t - self.clock.t0

    def read(self, minor: int) -> Sample | None:
        dev = self._devices[minor]
        if dev.lost:
            return None
        t = self._elapsed()
        if self.explode_at is not None and t >= self.explode_at:
            raise RuntimeError("boom")
        if minor in self.lose and t >= self.lose[minor]:
            dev.lost, dev.error = True, "utilization: NVMLError_GpuIsLost: GPU is lost"
            return None
        self.reads += 1
        u = self.util(minor, t)
        return Sample(util=u, power_w=100.0 + (u or 0), energy_mj=t * 100_000.0, mem_used_mib=1024.0)

    def processes(self, minor: int) -> list[int] | None:
        return None if self._devices[minor].lost else self.procs(minor, self._elapsed())

    def close(self) -> None:
        self.closed = True


def run_loop(tmp_path: Path, ctx: Context, clock: FakeClock, source: ScriptedSource,
             **kw: Any) -> tuple[int, dict[str, Any], Sampler]:
    sampler = Sampler(ctx, source, tmp_path, clock=clock, **kw)
    rc = sampler.run()
    return rc, load_checkpoint(tmp_path / "checkpoint.json"), sampler


def agg_of(doc: dict[str, Any], minor: int) -> dict[str, Any]:
    return next(g["agg"] for g in doc["gpus"] if g["minor"] == minor)


def test_schedule_without_drift_and_final_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0, 1], util=lambda m, t: 90.0 if m == 0 else 0.0)
    ctx = context()
    sampler_box: list[Sampler] = []
    clock.at(3600.5, lambda: sampler_box[0].request_stop("SIGTERM"))
    sampler = Sampler(ctx, source, tmp_path, clock=clock, job_alive=lambda: True)
    sampler_box.append(sampler)
    assert sampler.run() == 0
    doc = load_checkpoint(tmp_path / "checkpoint.json")
    assert doc["final"] is True and doc["exit_reason"] == "SIGTERM"
    assert doc["nvml"] == {"ok": True, "error": None, "driver_version": "test-1.0"}
    a0, a1 = agg_of(doc, 0), agg_of(doc, 1)
    # samples at 0, 1, ..., 3600 plus the last one on SIGTERM
    assert a0["samples"] == a1["samples"] == 3602
    assert a0["seconds"] == pytest.approx(3601.5)
    assert a0["util_mean"] == 90.0 and a1["util_mean"] == 0.0
    assert a0["process_checks"] == 361
    assert a0["energy_source"] == "counter"
    assert a0["energy_j"] == pytest.approx(360_050.0)      # the scripted counter: 100 J/s
    # the loop only ever slept until the next deadline: never 0, never a busy loop
    assert len(clock.waits) == 3601
    assert doc["updated"] == pytest.approx(1_700_000_000.0 + 3600.5)
    bins = read_timeline(tmp_path / "timeline.jsonl", doc["timeline_bins"])
    assert doc["timeline_bins"] == len(bins) == 2 * 61               # 60 whole bins + the open one, 2 GPUs
    assert all(b["util"] == (90.0 if b["gpu"] == 0 else 0.0) for b in bins)
    assert source.closed


def test_checkpoint_happens_at_start_and_every_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0])
    seen: list[tuple[float, int]] = []

    def peek() -> None:
        doc = load_checkpoint(tmp_path / "checkpoint.json")
        seen.append((clock.t - clock.t0, agg_of(doc, 0)["samples"]))

    for t in (0.5, 29.5, 30.5, 61.0):
        clock.at(t, peek)
    clock.at(65.0, lambda: sampler.request_stop("SIGINT"))
    sampler = Sampler(context(), source, tmp_path, clock=clock, job_alive=lambda: True)
    assert sampler.run() == 0
    assert seen == [(0.5, 1), (29.5, 1), (30.5, 31), (61.0, 61)]


def test_stalled_sampler_skips_missed_deadlines_and_caps_the_gap(tmp_path: Path) -> None:
    clock = FakeClock()
    clock.stall[10.0] = 100.0        # the wait before t=11 overruns by 100 s
    source = ScriptedSource(clock, [0])
    clock.at(130.2, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(), source, tmp_path, clock=clock, job_alive=lambda: True)
    sampler.run()
    a = agg_of(load_checkpoint(tmp_path / "checkpoint.json"), 0)
    # 0..10, then one sample at ~111 (not 100 catch-up samples), 112..130, last
    assert a["samples"] == 11 + 1 + 19 + 1
    assert a["seconds"] == pytest.approx(1 + 10 + 3 + 19 + 0.2)


def test_next_deadline() -> None:
    assert next_deadline(10.0, 1.0, 10.2) == 11.0
    assert next_deadline(10.0, 1.0, 15.5) == 16.0
    assert next_deadline(10.0, 1.0, 11.0) == 12.0
    assert next_deadline(10.0, 0.2, 10.0) == pytest.approx(10.2)


def test_process_attribution_by_job(tmp_path: Path) -> None:
    clock = FakeClock()
    jobs = {100: 4242, 200: 9999}
    looked_up: list[int] = []

    def job_of(pid: int) -> int | None:
        looked_up.append(pid)
        return jobs.get(pid)

    # GPU 0: our job's process from t=20; GPU 1: another job's process (a foreign
    # tenant on our GPU) all along.
    source = ScriptedSource(clock, [0, 1], procs=lambda m, t: ([100] if t >= 20 else []) if m == 0 else [200])
    clock.at(100.5, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(), source, tmp_path, clock=clock, job_alive=lambda: True, job_of_pid=job_of)
    sampler.run()
    doc = load_checkpoint(tmp_path / "checkpoint.json")
    a0, a1 = agg_of(doc, 0), agg_of(doc, 1)
    assert a0["process_checks"] == 11
    assert a0["process_seconds"] == a0["job_process_seconds"] == 90.0      # checks at 20..100
    assert (a0["pids"], a0["job_pids"]) == ([100], [100])
    assert a1["process_seconds"] == 110.0 and a1["job_process_seconds"] == 0.0
    assert (a1["pids"], a1["job_pids"]) == ([200], [])
    assert sorted(set(looked_up)) == [100, 200] and len(looked_up) == 2      # cached while present


def test_orphan_after_two_missing_checks(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0])
    ctx = context(orphan_check=10.0)
    rc, doc, _ = run_loop(tmp_path, ctx, clock, source,
                          job_alive=lambda: clock.t - clock.t0 < 45)
    assert rc == 0
    assert doc["final"] and doc["exit_reason"] == "job gone"
    # alive at 10..40, missing at 50 and 60: gone at 60
    assert doc["updated"] == pytest.approx(1_700_000_000.0 + 60)
    assert doc["partial_reason"] == "no epilog: job ended without one (its slurmstepd gone at 2 checks 10s apart)"
    assert not (tmp_path.parent / "outbox").exists()       # not a spool run dir: nothing spooled


def test_orphan_when_no_stepd_is_ever_seen(tmp_path: Path) -> None:
    clock = FakeClock()
    rc, doc, _ = run_loop(tmp_path, context(orphan_check=60.0), clock, ScriptedSource(clock, [0]),
                          job_alive=lambda: False, orphan_grace=300.0)
    assert rc == 0 and doc["exit_reason"] == "job gone"
    assert doc["updated"] == pytest.approx(1_700_000_000.0 + 300)
    assert doc["partial_reason"] == ("no epilog: job ended without one "
                                     "(no slurmstepd of the job seen within 300s of start)")


def test_a_stepd_blip_is_not_an_orphan(tmp_path: Path) -> None:
    clock = FakeClock()
    alive = iter([True, False, True, False, True] + [True] * 100)
    clock.at(95.0, lambda: sampler.request_stop("SIGTERM"))
    sampler = Sampler(context(orphan_check=10.0), ScriptedSource(clock, [0]), tmp_path, clock=clock,
                      job_alive=lambda: next(alive))
    sampler.run()
    doc = load_checkpoint(tmp_path / "checkpoint.json")
    assert doc["exit_reason"] == "SIGTERM" and doc["partial_reason"] is None


def test_nvml_unavailable(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0, 1], fail_open="NVIDIA driver not loaded")
    rc, doc, _ = run_loop(tmp_path, context(), clock, source)
    assert rc == 0
    assert doc["final"] and doc["exit_reason"] == "nvml unavailable"
    assert doc["nvml"]["ok"] is False and doc["nvml"]["error"] == "NVIDIA driver not loaded"
    assert [g["minor"] for g in doc["gpus"]] == [0, 1]
    assert all(g["agg"]["samples"] == 0 for g in doc["gpus"])
    assert clock.waits == []


def test_lost_gpu_keeps_its_aggregate_and_all_lost_ends(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0, 1], lose={1: 5.0, 0: 20.0})
    rc, doc, _ = run_loop(tmp_path, context(), clock, source, job_alive=lambda: True)
    assert rc == 0 and doc["exit_reason"] == "all gpus lost"
    g = {x["minor"]: x for x in doc["gpus"]}
    assert g[1]["lost"] and "GPU is lost" in g[1]["error"] and g[1]["agg"]["samples"] == 5
    assert g[0]["lost"] and g[0]["agg"]["samples"] == 20


def test_unexpected_error_leaves_a_final_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock()
    rc, doc, _ = run_loop(tmp_path, context(), clock, ScriptedSource(clock, [0], explode_at=3.0),
                          job_alive=lambda: True)
    assert rc == 1
    assert doc["final"] and doc["exit_reason"] == "error: RuntimeError: boom"
    assert agg_of(doc, 0)["samples"] == 3


def test_unexpected_error_in_open(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0], fail_open=KeyError("x"))
    rc, doc, _ = run_loop(tmp_path, context(), clock, source)
    assert rc == 1 and doc["exit_reason"] == "error: KeyError: 'x'" and source.closed


def test_system_clock_wait_ends_early_on_wake() -> None:
    clock = SystemClock()
    try:
        t = time.monotonic()
        clock.wait(0.05)
        assert 0.04 <= time.monotonic() - t < 1
        old = signal.signal(signal.SIGUSR1, lambda *_: clock.wake())
        try:
            timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            t = time.monotonic()
            clock.wait(5.0)
            assert time.monotonic() - t < 1.0
            timer.join()
        finally:
            signal.signal(signal.SIGUSR1, old)
    finally:
        clock.close()


def test_stop_before_the_first_sample_still_samples_once(tmp_path: Path) -> None:
    clock = FakeClock()
    sampler = Sampler(context(), ScriptedSource(clock, [0]), tmp_path, clock=clock)
    sampler.request_stop("SIGTERM")
    assert sampler.run() == 0
    doc = load_checkpoint(tmp_path / "checkpoint.json")
    assert doc["exit_reason"] == "SIGTERM" and agg_of(doc, 0)["samples"] == 1


def test_no_gpus(tmp_path: Path) -> None:
    clock = FakeClock()
    rc, doc, _ = run_loop(tmp_path, context(gpus=()), clock, ScriptedSource(clock, []))
    assert rc == 0 and doc["exit_reason"] == "no gpus" and doc["gpus"] == []


def test_checkpoint_write_failure_does_not_stop_sampling(tmp_path: Path) -> None:
    clock = FakeClock()
    (tmp_path / "checkpoint.json").mkdir()          # os.replace onto a directory fails
    clock.at(40.5, lambda: sampler.request_stop("SIGTERM"))
    source = ScriptedSource(clock, [0])
    sampler = Sampler(context(), source, tmp_path, clock=clock, job_alive=lambda: True)
    assert sampler.run() == 0
    assert source.reads == 42


def test_power_frac_mean_uses_each_devices_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    clock.at(10.5, lambda: sampler.request_stop("SIGTERM"))
    source = ScriptedSource(clock, [0, 1, 2])
    source.devices[0].power_limit_w = 200.0         # power reads 100 + util = 150 W
    source.devices[2].power_limit_w = float("nan")  # unusable: no fraction
    sampler = Sampler(context(gpus=(0, 1, 2)), source, tmp_path, clock=clock, job_alive=lambda: True)
    assert sampler.run() == 0
    doc = load_checkpoint(tmp_path / "checkpoint.json")
    assert agg_of(doc, 0)["power_frac_mean"] == 0.75 and agg_of(doc, 0)["power_mean_w"] == 150.0
    assert "power_frac_mean" not in agg_of(doc, 1) and "power_frac_mean" not in agg_of(doc, 2)


# ---------------------------------------------------------------------------
# The real process against the fake NVML driver
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fakelib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("make") or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("make and a C compiler are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("sampler-fakenvml")
    r = subprocess.run(["make", "-C", str(FAKENVML_SRC), f"OUT={out}"], check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


class Node:
    """A fake GPU node: driver config, state dir, a run dir; starts processes."""

    def __init__(self, lib: Path, tmp: Path):
        self.lib, self.tmp = lib, tmp
        self.state = tmp / "state"
        self.state.mkdir()
        self.state.chmod(0o1777)
        self.config = tmp / "fakenvml.conf"
        lines = [f"state_dir {self.state}", "driver_version 550.54.15"]
        lines += [f"gpu {m} {u} {mem} {w} {n}" for m, u, mem, w, n in GPUS]
        self.config.write_text("\n".join(lines) + "\n")
        self.run_dir = tmp / "run"
        self.run_dir.mkdir(mode=0o700)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("FAKENVML_FAULT", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")}
        env.update(LD_LIBRARY_PATH=str(self.lib), FAKENVML_CONFIG=str(self.config),
                   PYTHONPATH=str(REPO), PIQC_SAMPLER_LOG="stderr",
                   PIQC_SAMPLER_LOG_LEVEL="debug")
        env.update(extra)
        return env

    def write_context(self, **kw: Any) -> Context:
        values: dict[str, Any] = dict(job_id=970_000 + os.getpid() % 9_999, gpus=(0, 1, 2, 3),
                                      interval=0.2, process_interval=0.4, checkpoint_interval=0.5,
                                      timeline_bin=1, orphan_check=30.0, started=time.time())
        ctx = context(**{**values, **kw})
        (self.run_dir / "context.json").write_text(ctx.to_json())
        return ctx

    def sampler(self, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "piqc_slurm.sampler", str(self.run_dir)],
                                env=self.env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    @contextmanager
    def workload(self, load: list[dict[str, Any]], **env: str) -> Iterator[subprocess.Popen[str]]:
        argv = [str(WORKLOAD)] if Path("/usr/bin/python3").exists() else [sys.executable, str(WORKLOAD)]
        proc = subprocess.Popen([*argv, "--minors", "0,1,2,3", "--seconds", "60", "--load", json.dumps(load)],
                                env=self.env(**env), stderr=subprocess.PIPE, text=True)
        try:
            minors = {[0, 1, 2, 3][i] for entry in load for i in entry["gpus"]}
            wait_for(lambda: all((self.state / f"gpu{m}.state").exists() for m in minors), 10,
                     "fakegpu-work did not publish its load")
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
            assert proc.stderr
            proc.stderr.close()

    def checkpoint(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.run_dir / "checkpoint.json").read_text())
        except (OSError, ValueError):
            return None


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def wait_samples(node: Node, n: int, timeout: float = 10.0) -> dict[str, Any]:
    def enough() -> dict[str, Any] | None:
        doc = node.checkpoint()
        ok = doc and any(g["agg"]["samples"] >= n for g in doc["gpus"])
        return doc if ok else None
    return wait_for(enough, timeout, f"no checkpoint with {n} samples")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    t = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=10)
    took = time.monotonic() - t
    assert proc.stderr
    err = proc.stderr.read()
    proc.stderr.close()
    return rc, took, err


@pytest.fixture
def node(fakelib: Path, tmp_path: Path) -> Node:
    return Node(fakelib, tmp_path)


def by_minor(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {g["minor"]: g for g in doc["gpus"]}


def test_process_two_of_four_loaded(node: Node) -> None:
    ctx = node.write_context()
    load = [{"gpus": [1, 2], "util": 80, "util_jitter": 3, "mem_gib": 10, "mem_util": 40}]
    # the workload carries the job's id in its environment (no Slurm cgroup here),
    # so attribution goes the environ fallback way
    with node.workload(load, SLURM_JOB_ID=str(ctx.job_id)) as work:
        proc = node.sampler()
        wait_samples(node, 10)
        time.sleep(0.3)                          # a process check and a closed bin more
        cpu = _cpu_seconds(proc.pid)
        rc, took, err = stop(proc)
    assert rc == 0, err
    assert took < 1.0, f"SIGTERM took {took:.2f}s"
    assert cpu < 1.5, f"sampler used {cpu:.2f}s of CPU in ~2.5 s: busy loop?"
    doc = load_checkpoint(node.run_dir / "checkpoint.json")
    assert doc["final"] is True and doc["exit_reason"] == "SIGTERM"
    assert doc["job_id"] == ctx.job_id and doc["started"] == ctx.started
    assert doc["nvml"] == {"ok": True, "error": None, "driver_version": "550.54.15"}
    g = by_minor(doc)
    assert [x["minor"] for x in doc["gpus"]] == [0, 1, 2, 3]               # the job's order
    assert {m: g[m]["index"] for m in g} == {0: 0, 1: 1, 2: 3, 3: 2}       # matched by minor
    assert g[2]["name"] == "NVIDIA A10G" and g[2]["uuid"] == GPUS[3][1]
    assert g[2]["mem_total_mib"] == 23028 and g[2]["power_limit_w"] == 300
    for m in (1, 2):                              # relative 1, 2 -> minors 1, 2
        a = g[m]["agg"]
        assert 75 <= a["util_mean"] <= 85, a
        assert 70 <= a["util_p50"] <= a["util_p95"] <= a["util_max"] <= 85
        assert a["mem_used_max_mib"] == 10 * 1024 and a["mem_util_mean"] == 40
        assert a["energy_j"] > 0 and a["energy_source"] == "counter"
        assert a["power_mean_w"] > 200 and a["sm_clock_max_mhz"] > 1500
        assert a["job_process_seconds"] > 0 and a["job_pids"] == [work.pid]
        assert a["active_seconds"] > 1.5
    for m in (0, 3):
        a = g[m]["agg"]
        assert a["util_mean"] == 0 and a["util_max"] == 0 and a["mem_used_max_mib"] == 0
        assert a["energy_j"] > 0 and a["power_mean_w"] == 60
        assert a["process_seconds"] == 0 and a["pids"] == []
    assert all(not x["lost"] and x["error"] is None for x in doc["gpus"])
    bins = read_timeline(node.run_dir / "timeline.jsonl", doc["timeline_bins"])
    assert len(bins) == doc["timeline_bins"] >= 8
    assert {b["gpu"] for b in bins} == {0, 1, 2, 3}
    assert all(75 <= b["util"] <= 85 for b in bins if b["gpu"] in (1, 2))
    assert not (node.run_dir / "sampler.pid").exists()                     # removed on exit


GPM_KEYS = tuple(f"{m}_{s}" for m in ("sm_active", "sm_occupancy", "tensor_active", "dram_active")
                 for s in ("mean", "p95"))


def test_process_gpm_on_h100_and_power_against_the_limit(node: Node) -> None:
    node.write_context()
    load = [{"gpus": [0], "util": 90, "mem_gib": 10, "power_frac": 0.25, "sm_active": 0.3,
             "tensor_active": 0.1, "dram_active": 0.5},
            {"gpus": [2], "util": 60, "power_frac": 0.5, "sm_active": 0.6, "tensor_active": 0.2}]
    with node.workload(load):
        proc = node.sampler()
        wait_samples(node, 8)
        rc, _, err = stop(proc)
    assert rc == 0, err
    doc = load_checkpoint(node.run_dir / "checkpoint.json")
    g = by_minor(doc)
    assert [g[m]["name"] for m in (0, 1, 2)] == ["NVIDIA H100 80GB HBM3"] * 2 + ["NVIDIA A10G"]
    h100 = g[0]["agg"]
    # GPM through the real pynvml: SM_UTIL, ANY_TENSOR_UTIL, DRAM_BW_UTIL as fractions
    assert (h100["sm_active_mean"], h100["tensor_active_mean"], h100["dram_active_mean"]) == (0.3, 0.1, 0.5)
    assert (h100["sm_active_p95"], h100["tensor_active_p95"], h100["dram_active_p95"]) == (0.3, 0.1, 0.5)
    # the fake driver has nothing for SM_OCCUPANCY: per-metric NOT_SUPPORTED -> absent
    assert "sm_occupancy_mean" not in h100 and "sm_occupancy_p95" not in h100
    assert set(h100["acc"]["gpm_hist_ms"]) == {"sm_active", "tensor_active", "dram_active"}
    # GPM covers the run but for the first sample (no pair yet) and, maybe, the
    # SIGTERM one (< 100 ms after the previous)
    gpm_seconds = h100["acc"]["sm_active"][1]
    assert h100["seconds"] - 0.3 <= gpm_seconds <= h100["seconds"]
    assert h100["power_frac_mean"] == pytest.approx(0.25, abs=0.002)     # 175 W of 700 W
    # an idle H100 (no workload): GPM supported, nothing measured -> absent; power at idle 60 W
    idle = g[1]["agg"]
    assert not any(k in idle for k in GPM_KEYS) and "gpm_hist_ms" not in idle["acc"]
    assert idle["power_frac_mean"] == pytest.approx(60 / 700, abs=0.002)
    # an A10G has no GPM at all, whatever the load says; power still against its 300 W limit
    a10g = g[2]["agg"]
    assert not any(k in a10g for k in GPM_KEYS) and "gpm_hist_ms" not in a10g["acc"]
    assert a10g["power_frac_mean"] == pytest.approx(0.5, abs=0.002)
    assert err.count("minor 2: no GPM") == 1 and err.count("minor 3: no GPM") == 1
    assert "GPM failed" not in err and "GPM unavailable" not in err


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_process_driver_not_loaded(node: Node) -> None:
    node.write_context()
    proc = node.sampler(FAKENVML_FAULT="driver_not_loaded")
    rc = proc.wait(timeout=15)
    assert proc.stderr
    err = proc.stderr.read()
    proc.stderr.close()
    assert rc == 0, err
    doc = load_checkpoint(node.run_dir / "checkpoint.json")
    assert doc["final"] is True and doc["exit_reason"] == "nvml unavailable"
    assert doc["nvml"]["ok"] is False and "driver not loaded" in doc["nvml"]["error"].lower()
    assert all(g["agg"]["samples"] == 0 for g in doc["gpus"])


def test_process_gpu_lost(node: Node) -> None:
    node.write_context()
    proc = node.sampler(FAKENVML_FAULT="gpu_lost:1")
    wait_samples(node, 5)
    rc, _, err = stop(proc)
    assert rc == 0, err
    g = by_minor(load_checkpoint(node.run_dir / "checkpoint.json"))
    assert g[1]["lost"] is True and g[1]["error"] and g[1]["agg"]["samples"] == 0
    assert g[1]["index"] is None                 # its minor could not even be read
    for m in (0, 2, 3):
        assert g[m]["lost"] is False and g[m]["agg"]["samples"] >= 5
    assert "lost" in err                          # logged (once)
    assert err.count("minor 1: lost") == 1


def test_process_flaky_gpu_recovers_and_a_lost_one_is_lost_at_once(node: Node) -> None:
    from piqc_slurm.summary import device
    from piqc_slurm.usage.catalog import load_catalog

    node.write_context()                       # max_device_errors 5 (the default)
    proc = node.sampler()
    try:
        before = by_minor(wait_samples(node, 5))
        # minor 2 (an A10G, NVML index 3): the next 3 queries fail with NVML_ERROR_UNKNOWN;
        # minor 3: falls off the bus
        (node.state / "gpu2.flaky").write_text("3\n")
        (node.state / "gpu3.lost").touch()

        def third_error() -> dict[str, Any] | None:
            doc = node.checkpoint()
            return doc if doc and by_minor(doc)[2]["errors"] == 3 else None
        at_third = by_minor(wait_for(third_error, 15, "minor 2 never had its 3 errors"))
        wait_for(lambda: (d := node.checkpoint()) and by_minor(d)[2]["agg"]["samples"]
                 >= at_third[2]["agg"]["samples"] + 5, 15, "minor 2 not sampled again after its errors")
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err
    g = by_minor(load_checkpoint(node.run_dir / "checkpoint.json"))
    flaky, lost = g[2], g[3]
    assert not flaky["lost"] and flaky["error"] is None and flaky["errors"] == 3
    # 3 failed reads and the 1 + 2 skipped after the first two (+ 4 after the third, unless a
    # process query took one of the failures): 6..10 reads without a sample
    assert 6 <= flaky["skipped"] <= 10, flaky["skipped"]
    assert "NVMLError_Unknown" in (flaky["last_error"] or "")
    assert flaky["agg"]["samples"] >= at_third[2]["agg"]["samples"] + 5 > before[2]["agg"]["samples"]
    # lost at once: no retries, no samples after it
    assert lost["lost"] and "GPU is lost" in (lost["error"] or "") and lost["errors"] == 0
    assert lost["agg"]["samples"] <= at_third[3]["agg"]["samples"] < g[0]["agg"]["samples"]
    for m in (0, 1):
        assert not g[m]["lost"] and g[m]["errors"] == g[m]["skipped"] == 0
    assert err.count("minor 3: lost") == 1 and err.count("minor 2: readable again") == 1
    assert "minor 2: lost" not in err
    # the summary's device entry: complete but for the skipped samples, and says so
    d = device(flaky, load_catalog())
    assert (d["lost"], d["errors"], d["skipped_samples"], d["partial"]) == (False, 3, flaky["skipped"], True)
    assert d["partial_reason"].startswith(f"3 NVML errors, {flaky['skipped']} samples skipped; recovered")
    assert device(g[0], load_catalog())["partial"] is False
    assert device(lost, load_catalog())["partial_reason"].startswith("lost: ")


def test_process_flaky_at_start_is_looked_up_again(node: Node) -> None:
    node.write_context()
    # minor 1 (index 1): its first 2 queries fail, the very first being open's minor-number read
    proc = node.sampler(FAKENVML_FAULT="flaky:1:2")
    try:
        wait_for(lambda: (d := node.checkpoint()) and by_minor(d)[1]["agg"]["samples"] >= 3, 15,
                 "minor 1 never sampled")
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err
    g = by_minor(load_checkpoint(node.run_dir / "checkpoint.json"))[1]
    assert not g["lost"] and (g["index"], g["uuid"], g["name"]) == (1, GPUS[1][1], GPUS[1][4])
    # open failed (skip 1 read), the retry failed (skip 2): reads 0..3 without a sample
    assert (g["errors"], g["skipped"]) == (2, 4)
    assert "not found among 4" in (g["last_error"] or "")
    assert g["agg"]["power_frac_mean"] == pytest.approx(60 / 700, abs=0.002)   # described late, limit known


def test_process_power_not_supported(node: Node) -> None:
    node.write_context()
    proc = node.sampler(FAKENVML_FAULT="power_not_supported")
    wait_samples(node, 5)
    rc, _, err = stop(proc)
    assert rc == 0, err
    for g in load_checkpoint(node.run_dir / "checkpoint.json")["gpus"]:
        a = g["agg"]
        for key in ("power_mean_w", "power_max_w", "energy_j", "energy_source"):
            assert key not in a, key
        assert "power" not in a["acc"] and "energy" not in a["acc"]
        assert "util_mean" in a and "temp_max_c" in a


def test_process_sigkill_leaves_last_checkpoint_not_final(node: Node) -> None:
    node.write_context()
    proc = node.sampler()
    wait_samples(node, 6)
    rc, _, _ = stop(proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    doc = load_checkpoint(node.run_dir / "checkpoint.json")       # complete, valid
    assert doc["final"] is False and doc["exit_reason"] is None
    assert all(g["agg"]["samples"] >= 6 for g in doc["gpus"])
    assert (node.run_dir / "sampler.pid").read_text().strip() == str(proc.pid)
    assert not list(node.run_dir.glob(".*tmp*"))


def test_process_exits_when_the_job_is_gone(node: Node) -> None:
    ctx = node.write_context(orphan_check=0.3)
    # a batch step: an extern stepd alone keeps a job alive only while a slurmd runs (procs.JobWatch),
    # and no slurmd runs on a machine whose test cluster is down
    stepd = subprocess.Popen(["bash", "-c", f'exec -a "slurmstepd: [{ctx.job_id}.batch]" sleep 30'])
    try:
        proc = node.sampler()
        wait_samples(node, 4)
        stepd.kill()
        stepd.wait()
        rc = proc.wait(timeout=5)               # two missed checks: ~0.6 s
    finally:
        if stepd.poll() is None:
            stepd.kill()
            stepd.wait()
    assert proc.stderr
    proc.stderr.close()
    assert rc == 0
    doc = load_checkpoint(node.run_dir / "checkpoint.json")
    assert doc["final"] is True and doc["exit_reason"] == "job gone"


def test_process_job_gone_without_epilog_spools_a_partial_summary(node: Node) -> None:
    from piqc_slurm import config
    from piqc_slurm.hooks.epilog import run as epilog

    job_id = 970_000 + os.getpid() % 9_999
    spool = node.tmp / "spool"
    key = f"test.{job_id}.0.n1"
    node.run_dir = spool / "run" / key                  # the Prolog's layout: <spool>/run/<key>
    node.run_dir.mkdir(mode=0o700, parents=True)
    for d in (spool, spool / "run"):
        d.chmod(0o700)
    ctx = node.write_context(job_id=job_id, orphan_check=0.3)
    job = {"cluster": "test", "job_id": job_id, "restart_count": 0, "node": "n1", "uid": 1000, "gid": 1000,
           "user": "alice", "account": "research", "partition": "gpu", "gpus": [0, 1, 2, 3],
           "nodelist": "n1", "stdout": None, "work_dir": None, "array_job_id": None, "array_task_id": None,
           "exit_code": None, "spank_monitor": None}
    (node.run_dir / "job.json").write_text(json.dumps(
        {"job": job, "monitor": "on", "monitor_note": "", "interval": 0.2, "prolog_time": ctx.started}))
    stepd = subprocess.Popen(["bash", "-c", f'exec -a "slurmstepd: [{job_id}.batch]" sleep 30'])
    try:
        proc = node.sampler()
        wait_samples(node, 4)
        killed = time.time()
        stepd.kill()                             # slurmd is dead: no Epilog will come
        stepd.wait()
        rc = proc.wait(timeout=5)                # two missed checks: ~0.6 s
    finally:
        if stepd.poll() is None:
            stepd.kill()
            stepd.wait()
    assert proc.stderr
    err = proc.stderr.read()
    proc.stderr.close()
    assert rc == 0, err
    # the run dir moved out of run/ (so the outbox backlog will deliver the summary), checkpoint kept
    orphaned = spool / "orphaned" / key
    assert not node.run_dir.exists() and orphaned.is_dir()
    ck = load_checkpoint(orphaned / "checkpoint.json")
    why = "no epilog: job ended without one (its slurmstepd gone at 2 checks 0.3s apart)"
    assert ck["final"] is True and ck["exit_reason"] == "job gone" and ck["partial_reason"] == why
    out_key = f"{key}.{int(ctx.started)}"            # the name the Epilog would have given it
    assert (orphaned / "spooled").read_text() == out_key + "\n"
    assert sorted(p.name for p in orphaned.iterdir()) == ["checkpoint.json", "context.json", "job.json", "spooled"]
    outbox = spool / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == [f"{out_key}.summary.json", f"{out_key}.timeline.jsonl"]
    summary_path = outbox / f"{out_key}.summary.json"
    doc = json.loads(summary_path.read_text())
    assert (doc["format"], doc["cluster"], doc["job_id"], doc["node"], doc["account"]) == \
        ("piqc-summary/1", "test", job_id, "n1", "research")
    assert doc["partial"] is True and doc["partial_reason"] == why and doc["exit_reason"] == "job gone"
    assert doc["monitor"] == "on" and doc["started"] == ctx.started and doc["exit_code"] is None
    # ended: the first check that missed the slurmstepd (after the kill, before the final checkpoint)
    assert killed - 0.05 <= doc["ended"] <= ck["updated"]
    assert [d["minor"] for d in doc["devices"]] == [0, 1, 2, 3]
    assert all(d["samples"] >= 4 and d["partial"] is False for d in doc["devices"])
    assert doc["timeline_bins"] == ck["timeline_bins"] > 0
    assert len(read_timeline(outbox / f"{out_key}.timeline.jsonl", ck["timeline_bins"])) == ck["timeline_bins"]
    assert "partial summary spooled to the outbox" in err
    # slurmd comes back and runs the Epilog after all: it takes the sampler's summary, builds no other
    cfg = config.Config({**config.defaults(), "cluster": "test", "spool_dir": str(spool),
                         "delivery": "spool-only", "epilog.user_report": False})
    before = summary_path.read_bytes()
    what = epilog({"SLURM_JOB_ID": str(job_id), "SLURMD_NODENAME": "n1", "SLURM_JOB_GPUS": "0,1,2,3",
                   "SLURM_JOB_UID": "1000", "SLURM_JOB_GID": "1000", "SLURM_JOB_USER": "alice"}, cfg)
    assert what.startswith(f"summary already spooled by the sampler as {out_key}"), what
    assert summary_path.read_bytes() == before and len(list(outbox.glob("*.summary.json"))) == 1
    assert not orphaned.exists()


def test_process_bad_context_exits_2(node: Node) -> None:
    (node.run_dir / "context.json").write_text('{"format": "piqc-context/9"}')
    proc = node.sampler()
    assert proc.wait(timeout=15) == 2
    assert proc.stderr
    assert "unknown context format" in proc.stderr.read()
    proc.stderr.close()
    assert not (node.run_dir / "checkpoint.json").exists()


def test_sampler_imports_stay_light() -> None:
    code = ("import sys, piqc_slurm.sampler as s, piqc_slurm.sampler.checkpoint;"
            "a = 'pynvml' in sys.modules;"
            "import piqc_slurm.sampler.run, piqc_slurm.sampler.nvml;"
            "print(a, sorted(m for m in ('pandas', 'sqlalchemy', 'click', 'jinja2') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert r.stdout.split() == ["False", "[]"]
