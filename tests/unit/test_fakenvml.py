"""The fake NVML driver (docker-slurm/fakenvml) seen through the REAL pynvml.

The library is built with make into a temp dir; every NVML read happens in a
fresh interpreter whose LD_LIBRARY_PATH points at it (the dynamic loader reads
LD_LIBRARY_PATH at process start, so it cannot be set from inside pytest).
The load comes from docker-slurm/fakegpu-work running as a real subprocess,
so these tests also pin the state-file contract between the two.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pynvml")

REPO = Path(__file__).resolve().parents[2]
FAKENVML_SRC = REPO / "docker-slurm" / "fakenvml"
WORKLOAD = REPO / "docker-slurm" / "fakegpu-work"
SYSTEM_PYTHON = Path("/usr/bin/python3")

# (minor, uuid, mem_total_mib, power_limit_w, name) in NVML index order;
# index 2 is minor 3 and index 3 is minor 2, as on nodes where they differ.
GPUS = [
    (0, "GPU-4f3c2a10-0000-4000-8000-000000000000", 81559, 700, "NVIDIA H100 80GB HBM3"),
    (1, "GPU-4f3c2a10-0000-4000-8000-000000000001", 81559, 700, "NVIDIA H100 80GB HBM3"),
    (3, "GPU-4f3c2a10-0000-4000-8000-000000000003", 23028, 300, "NVIDIA A10G"),
    (2, "GPU-4f3c2a10-0000-4000-8000-000000000002", 23028, 300, "NVIDIA A10G"),
]
IDLE_MW = 60_000
MIB = 1 << 20

REQUIRED_SYMBOLS = [
    "nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString",
    "nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion",
    "nvmlDeviceGetCount", "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetPowerUsage", "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo", "nvmlDeviceGetTemperature",
    "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleFree", "nvmlGpmSampleGet",
    "nvmlGpmMetricsGet",
]

# Reads every device; `out` maps minor -> readings.
SNAPSHOT = """
pynvml.nvmlInit()
out = {}
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    u = pynvml.nvmlDeviceGetUtilizationRates(h)
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    out[pynvml.nvmlDeviceGetMinorNumber(h)] = {
        "index": i, "util": u.gpu, "mem_util": u.memory,
        "total": m.total, "free": m.free, "used": m.used,
        "power": pynvml.nvmlDeviceGetPowerUsage(h),
        "energy": pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "sm": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
        "temp": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        "procs": [[p.pid, p.usedGpuMemory] for p in procs],
    }
"""


@dataclass
class Fake:
    lib_dir: Path
    config: Path
    state_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("FAKENVML_FAULT", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")}
        env.update(LD_LIBRARY_PATH=str(self.lib_dir), FAKENVML_CONFIG=str(self.config))
        env.update(extra)
        return env

    def write_config(self, *extra_lines: str) -> None:
        lines = [f"# test config\nstate_dir {self.state_dir}", "driver_version 550.54.15",
                 *extra_lines]
        lines += [f"gpu {m} {u} {mem} {w} {name}" for m, u, mem, w, name in GPUS]
        self.config.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not shutil.which("make") or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("make and a C compiler are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fakenvml-lib")
    r = subprocess.run(["make", "-C", str(FAKENVML_SRC), f"OUT={out}"], check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout + r.stderr


@pytest.fixture
def fake(built: tuple[Path, str], tmp_path: Path) -> Fake:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o1777)
    f = Fake(built[0], tmp_path / "fakenvml.conf", state)
    f.write_config()
    return f


def nvml(fake: Fake, code: str, *, env: dict[str, str] | None = None,
         expect_ok: bool = True) -> Any:
    """Run `code` (which sets `out`) with the real pynvml against the fake."""
    prog = "import json, os, signal, time, pynvml\n" + textwrap.dedent(code) + \
        "\nprint(json.dumps(out))\n"
    r = subprocess.run([sys.executable, "-c", prog], env=env or fake.env(), check=False,
                       capture_output=True, text=True, timeout=60)
    if expect_ok:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])
    return r


def snapshot(fake: Fake) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in nvml(fake, SNAPSHOT).items()}


def poll(read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"condition not met in {timeout}s; last: {value!r}"
        time.sleep(0.1)


def workload_argv() -> list[str]:
    # Through its shebang where Debian's python exists (as in a job), else ours.
    return [str(WORKLOAD)] if SYSTEM_PYTHON.exists() else [sys.executable, str(WORKLOAD)]


def run_workload(fake: Fake, *args: str, env: dict[str, str] | None = None,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*workload_argv(), *args], env=env or fake.env(), check=False,
                          capture_output=True, text=True, timeout=30, **kw)


@contextmanager
def workload(fake: Fake, load: Any, *args: str, env: dict[str, str] | None = None,
             **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*workload_argv(), "--load", json.dumps(load), *args],
                            env=env or fake.env(), stderr=subprocess.PIPE, text=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def load_module() -> Any:
    """fakegpu-work has no .py suffix; import it for its pure helpers."""
    loader = importlib.machinery.SourceFileLoader("fakegpu_work", str(WORKLOAD))
    spec = importlib.util.spec_from_loader("fakegpu_work", loader)
    assert spec
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fakegpu_work"] = mod   # dataclasses look the module up
    loader.exec_module(mod)
    return mod


# ---- the library itself ----

@pytest.mark.unit
def test_builds_without_warnings_and_exports_what_pynvml_calls(built: tuple[Path, str]) -> None:
    lib_dir, log = built
    assert "warning" not in log.lower(), log
    lib = lib_dir / "libnvidia-ml.so.1"
    code = f"import ctypes; lib = ctypes.CDLL({str(lib)!r}); " \
           f"print([s for s in {REQUIRED_SYMBOLS!r} if not hasattr(lib, s)])"
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", str(lib)], check=True, capture_output=True,
                             text=True).stdout
        assert "[libnvidia-ml.so.1]" in dyn


@pytest.mark.unit
def test_static_facts_from_config(fake: Fake) -> None:
    out = nvml(fake, """
        pynvml.nvmlInit()
        out = {"count": pynvml.nvmlDeviceGetCount(),
               "driver": pynvml.nvmlSystemGetDriverVersion(),
               "nvml": pynvml.nvmlSystemGetNVMLVersion(), "gpus": []}
        for i in range(out["count"]):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            m2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
            out["gpus"].append({
                "minor": pynvml.nvmlDeviceGetMinorNumber(h), "uuid": uuid,
                "name": pynvml.nvmlDeviceGetName(h),
                "index": pynvml.nvmlDeviceGetIndex(h),
                "by_uuid": pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)),
                "total": pynvml.nvmlDeviceGetMemoryInfo(h).total,
                "v2": [m2.total, m2.free, m2.used],
                "limit": pynvml.nvmlDeviceGetPowerManagementLimit(h),
                "enforced": pynvml.nvmlDeviceGetEnforcedPowerLimit(h),
                "power": pynvml.nvmlDeviceGetPowerUsage(h),
                "mem_clock": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "procs_v3": len(pynvml.nvmlDeviceGetComputeRunningProcesses_v3(h)),
                "procs_v2": len(pynvml.nvmlDeviceGetComputeRunningProcesses_v2(h)),
            })
        pynvml.nvmlShutdown()
    """)
    assert out["count"] == 4
    assert out["driver"] == "550.54.15"
    assert out["nvml"].endswith("550.54.15")
    for i, (g, (minor, uuid, mem, watts, name)) in enumerate(zip(out["gpus"], GPUS, strict=True)):
        assert (g["index"], g["by_uuid"], g["minor"], g["uuid"], g["name"]) == \
            (i, i, minor, uuid, name)
        assert g["total"] == mem * MIB
        assert g["v2"] == [mem * MIB, mem * MIB, 0]
        assert g["limit"] == g["enforced"] == watts * 1000
        assert g["power"] == IDLE_MW
        assert g["mem_clock"] > 0
        assert g["procs_v3"] == g["procs_v2"] == 0


@pytest.mark.unit
def test_idle_readings(fake: Fake) -> None:
    snap = snapshot(fake)
    assert sorted(snap) == [0, 1, 2, 3]
    for g in snap.values():
        assert (g["util"], g["mem_util"], g["used"], g["procs"]) == (0, 0, 0, [])
        assert g["free"] == g["total"]


@pytest.mark.unit
def test_nvml_error_codes(fake: Fake) -> None:
    out = nvml(fake, """
        def err(fn, *a, **kw):
            try:
                fn(*a, **kw)
            except pynvml.NVMLError as e:
                return type(e).__name__
            return "no error"
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        out = {
            "bad_uuid": err(pynvml.nvmlDeviceGetHandleByUUID, "GPU-nope"),
            "bad_index": err(pynvml.nvmlDeviceGetHandleByIndex, 4),
            "bad_clock": err(pynvml.nvmlDeviceGetClockInfo, h, 99),
            "bad_sensor": err(pynvml.nvmlDeviceGetTemperature, h, 7),
            "bad_mem_version": err(pynvml.nvmlDeviceGetMemoryInfo, h, version=1),
            "null_handle": err(pynvml.nvmlDeviceGetName, pynvml.c_nvmlDevice_t()),
            "lost_string": pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST),
        }
        pynvml.nvmlShutdown()
        out["after_shutdown"] = err(pynvml.nvmlDeviceGetCount)
        out["stale_handle"] = err(pynvml.nvmlDeviceGetUtilizationRates, h)
        out["double_shutdown"] = err(pynvml.nvmlShutdown)
        pynvml.nvmlInit()
        out["reinit_count"] = pynvml.nvmlDeviceGetCount()
    """)
    assert out == {
        "bad_uuid": "NVMLError_NotFound",
        "bad_index": "NVMLError_InvalidArgument",
        "bad_clock": "NVMLError_InvalidArgument",
        "bad_sensor": "NVMLError_InvalidArgument",
        "bad_mem_version": "NVMLError_ArgumentVersionMismatch",
        "null_handle": "NVMLError_InvalidArgument",
        "lost_string": "GPU is lost",
        "after_shutdown": "NVMLError_Uninitialized",
        "stale_handle": "NVMLError_Uninitialized",
        "double_shutdown": "NVMLError_Uninitialized",
        "reinit_count": 4,
    }


INIT_ERROR = """
try:
    pynvml.nvmlInit()
    out = "ok %d" % pynvml.nvmlDeviceGetCount()
except pynvml.NVMLError as e:
    out = type(e).__name__
"""


@pytest.mark.unit
def test_missing_config_means_driver_not_loaded(fake: Fake, tmp_path: Path) -> None:
    env = fake.env(FAKENVML_CONFIG=str(tmp_path / "absent.conf"))
    assert nvml(fake, INIT_ERROR, env=env) == "NVMLError_DriverNotLoaded"


@pytest.mark.unit
def test_default_config_is_beside_the_library(fake: Fake, tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    shutil.copy2(fake.lib_dir / "libnvidia-ml.so.1", lib_dir)
    env = fake.env(LD_LIBRARY_PATH=str(lib_dir))
    del env["FAKENVML_CONFIG"]
    assert nvml(fake, INIT_ERROR, env=env) == "NVMLError_DriverNotLoaded"
    shutil.copy2(fake.config, lib_dir / "fakenvml.conf")
    assert nvml(fake, INIT_ERROR, env=env) == "ok 4"


@pytest.mark.unit
def test_malformed_config_is_reported_with_its_line(fake: Fake) -> None:
    fake.write_config("colour blue")
    r = nvml(fake, INIT_ERROR, expect_ok=False)
    assert r.returncode == 0
    assert r.stdout.strip().endswith('"NVMLError_Unknown"')
    assert f"{fake.config}:4: unknown key 'colour'" in r.stderr


@pytest.mark.unit
def test_unparsable_state_file_reads_idle(fake: Fake) -> None:
    (fake.state_dir / "gpu0.state").write_text(f"pid {os.getpid()}\nutil 150\n")
    (fake.state_dir / "gpu1.state").write_text(f"pid {os.getpid()}\nutil banana\n")
    (fake.state_dir / "gpu2.state").write_text("util 50\n")          # no pid
    (fake.state_dir / "gpu3.state").write_text(f"pid {os.getpid()}\nutil 42\nprocess 1\n")
    snap = snapshot(fake)
    assert [snap[m]["util"] for m in (0, 1, 2, 3)] == [0, 0, 0, 42]
    assert snap[3]["procs"] == [[os.getpid(), 0]]


# ---- fault switches ----

@pytest.mark.unit
@pytest.mark.parametrize("where", ["env", "config"])
def test_fault_driver_not_loaded(fake: Fake, where: str) -> None:
    if where == "config":
        fake.write_config("fault driver_not_loaded")
        env = fake.env()
    else:
        env = fake.env(FAKENVML_FAULT="driver_not_loaded")
    assert nvml(fake, INIT_ERROR, env=env) == "NVMLError_DriverNotLoaded"


@pytest.mark.unit
def test_fault_gpu_lost_hits_that_device_only(fake: Fake) -> None:
    out = nvml(fake, """
        pynvml.nvmlInit()
        out = {"count": pynvml.nvmlDeviceGetCount()}
        for i in range(out["count"]):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                out[i] = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                pynvml.nvmlDeviceGetMemoryInfo(h)
                pynvml.nvmlDeviceGetName(h)
            except pynvml.NVMLError_GpuIsLost:
                out[i] = "lost"
        lost = pynvml.nvmlDeviceGetHandleByUUID("GPU-4f3c2a10-0000-4000-8000-000000000003")
        try:
            pynvml.nvmlDeviceGetMinorNumber(lost)
        except pynvml.NVMLError_GpuIsLost:
            out["by_uuid"] = "lost"
    """, env=fake.env(FAKENVML_FAULT="gpu_lost:3"))
    # minor 3 is NVML index 2
    assert out == {"count": 4, "0": 0, "1": 0, "2": "lost", "3": 0, "by_uuid": "lost"}


@pytest.mark.unit
def test_fault_power_not_supported(fake: Fake) -> None:
    fake.write_config("fault power_not_supported")
    out = nvml(fake, """
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        out = {"util": pynvml.nvmlDeviceGetUtilizationRates(h).gpu}
        for name in ("nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption"):
            try:
                getattr(pynvml, name)(h)
                out[name] = "ok"
            except pynvml.NVMLError_NotSupported:
                out[name] = "not supported"
    """)
    assert out == {"util": 0, "nvmlDeviceGetPowerUsage": "not supported",
                   "nvmlDeviceGetTotalEnergyConsumption": "not supported"}


@pytest.mark.unit
def test_faults_from_config_and_env_both_apply(fake: Fake) -> None:
    fake.write_config("fault gpu_lost:0")
    out = nvml(fake, """
        pynvml.nvmlInit()
        out = []
        for i in range(4):
            try:
                pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
                out.append("ok")
            except pynvml.NVMLError_GpuIsLost:
                out.append("lost")
    """, env=fake.env(FAKENVML_FAULT="gpu_lost:2"))
    assert out == ["lost", "ok", "ok", "lost"]


# Queries minor 1 (NVML index 1) `n` times; each entry: "ok" or the pynvml error class.
FLAKY_QUERIES = """
def q():
    try:
        pynvml.nvmlDeviceGetUtilizationRates(h)
        return "ok"
    except pynvml.NVMLError as e:
        return type(e).__name__
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(1)
other = pynvml.nvmlDeviceGetHandleByIndex(0)
"""


@pytest.mark.unit
@pytest.mark.parametrize(("where", "switch", "error"), [
    ("env", "flaky:1:3", "NVMLError_Unknown"),
    ("config", "flaky:1:3", "NVMLError_Unknown"),
    ("env", "flaky:1:3:10", "NVMLError_Timeout"),
])
def test_fault_flaky_fails_count_queries_then_works(fake: Fake, where: str, switch: str, error: str) -> None:
    env = fake.env(FAKENVML_FAULT=switch) if where == "env" else fake.env()
    if where == "config":
        fake.write_config(f"fault {switch}")
    out = nvml(fake, FLAKY_QUERIES + """
out = {"first": [q() for _ in range(5)], "other": pynvml.nvmlDeviceGetUtilizationRates(other).gpu}
pynvml.nvmlShutdown()
pynvml.nvmlInit()                          # a new session arms the switch again
h = pynvml.nvmlDeviceGetHandleByIndex(1)
out["again"] = [q() for _ in range(4)]
""", env=env)
    assert out == {"first": [error] * 3 + ["ok"] * 2, "other": 0, "again": [error] * 3 + ["ok"]}


@pytest.mark.unit
def test_flaky_file_arms_once_per_process_and_again_when_rewritten(fake: Fake) -> None:
    flaky = fake.state_dir / "gpu1.flaky"
    out = nvml(fake, FLAKY_QUERIES + f"""
path = {str(flaky)!r}
out = {{"before": [q() for _ in range(2)]}}
with open(path, "w") as f:
    f.write("2\\n")
out["armed"] = [q() for _ in range(4)]       # the file stays: armed once, not for ever
time.sleep(0.02)
with open(path, "w") as f:
    f.write("1 15  # GPU_IS_LOST once\\n")
out["rewritten"] = [q() for _ in range(3)]
time.sleep(0.02)
with open(path, "w") as f:
    f.write("two\\n")
out["garbage"] = [q() for _ in range(2)]
os.unlink(path)
out["removed"] = [q() for _ in range(2)]
""")
    assert out == {"before": ["ok", "ok"], "armed": ["NVMLError_Unknown"] * 2 + ["ok"] * 2,
                   "rewritten": ["NVMLError_GpuIsLost", "ok", "ok"], "garbage": ["ok", "ok"],
                   "removed": ["ok", "ok"]}
    # each process counts its own failures: a new one sees an existing file fail it afresh
    flaky.write_text("1\n")
    out = nvml(fake, FLAKY_QUERIES + "out = [q() for _ in range(2)]")
    assert out == ["NVMLError_Unknown", "ok"]


@pytest.mark.unit
@pytest.mark.parametrize("switch", ["flaky:1", "flaky:x:2", "flaky:1:2:0", "flaky:1:2:1000", "flaky:1:-1"])
def test_bad_flaky_switch_fails_init(fake: Fake, switch: str) -> None:
    r = nvml(fake, INIT_ERROR, env=fake.env(FAKENVML_FAULT=switch), expect_ok=False)
    assert r.stdout.strip().endswith('"NVMLError_Unknown"'), (switch, r.stdout)
    assert "FAKENVML_FAULT" in r.stderr


@pytest.mark.unit
def test_bad_fault_env_fails_init(fake: Fake) -> None:
    r = nvml(fake, INIT_ERROR, env=fake.env(FAKENVML_FAULT="gpu_melted"), expect_ok=False)
    assert r.stdout.strip().endswith('"NVMLError_Unknown"')
    assert "FAKENVML_FAULT" in r.stderr


# ---- fakegpu-work driving the readings ----

LOAD_TWO = [
    {"gpus": [0], "util": 80, "util_jitter": 0, "mem_gib": 40, "mem_util": 60, "process": True},
    {"gpus": [2], "util": 80, "util_jitter": 5, "mem_gib": 10, "mem_util": 30},
]
# visible minors 0,1,3: relative 0 -> minor 0, relative 2 -> minor 3 (NVML index 2)


def loaded(snap: dict[int, dict[str, Any]]) -> bool:
    return snap[0]["util"] == 80 and snap[3]["util"] > 0


def idle(snap: dict[int, dict[str, Any]]) -> bool:
    return all(g["util"] == 0 and g["used"] == 0 and not g["procs"] for g in snap.values())


@pytest.mark.unit
def test_workload_loads_named_gpus_and_sigterm_clears_them(fake: Fake) -> None:
    with workload(fake, LOAD_TWO, "--minors", "0,1,3") as proc:
        snap = poll(lambda: snapshot(fake), loaded)
        g0, g3 = snap[0], snap[3]
        assert (g0["util"], g0["mem_util"]) == (80, 60)
        assert g0["used"] == 40 * 1024 * MIB and g0["free"] == g0["total"] - g0["used"]
        assert g0["procs"] == [[proc.pid, 40 * 1024 * MIB]]
        assert g0["power"] == IDLE_MW + (700_000 - IDLE_MW) * 80 // 100
        assert g0["sm"] > snap[1]["sm"] and g0["temp"] > snap[1]["temp"]
        assert g3["index"] == 2 and g3["mem_util"] == 30
        assert g3["used"] == 10 * 1024 * MIB and g3["procs"] == [[proc.pid, 10 * 1024 * MIB]]
        for _ in range(3):                       # jitter stays within +/- 5
            assert 75 <= snapshot(fake)[3]["util"] <= 85
        for minor in (1, 2):                     # visible-but-unnamed and not visible
            assert snap[minor]["util"] == 0 and snap[minor]["procs"] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert idle(snapshot(fake))
    assert not list(fake.state_dir.glob("gpu*.state"))


@pytest.mark.unit
def test_sigkill_leaves_a_stale_file_that_reads_idle_and_is_replaced(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 70, "mem_gib": 2}]
    with workload(fake, load, "--minors", "1") as first:
        poll(lambda: snapshot(fake), lambda s: s[1]["util"] == 70)
        first.kill()
        first.wait(timeout=10)
    assert (fake.state_dir / "gpu1.state").exists()
    assert idle(snapshot(fake))
    with workload(fake, load, "--minors", "1") as second:
        snap = poll(lambda: snapshot(fake), lambda s: s[1]["util"] == 70)
        assert snap[1]["procs"] == [[second.pid, 2 * 1024 * MIB]]


@pytest.mark.unit
def test_process_false_and_process_queries_v2_v1(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 20, "mem_gib": 1, "process": False},
            {"gpus": [1], "util": 30, "mem_gib": 3}]
    with workload(fake, load, "--minors", "0,1") as proc:
        poll(lambda: snapshot(fake), lambda s: s[1]["util"] == 30)
        out = nvml(fake, """
            import ctypes
            pynvml.nvmlInit()
            h0, h1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
            v1 = (ctypes.c_uint * 4)()             # v1 entries: pid, pad, 8-byte memory
            n = ctypes.c_uint(1)
            rc = pynvml.nvmlLib.nvmlDeviceGetComputeRunningProcesses(h1, ctypes.byref(n), v1)
            n0 = ctypes.c_uint(0)
            rc0 = pynvml.nvmlLib.nvmlDeviceGetComputeRunningProcesses_v3(h1, ctypes.byref(n0), None)
            out = {"p0": len(pynvml.nvmlDeviceGetComputeRunningProcesses(h0)),
                   "used0": pynvml.nvmlDeviceGetMemoryInfo(h0).used,
                   "v2": [[p.pid, p.usedGpuMemory, p.gpuInstanceId]
                          for p in pynvml.nvmlDeviceGetComputeRunningProcesses_v2(h1)],
                   "v1": [rc, n.value, v1[0], v1[2] + (v1[3] << 32)],
                   "first_call": [rc0, n0.value]}
        """)
        assert out == {"p0": 0, "used0": 1024 * MIB,
                       "v2": [[proc.pid, 3 * 1024 * MIB, 0xFFFFFFFF]],
                       "v1": [0, 1, proc.pid, 3 * 1024 * MIB],
                       "first_call": [7, 1]}       # NVML_ERROR_INSUFFICIENT_SIZE, needed 1


@pytest.mark.unit
def test_util_phases_repeat(fake: Fake) -> None:
    load = [{"gpus": [0], "util": [{"seconds": 1, "util": 90}, {"seconds": 1, "util": 10}]}]
    with workload(fake, load, "--minors", "0"):
        seen = []
        for want in (90, 10, 90):                 # the list repeats
            seen.append(poll(lambda: snapshot(fake)[0]["util"], lambda u, w=want: u == w))
        assert seen == [90, 10, 90]


@pytest.mark.unit
def test_energy_is_monotonic_and_matches_power(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 80, "mem_gib": 1}]
    with workload(fake, load, "--minors", "0", "--seconds", "3") as proc:
        samples = nvml(fake, """
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            out, seen_load, t_idle = [], False, None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                out.append([time.monotonic(), pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
                            pynvml.nvmlDeviceGetPowerUsage(h), util])
                seen_load = seen_load or util == 80
                if seen_load and util == 0:
                    t_idle = t_idle or time.monotonic()
                    if time.monotonic() - t_idle > 1.0:
                        break
                time.sleep(0.05)
        """)
        assert proc.wait(timeout=10) == 0
    assert not list(fake.state_dir.glob("gpu*.state"))          # normal exit cleans up
    assert "extra_mw 0\n" in (fake.state_dir / f"gpu0.energy.{os.getuid()}").read_text()
    energies = [e for _, e, _, _ in samples]
    assert all(b >= a for a, b in itertools.pairwise(energies)), "energy went backwards"

    def rate_mw(rows: list[list[float]]) -> float:
        (t0, e0, *_), (t1, e1, *_) = rows[0], rows[-1]
        return (e1 - e0) / (t1 - t0)

    busy = [s for s in samples if s[3] == 80]
    after = [s for s in samples if s[3] == 0 and s[0] > busy[-1][0] + 0.2]
    assert busy[-1][0] - busy[0][0] > 1.5 and len(after) > 5
    busy_mw = IDLE_MW + (700_000 - IDLE_MW) * 80 // 100
    assert {s[2] for s in busy[:-1]} == {busy_mw}   # the last may race the exit
    assert rate_mw(busy) == pytest.approx(busy_mw, rel=0.05)
    assert rate_mw(after) == pytest.approx(IDLE_MW, rel=0.05)


@pytest.mark.unit
def test_energy_stays_monotonic_across_sigkill(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 100}]
    with workload(fake, load, "--minors", "0") as proc:
        samples = nvml(fake, f"""
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            while pynvml.nvmlDeviceGetUtilizationRates(h).gpu != 100:
                time.sleep(0.05)
            out, killed = [], False
            kill_at = time.monotonic() + 1.0
            while time.monotonic() < kill_at + 2.0:
                if not killed and time.monotonic() >= kill_at:
                    os.kill({proc.pid}, signal.SIGKILL)
                    killed = True
                out.append(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
                time.sleep(0.02)
        """)
        proc.wait(timeout=10)
    assert len(samples) > 20
    assert all(b >= a for a, b in itertools.pairwise(samples)), "energy went backwards"


# ---- fakegpu-work: mapping, input and errors ----

@pytest.mark.unit
def test_slurm_job_gpus_and_a_load_file_with_gpu_load(fake: Fake, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"job_id": 1001, "gpu_load": [{"gpus": [1], "util": 55}]}))
    env = fake.env(SLURM_JOB_GPUS="2,3", CUDA_VISIBLE_DEVICES="0")
    proc = subprocess.Popen([*workload_argv(), "--load-file", str(job), "--seconds", "20"],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        snap = poll(lambda: snapshot(fake), lambda s: s[3]["util"] == 55)
        assert [snap[m]["util"] for m in (0, 1, 2)] == [0, 0, 0]
        assert snap[3]["index"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.unit
def test_visible_minors_sources() -> None:
    mod = load_module()
    cfg = mod.parse_config("state_dir /x\n" + "".join(
        f"gpu {m} {u} {mem} {w} {n}\n" for m, u, mem, w, n in GPUS), "t.conf")
    assert mod.visible_minors("3,0", {}, cfg)[0] == [3, 0]
    assert mod.visible_minors(None, {"SLURM_JOB_GPUS": "0-2"}, cfg)[0] == [0, 1, 2]
    assert mod.visible_minors(None, {"CUDA_VISIBLE_DEVICES": GPUS[2][1]}, cfg)[0] == [3]
    assert mod.visible_minors(None, {"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, cfg)[0] == []
    assert mod.visible_minors(None, {}, cfg)[0] == []
    with pytest.raises(mod.UsageError, match="minor 7 is not in"):
        mod.visible_minors("7", {}, cfg)
    phases = mod.parse_load([{"gpus": [0], "util": [{"seconds": 2, "util": 90},
                                                     {"seconds": 1, "util": 0}]}])[0].phases
    assert [mod.base_util(phases, t) for t in (0, 1.9, 2.5, 3.1, 5.5)] == [90, 90, 0, 90, 0]


@pytest.mark.unit
@pytest.mark.parametrize(("args", "message"), [
    (["--load", "[{"], "--load: invalid JSON"),
    (["--load", '[{"gpus": [2], "util": 50}]'], "index 2 out of range"),
    (["--load", '[{"gpus": [0], "util": 150}]'], "gpu_load[0].util: expected 0..100, got 150"),
    (["--load", '[{"gpus": [0], "utilisation": 50}]'], "unknown key(s) utilisation"),
    (["--load", '[{"gpus": [0, 0]}]'], "named twice"),
    (["--load", '[{"gpus": [1], "mem_gib": 30}]'], "exceeds GPU minor 3"),
    (["--load", '{"jobs": []}'], "needs a 'gpu_load' key"),
    (["--load", '[{"gpus": [0], "power_frac": 1.4}]'], "gpu_load[0].power_frac: expected 0..1, got 1.4"),
    (["--load", '[{"gpus": [0]}, {"gpus": [1], "sm_active": -0.1}]'],
     "gpu_load[1].sm_active: expected 0..1, got -0.1"),
    (["--load", '[{"gpus": [0], "tensor_active": 30}]'], "gpu_load[0].tensor_active: expected 0..1, got 30"),
    (["--load", '[{"gpus": [0], "dram_active": "high"}]'],
     "gpu_load[0].dram_active: expected a number, got 'high'"),
    (["--load", '[{"gpus": [0], "exit_signal": 9}]'], "unknown key(s) exit_signal"),
])
def test_workload_rejects_bad_input_with_one_line(fake: Fake, args: list[str],
                                                  message: str) -> None:
    r = run_workload(fake, "--minors", "0,3", *args)
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("fakegpu-work: ")
    assert not list(fake.state_dir.iterdir())


@pytest.mark.unit
def test_workload_without_config_exits_2(fake: Fake, tmp_path: Path) -> None:
    r = run_workload(fake, "--minors", "0", "--load", "[]",
                     env=fake.env(FAKENVML_CONFIG=str(tmp_path / "none.conf")))
    assert r.returncode == 2 and "cannot read fakenvml config" in r.stderr


@pytest.mark.unit
def test_workload_refuses_a_gpu_a_live_workload_holds(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 10}]
    with workload(fake, load, "--minors", "2"):
        poll(lambda: snapshot(fake), lambda s: s[2]["util"] == 10)
        r = run_workload(fake, "--minors", "2", "--seconds", "1", "--load", json.dumps(load))
        assert r.returncode == 1 and "GPU minor 2 is busy" in r.stderr
        assert snapshot(fake)[2]["util"] == 10


@pytest.mark.unit
def test_an_alternate_state_file_is_read_when_the_main_one_is_stale(fake: Fake) -> None:
    gone = subprocess.Popen(["true"])            # a pid that has exited (and "start 1": never it)
    gone.wait()
    # minor 1: stale main file (dead pid, wrong start), a live alternate of uid 4321
    (fake.state_dir / "gpu1.state").write_text(f"pid {gone.pid}\nstart 1\nutil 90\n")
    (fake.state_dir / "gpu1.state.4321").write_text(f"pid {os.getpid()}\nutil 44\nprocess 1\n")
    # minor 0: a live main file wins over a live alternate
    (fake.state_dir / "gpu0.state").write_text(f"pid {os.getpid()}\nutil 11\n")
    (fake.state_dir / "gpu0.state.4321").write_text(f"pid {os.getpid()}\nutil 22\n")
    # minor 3: no main file, a live alternate; minor 2: only a stale alternate and a foreign name
    (fake.state_dir / "gpu3.state.77").write_text(f"pid {os.getpid()}\nutil 33\n")
    (fake.state_dir / "gpu2.state.77").write_text(f"pid {gone.pid}\nstart 1\nutil 66\n")
    (fake.state_dir / "gpu2.state.x").write_text(f"pid {os.getpid()}\nutil 55\n")
    snap = snapshot(fake)
    assert {m: snap[m]["util"] for m in (0, 1, 2, 3)} == {0: 11, 1: 44, 2: 0, 3: 33}
    assert snap[1]["procs"] == [[os.getpid(), 0]]


@pytest.mark.unit
def test_workload_help_explains_usage() -> None:
    r = subprocess.run([*workload_argv(), "--help"], check=False, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0
    for word in ("gpu_load", "util_jitter", "SLURM_JOB_GPUS", "FAKENVML_CONFIG", "example"):
        assert word in r.stdout


@pytest.mark.unit
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")
def test_unprivileged_user_and_stale_file_of_another_user(built: tuple[Path, str]) -> None:
    # pytest's tmp dirs are private to root; the job user needs a world-readable tree.
    top = Path(tempfile.mkdtemp(prefix="fakenvml-users-"))
    try:
        top.chmod(0o755)
        state = top / "state"
        state.mkdir()
        state.chmod(0o1777)
        f = Fake(built[0], top / "fakenvml.conf", state)
        f.write_config()
        nobody = {"user": 65534, "group": 65534, "extra_groups": []}
        load = [{"gpus": [0], "util": 33}]
        with workload(f, load, "--minors", "0", **nobody) as proc:
            poll(lambda: snapshot(f), lambda s: s[0]["util"] == 33)
            assert (state / "gpu0.state").stat().st_uid == 65534
            proc.terminate()
            assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert not (state / "gpu0.state").exists()

        # A root job killed by SIGKILL leaves a root-owned state file with a dead pid; in the
        # sticky dir an ordinary user can neither replace nor remove it. It must not block the
        # next job: the user's workload publishes under its own name and the driver reads it.
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = state / "gpu1.state"
        stale.write_text(f"# left by a killed root job\npid {gone.pid}\nstart 1\nutil 50\n")
        assert stale.stat().st_uid == 0 and snapshot(f)[1]["util"] == 0
        with workload(f, load, "--minors", "1", **nobody) as proc:
            snap = poll(lambda: snapshot(f), lambda s: s[1]["util"] == 33)
            assert snap[1]["procs"] == [[proc.pid, 0]]
            alt = state / "gpu1.state.65534"
            assert alt.stat().st_uid == 65534 and stale.stat().st_uid == 0
            # the GPU is busy for everyone else, root included, while the alternate is live
            r = run_workload(f, "--minors", "1", "--seconds", "1", "--load", json.dumps(load))
            assert r.returncode == 1 and "GPU minor 1 is busy" in r.stderr, r.stderr
            assert snapshot(f)[1]["util"] == 33
            proc.terminate()
            assert proc.wait(timeout=10) == 128 + signal.SIGTERM
            assert proc.stderr and "publishing in" in proc.stderr.read()
        assert not alt.exists() and stale.exists()
        assert snapshot(f)[1]["util"] == 0
        # root replaces the stale file in place (root may), as before
        r = run_workload(f, "--minors", "1", "--seconds", "0.6", "--load", json.dumps(load))
        assert r.returncode == 0, r.stderr
        assert not stale.exists()
        assert stat.S_IMODE(state.stat().st_mode) == 0o1777
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---- power_frac, GPM activity, --exit-signal ----

H100_LIMIT_MW, A10G_LIMIT_MW = 700_000, 300_000


@pytest.mark.unit
def test_power_frac_sets_power_and_energy_follows(fake: Fake) -> None:
    # minor 0 (H100): half its limit; minor 1 (H100): no power_frac, util as before;
    # minor 3 (A10G, NVML index 2): 5 % of 300 W = 15 W, below the 60 W idle.
    load = [{"gpus": [0], "util": 90, "power_frac": 0.5},
            {"gpus": [1], "util": 80},
            {"gpus": [2], "util": 10, "power_frac": 0.05}]
    with workload(fake, load, "--minors", "0,1,3", "--seconds", "4") as proc:
        samples = nvml(fake, """
            pynvml.nvmlInit()
            hs = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1, 2)]
            while pynvml.nvmlDeviceGetUtilizationRates(hs[0]).gpu != 90:
                time.sleep(0.05)
            out = []
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end:
                out.append([time.monotonic()]
                           + [pynvml.nvmlDeviceGetPowerUsage(h) for h in hs]
                           + [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in hs])
                time.sleep(0.05)
        """)
        assert proc.wait(timeout=10) == 0
    assert {tuple(s[1:4]) for s in samples} == {
        (H100_LIMIT_MW // 2, IDLE_MW + (H100_LIMIT_MW - IDLE_MW) * 80 // 100, A10G_LIMIT_MW * 5 // 100)}
    (t0, *first), (t1, *last) = samples[0], samples[-1]
    for k, want_mw in ((3, 350_000), (4, IDLE_MW + (H100_LIMIT_MW - IDLE_MW) * 80 // 100), (5, 15_000)):
        energies = [s[k + 1] for s in samples]
        assert all(b >= a for a, b in itertools.pairwise(energies)), "energy went backwards"
        assert (last[k] - first[k]) / (t1 - t0) == pytest.approx(want_mw, rel=0.05)
    # After the run, all three are idle again: power falls back to the idle reading.
    snap = snapshot(fake)
    assert [snap[m]["power"] for m in (0, 1, 3)] == [IDLE_MW] * 3
    assert (fake.state_dir / f"gpu3.energy.{os.getuid()}").read_text().endswith("extra_mw 0\n")


@pytest.mark.unit
def test_state_file_fractions_are_read_and_checked(fake: Fake) -> None:
    me = os.getpid()
    (fake.state_dir / "gpu0.state").write_text(f"pid {me}\nutil 10\npower_frac_ppm 250000\n")
    (fake.state_dir / "gpu1.state").write_text(f"pid {me}\nutil 10\npower_frac_ppm 1000001\n")
    (fake.state_dir / "gpu2.state").write_text(f"pid {me}\nutil 10\nsm_active_ppm 1000001\n")
    (fake.state_dir / "gpu3.state").write_text(f"pid {me}\nutil 10\npower_frac_ppm 0\n")
    snap = snapshot(fake)
    assert snap[0]["power"] == H100_LIMIT_MW // 4 and snap[0]["util"] == 10
    assert (snap[1]["util"], snap[1]["power"]) == (0, IDLE_MW)   # out of range: idle
    assert (snap[2]["util"], snap[2]["power"]) == (0, IDLE_MW)
    assert (snap[3]["util"], snap[3]["power"]) == (10, 0)


GPM = """
METRICS = [pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
           pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL]

def metrics(h, ids=METRICS):
    s1, s2 = pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()
    try:
        pynvml.nvmlGpmSampleGet(h, s1)
        time.sleep(0.05)
        pynvml.nvmlGpmSampleGet(h, s2)
        mg = pynvml.c_nvmlGpmMetricsGet_t()
        mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(ids)
        mg.sample1, mg.sample2 = s1, s2
        for i, mid in enumerate(ids):
            mg.metrics[i].metricId = mid
        pynvml.nvmlGpmMetricsGet(mg)
        return {m.metricId: (round(m.value, 6) if m.nvmlReturn == 0 else "n/s" if m.nvmlReturn == 3
                             else m.nvmlReturn)
                for m in mg.metrics[:len(ids)]}
    finally:
        pynvml.nvmlGpmSampleFree(s1)
        pynvml.nvmlGpmSampleFree(s2)

def err(fn, *a):
    try:
        fn(*a)
    except pynvml.NVMLError as e:
        return type(e).__name__
    return "no error"
"""


def gpm(fake: Fake, code: str, **kw: Any) -> Any:
    """nvml() with the GPM helpers above defined."""
    return nvml(fake, GPM + textwrap.dedent(code), **kw)


@pytest.mark.unit
def test_gpm_reports_the_loads_activity_on_h100(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 70, "sm_active": 0.3, "tensor_active": 0.125, "dram_active": 0.45},
            {"gpus": [1], "util": 60}]
    with workload(fake, load, "--minors", "0,1"):
        poll(lambda: snapshot(fake), lambda s: s[0]["util"] == 70 and s[1]["util"] == 60)
        out = gpm(fake, """
            pynvml.nvmlInit()
            h0, h1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
            mg = pynvml.c_nvmlGpmMetricsGet_t()
            mg.version, mg.numMetrics = pynvml.NVML_GPM_METRICS_GET_VERSION, 1
            mg.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
            s1, s2 = pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()
            pynvml.nvmlGpmSampleGet(h0, s1)
            pynvml.nvmlGpmSampleGet(h1, s2)
            mg.sample1, mg.sample2 = s1, s2
            other_device = err(pynvml.nvmlGpmMetricsGet, mg)
            pynvml.nvmlGpmSampleGet(h0, s2)
            mg.version = 2
            bad_version = err(pynvml.nvmlGpmMetricsGet, mg)
            mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            pynvml.nvmlGpmMetricsGet(mg)
            info = mg.metrics[0].metricInfo
            out = {"support": [pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice for h in (h0, h1)],
                   "loaded": {str(k): v for k, v in metrics(h0).items()},
                   "no_keys": {str(k): v for k, v in metrics(h1).items()},
                   "info": [info.shortName.decode(), info.unit.decode()],
                   "other_device": other_device, "bad_version": bad_version,
                   "same_sample": err(pynvml.nvmlGpmMetricsGet,
                                      type(mg)(version=1, numMetrics=1, sample1=s1, sample2=s1))}
        """)
    assert out["support"] == [1, 1]
    assert out["loaded"] == {"2": 30.0, "3": "n/s", "5": 12.5, "10": 45.0}
    assert out["no_keys"] == {"2": "n/s", "3": "n/s", "5": "n/s", "10": "n/s"}
    assert out["info"] == ["SM_UTIL", "%"]
    assert out["other_device"] == out["same_sample"] == "NVMLError_InvalidArgument"
    assert out["bad_version"] == "NVMLError_ArgumentVersionMismatch"
    # Idle (no workload): still supported, nothing measured.
    idle_out = gpm(fake, """
        pynvml.nvmlInit()
        out = {str(k): v for k, v in metrics(pynvml.nvmlDeviceGetHandleByIndex(0)).items()}
    """)
    assert idle_out == {"2": "n/s", "3": "n/s", "5": "n/s", "10": "n/s"}


@pytest.mark.unit
def test_gpm_not_supported_on_a10g(fake: Fake) -> None:
    load = [{"gpus": [0], "util": 50, "sm_active": 0.5}]
    with workload(fake, load, "--minors", "3"):
        poll(lambda: snapshot(fake), lambda s: s[3]["util"] == 50)
        out = gpm(fake, """
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(2)      # minor 3, an A10G
            s = pynvml.nvmlGpmSampleAlloc()
            out = {"name": pynvml.nvmlDeviceGetName(h),
                   "support": pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice,
                   "sample": err(pynvml.nvmlGpmSampleGet, h, s),
                   "metrics": err(metrics, h)}
            pynvml.nvmlGpmSampleFree(s)
        """)
    assert out == {"name": "NVIDIA A10G", "support": 0, "sample": "NVMLError_NotSupported",
                   "metrics": "NVMLError_NotSupported"}


@pytest.mark.unit
def test_gpm_support_follows_the_name_and_a_lost_gpu_is_lost(fake: Fake) -> None:
    fake.config.write_text(fake.config.read_text()
                           + "gpu 7 GPU-t4-0007 15360 70 Tesla T4\n"
                           + "gpu 8 GPU-h200-0008 143771 700 NVIDIA H200\n"
                           + "gpu 9 GPU-gh200-0009 97871 900 NVIDIA GH200 480GB\n")
    out = gpm(fake, """
        pynvml.nvmlInit()
        hs = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        s = pynvml.nvmlGpmSampleAlloc()
        out = {"support": [err(pynvml.nvmlGpmQueryDeviceSupport, h) == "no error"
                           and pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice for h in hs],
               "lost_sample": err(pynvml.nvmlGpmSampleGet, hs[1], s)}
        pynvml.nvmlGpmSampleFree(s)
    """, env=fake.env(FAKENVML_FAULT="gpu_lost:1"))
    # H100, H100 (lost), A10G, A10G, T4, H200, GH200
    assert out == {"support": [1, False, 0, 0, 0, 1, 1], "lost_sample": "NVMLError_GpuIsLost"}


@pytest.mark.unit
@pytest.mark.parametrize("sig", ["9", "TERM", "SIGSEGV"])
def test_exit_signal_ends_the_run_by_that_signal(fake: Fake, tmp_path: Path, sig: str) -> None:
    load = [{"gpus": [0], "util": 40, "power_frac": 0.3}]
    r = run_workload(fake, "--minors", "0", "--seconds", "0.6", "--exit-signal", sig,
                     "--load", json.dumps(load), cwd=tmp_path)
    signum = int(sig) if sig.isdigit() else signal.Signals[sig if sig.startswith("SIG") else f"SIG{sig}"]
    assert r.returncode == -signum, r.stderr            # died by the signal, not exit(128+N)
    assert f"then signal {signum}" in r.stderr
    assert not list(fake.state_dir.glob("gpu*.state"))   # cleaned up first
    assert (fake.state_dir / f"gpu0.energy.{os.getuid()}").read_text().endswith("extra_mw 0\n")
    assert not list(tmp_path.glob("core*"))              # no core file from SIGSEGV


@pytest.mark.unit
def test_exit_signal_is_not_used_when_a_signal_ends_the_run(fake: Fake) -> None:
    with workload(fake, [{"gpus": [0], "util": 25}], "--minors", "0", "--seconds", "30",
                  "--exit-signal", "KILL") as proc:
        poll(lambda: snapshot(fake), lambda s: s[0]["util"] == 25)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert not list(fake.state_dir.glob("gpu*.state"))


@pytest.mark.unit
@pytest.mark.parametrize(("args", "message"), [
    (["--exit-signal", "9"], "--exit-signal needs --seconds"),
    (["--seconds", "1", "--exit-signal", "CHLD"], "invalid signal value: 'CHLD'"),
    (["--seconds", "1", "--exit-signal", "0"], "invalid signal value: '0'"),
    (["--seconds", "1", "--exit-signal", "NOPE"], "invalid signal value: 'NOPE'"),
])
def test_exit_signal_usage_errors(fake: Fake, args: list[str], message: str) -> None:
    r = run_workload(fake, "--minors", "0", "--load", "[]", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


@pytest.mark.unit
def test_state_text_and_power_model_helpers() -> None:
    mod = load_module()
    h100 = mod.GpuConf(0, "GPU-x", 81559, 700)
    plain, = mod.parse_load([{"gpus": [0], "util": 80, "mem_gib": 1, "mem_util": 20}])
    assert (plain.power_frac, plain.sm_active, plain.tensor_active, plain.dram_active) == (None,) * 4
    # Without the new keys the state file is byte for byte what it was.
    assert mod.state_text(42, 7, 80, mod.Target(0, h100, plain, 1024)) == (
        "# fakegpu-work state, see docker-slurm/FAKE-GPU.md\n"
        "pid 42\nstart 7\nutil 80\nmem_util 20\nmem_used_mib 1024\nprocess 1\n")
    full, = mod.parse_load([{"gpus": [0], "util": 80, "power_frac": 0.5, "sm_active": 0.3,
                             "tensor_active": 0, "dram_active": 1}])
    text = mod.state_text(42, 7, 80, mod.Target(0, h100, full, 0))
    assert text.endswith("process 1\npower_frac_ppm 500000\nsm_active_ppm 300000\n"
                         "tensor_active_ppm 0\ndram_active_ppm 1000000\n")
    assert mod.extra_mw(h100, 60, 80) == (700_000 - 60_000) * 80 // 100
    assert mod.extra_mw(h100, 60, 80, 0.5) == 350_000 - 60_000
    assert mod.extra_mw(h100, 60, 80, 0.05) == 35_000 - 60_000     # below idle: negative


@pytest.mark.unit
def test_config_path_takes_the_node_name(fake: Fake, tmp_path: Path) -> None:
    """FAKENVML_CONFIG=.../%n/fakenvml.conf: one value for every slurmd node of a host, each node's
    own GPUs (cluster.sh NODES=2); %n without SLURMD_NODENAME fails nvmlInit, with a line."""
    node_dir = tmp_path / "nodes" / "node7"
    node_dir.mkdir(parents=True)
    shutil.copy2(fake.config, node_dir / "fakenvml.conf")
    pattern = str(tmp_path / "nodes" / "%n" / "fakenvml.conf")
    assert nvml(fake, INIT_ERROR, env=fake.env(FAKENVML_CONFIG=pattern, SLURMD_NODENAME="node7")) == "ok 4"
    assert nvml(fake, INIT_ERROR, env=fake.env(FAKENVML_CONFIG=pattern, SLURMD_NODENAME="node8")) \
        == "NVMLError_DriverNotLoaded"
    env = fake.env(FAKENVML_CONFIG=pattern)
    env.pop("SLURMD_NODENAME", None)
    r = nvml(fake, INIT_ERROR, env=env, expect_ok=False)
    assert r.stdout.strip().endswith('"NVMLError_DriverNotLoaded"')
    assert "names %n but SLURMD_NODENAME is unset" in r.stderr


@pytest.mark.unit
def test_workload_under_srun_takes_the_step_gpus(fake: Fake) -> None:
    """A step's task on a second node inherits the batch host's SLURM_JOB_GPUS; SLURM_STEP_GPUS is its own."""
    mod = load_module()
    config = mod.load_config(str(fake.config))
    env = {"SLURM_JOB_GPUS": "0,1", "SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert mod.visible_minors(None, env, config) == ([2, 3], "SLURM_STEP_GPUS")
    assert mod.visible_minors(None, {"SLURM_JOB_GPUS": "1"}, config) == ([1], "SLURM_JOB_GPUS")
    assert mod.find_config({"FAKENVML_CONFIG": "/x/%n/f.conf", "SLURMD_NODENAME": "n2"}, str(WORKLOAD)) \
        == "/x/n2/f.conf"
