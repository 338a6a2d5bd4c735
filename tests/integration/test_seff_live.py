"""`piqc-slurm seff` on the real test cluster: fresh jobs (a CPU job whose two-task step holds
the memory peak, a GPU job with four steps one failing, a 3-task array, a 4-GPU job that works
two GPUs, a GPU job still running) ingested with `piqc-slurm ingest`; every seff figure is
checked against arithmetic done HERE on the real `sacct -P` lines of the same jobs (not
against piqc-slurm's own functions), the GPU rows against the Epilog's summary file, the
running job's live GPU figures against its sampler's checkpoint, and, where Slurm 22.05.8's
seff script and its Perl modules are installed (libslurmdb-perl, libslurm-perl; the script
at $PIQC_SEFF_SCRIPT or /tmp/seff-22.05.8), seff's lines against real seff's, byte for byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from slurmtest import REPO

pytestmark = pytest.mark.slurm

BURN = "timeout 3 sh -c 'while :; do :; done'"
# each task burns 3 s of CPU, then holds 40 MiB for 35 s (one accounting poll, JobAcctGatherFrequency=30,
# sees it): the two-task step holds the job's memory peak
BURN_HOLD = ("python3 -c 'import time; t = time.time(); exec(\"while time.time() - t < 3: pass\"); "
             "b = bytearray(40 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(35)'")
LOAD4 = json.dumps([{"gpus": [0], "util": 90, "mem_gib": 20, "process": True},
                    {"gpus": [1], "util": 60, "mem_gib": 10, "process": True}])
LOAD_RUNNING = json.dumps([{"gpus": [0], "util": 70, "mem_gib": 12, "process": True}])
FIELDS = ("JobID,JobIDRaw,State,ExitCode,Start,ElapsedRaw,Timelimit,AllocCPUS,AllocNodes,AllocTRES,TotalCPU,NTasks,"
          "TRESUsageInMax,SubmitLine")
SEP = "\x1f"


# --- the test's own arithmetic, on sacct's text ----------------------------------------------------
def cpu_ms(text: str) -> int:
    """sacct's TotalCPU ('00:02.825', '01:02:03', '1-02:03:04') in milliseconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.(\d+))?", text)
    assert m, text
    d, h, mi, s, frac = m.groups()
    secs = int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi) * 60 + int(s)
    return secs * 1000 + (int((frac + "00")[:3]) if frac else 0)


def kib_of(text: str, base: str = "") -> float:
    """A sacct size in KiB; `base` is the unit of a bare number ('' bytes for usage, 'M' for TRES)."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    assert m, text
    unit = m[2] or base
    return float(m[1]) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}[unit]


def size_text(kib: float) -> str:
    """Binary units with two decimals, as seff prints memory ('3.26 MB')."""
    if kib == 0:
        return "0.00 MB"
    units, i = "KMGTPE", 0
    while kib >= 1024:
        kib /= 1024
        i += 1
    return f"{kib:.2f} {units[i]}B"


def hms(s: int) -> str:
    d, s = divmod(s, 86400)
    return (f"{d}-" if d else "") + f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def expected_seff(job: dict, steps: list[dict]) -> dict[str, str]:
    """seff's lines for one job, worked out from its sacct lines by this test."""
    cores = int(job["AllocCPUS"]) or 1
    nodes = int(job["AllocNodes"]) or 1
    cpu = (cpu_ms(job["TotalCPU"]) + 500) // 1000          # seconds, half up
    cwt = int(job["ElapsedRaw"]) * cores
    best, tasks = 0.0, 0
    for st in steps:                                       # the first step with the highest peak
        mem = dict(p.split("=", 1) for p in st["TRESUsageInMax"].split(",") if "=" in p).get("mem")
        if mem is not None and kib_of(mem) > best:
            best, tasks = kib_of(mem), int(st["NTasks"])
    used = best * tasks
    tres = dict(p.split("=", 1) for p in job["AllocTRES"].split(","))
    req = kib_of(tres["mem"], "M")
    out = {"CPU Utilized": hms(cpu),
           "CPU Efficiency": f"{(cpu / cwt * 100 if cwt else 0):.2f}% of {hms(cwt)} core-walltime",
           "Job Wall-clock time": hms(int(job["ElapsedRaw"])),
           "Memory Utilized": size_text(used) + ("" if tasks == 1 else " (estimated maximum)")}
    eff = f"{used / req * 100:.2f}% of {size_text(req)}"
    if tasks != 1:
        per_cpu = "--mem-per-cpu" in job["SubmitLine"].split(" --wrap")[0]
        eff += f" ({size_text(req / (cores if per_cpu else nodes))}/{'core' if per_cpu else 'node'})"
    out["Memory Efficiency"] = eff
    if cores == 1:
        out["Cores"] = "1"
    else:
        out["Nodes"], out["Cores per node"] = str(nodes), str(cores // nodes)
    return out


# --- the jobs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(cluster, tmp_path_factory):
    t0 = int(time.time())
    ids = {
        "cpu": cluster.submit(f"srun -n2 {BURN_HOLD}", "-n2", "--mem=300M", "-t", "5", "-o", "/dev/null",
                              name="t-seff-cpu"),
        "steps": cluster.submit(f"srun true; srun --gres=gpu:1 {BURN}; srun false; srun -n1 true",
                                "--gres=gpu:2", "-t", "5", "-o", "/dev/null", name="t-seff-steps"),
        "array": cluster.submit("echo task $SLURM_ARRAY_TASK_ID", "--array=1-3", "--gres=gpu:1", "-o", "/dev/null",
                                name="t-seff-array"),
        "multigpu": cluster.submit(f"exec fakegpu-work --seconds 8 --load '{LOAD4}'", "--gres=gpu:4", "-t", "5",
                                   "-o", "/dev/null", name="t-seff-multigpu"),
        "running": cluster.submit(f"srun true; exec fakegpu-work --seconds 150 --load '{LOAD_RUNNING}'",
                                  "--gres=gpu:2", "-t", "10", "-o", "/dev/null", name="t-seff-running"),
    }
    done = [k for k in ids if k != "running"]
    try:
        for k in done:
            cluster.wait(ids[k], timeout=240)
        cluster.wait_summary(ids["multigpu"], timeout=60)
        cluster.wait_running(ids["running"])
        listed = ",".join(str(ids[k]) for k in done)
        deadline = time.monotonic() + 60        # every step line final, its usage recorded
        while time.monotonic() < deadline:
            out = cluster.run(["sacct", "-a", "-P", "-n", "-j", listed, "-o", "JobID,State,TRESUsageInMax"]).stdout
            lines = [ln.split("|") for ln in out.splitlines()]
            if lines and all(s not in ("RUNNING", "PENDING", "COMPLETING") for _, s, _ in lines) and all(
                    u for j, _, u in lines if "." in j):
                break
            time.sleep(1)
        # the running job: its `srun true` step ended and the sampler has checkpointed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cluster.run(["sacct", "-a", "-P", "-n", "-j", f"{ids['running']}.0", "-o", "State"]).stdout
            if out.strip() == "COMPLETED":
                break
            time.sleep(1)
        time.sleep(3)
        exe = str(REPO / ".venv" / "bin" / "piqc-slurm")
        url = f"sqlite:///{tmp_path_factory.mktemp('seff-live')}/piqc.db"
        r = subprocess.run([exe, "--db", url, "ingest", "--create-store", "--since", f"uts{t0 - 120}",
                            "--spool", str(cluster.dir / "piqc" / "shared-spool")],
                           capture_output=True, text=True, env=cluster.root_env())
        assert r.returncode == 0, r.stderr
        every = ",".join(str(j) for j in ids.values())
        out = cluster.run(["sacct", "-a", "-P", f"--delimiter={SEP}", "-j", every, "-o", FIELDS],
                          env=cluster.root_env(SLURM_TIME_FORMAT="%s")).stdout
        sacct_now = int(time.time())
        header, *rows = out.splitlines()
        names = header.split(SEP)
        lines = [dict(zip(names, row.split(SEP, len(names) - 1), strict=True)) for row in rows]

        def seff(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([exe, "--db", url, "seff", *args], capture_output=True, text=True,
                                  env=cluster.root_env())

        yield {"ids": ids, "lines": lines, "seff": seff, "sacct_now": sacct_now, "url": url}
    finally:
        cluster.run(["scancel", str(ids["running"])], check=False)


def job_and_steps(live, jobid: str) -> tuple[dict, list[dict]]:
    job = next(ln for ln in live["lines"] if ln["JobID"] == jobid)
    steps = [ln for ln in live["lines"] if ln["JobID"].startswith(jobid + ".")]
    return job, steps


def lines_of(text: str) -> dict[str, str]:
    return dict(ln.split(": ", 1) for ln in text.splitlines() if ": " in ln)


CASES = {"cpu": "{cpu}", "steps": "{steps}", "array": "{array}_2", "multigpu": "{multigpu}"}


@pytest.mark.parametrize("case", list(CASES))
def test_seff_figures_equal_the_test_s_own_arithmetic(live, case):
    jobid = CASES[case].format(**live["ids"])
    job, steps = job_and_steps(live, jobid)
    r = live["seff"](jobid)
    assert r.returncode == 0, r.stderr
    got = lines_of(r.stdout)
    want = expected_seff(job, steps)
    assert {k: got.get(k) for k in want} == want, r.stdout
    assert got["Job ID"] == job["JobIDRaw"]
    assert got["State"] == f"{job['State'].split()[0]} (exit code {job['ExitCode'].split(':')[0]})"
    limit = int(job["Timelimit"].split(":")[0]) * 3600 + int(job["Timelimit"].split(":")[1]) * 60 \
        if job["Timelimit"] not in ("UNLIMITED", "Partition_Limit") and "-" not in job["Timelimit"] else None
    if limit:
        share = int(job["ElapsedRaw"]) / limit * 100
        assert got["Time Limit"] == f"{job['Timelimit']} (wall-clock time is {share:.2f}% of it)"
    if case == "array":
        assert got["Array Job ID"] == jobid
    if case == "cpu":
        assert got["GPUs"] == "none allocated"
        assert got["Memory Utilized"].endswith("(estimated maximum)") and "(300.00 MB/node)" in got["Memory Efficiency"]
        # the two tasks burned up to 3 s each (less on a busy 2-core machine): a figure that is not 0
        assert cpu_ms(job["TotalCPU"]) >= 1000 and got["CPU Utilized"] != "00:00:00", job


def test_json_figures_equal_the_test_s_own_arithmetic(live):
    jobid = str(live["ids"]["cpu"])
    job, steps = job_and_steps(live, jobid)
    r = live["seff"]("--json", jobid)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    cpu = (cpu_ms(job["TotalCPU"]) + 500) // 1000
    assert (doc["cpu_used_s"], doc["core_walltime_s"], doc["cores"]) == (cpu, int(job["ElapsedRaw"]) * 2, 2)
    assert doc["cpu_efficiency_pct"] == round(cpu / (int(job["ElapsedRaw"]) * 2) * 100, 2)
    assert doc["mem_request_kib"] == 300 * 1024 and doc["mem_estimated"] is True and doc["mem_request_per"] == "node"


def test_the_gpu_rows_are_the_epilog_s_summary(live, cluster):
    job = live["ids"]["multigpu"]
    r = live["seff"](str(job))
    assert r.returncode == 0, r.stderr
    summary = json.loads(cluster.summary_file(job).read_text())
    rows = {int(m[1]): m[0] for m in re.finditer(rf"^{cluster.node} +(\d+) .*$", r.stdout, re.M)}
    assert sorted(rows) == sorted(d["minor"] for d in summary["devices"]), r.stdout
    for d in summary["devices"]:
        row = rows[d["minor"]]
        mem = f"{d['mem_used_max_mib'] / 1024:.1f} of {d['mem_total_mib'] / 1024:.1f} GiB " \
              f"({d['mem_used_max_mib'] / d['mem_total_mib'] * 100:.1f}%)"
        assert f"{d['util_mean']:.1f}%" in row and mem in row, (row, d)
        assert row.endswith("did no work") == (d["did_work"] is False), row
    worked = sum(1 for d in summary["devices"] if d["did_work"])
    assert worked == 2 and "GPUs that did work: 2 of 4" in r.stdout


def checkpoint(cluster, job: int) -> dict | None:
    """The running job's checkpoint on this node, read here as root (the sampler's own file)."""
    found = sorted((cluster.dir / "piqc" / "spool" / "run").glob(f"{cluster.cluster_name}.{job}.*"))
    try:
        return json.loads((found[-1] / "checkpoint.json").read_text()) if found else None
    except (OSError, ValueError):
        return None


def test_a_running_job_is_labelled_with_live_figures(live, cluster):
    job = live["ids"]["running"]
    line, _ = job_and_steps(live, str(job))
    assert line["State"] == "RUNNING"
    deadline = time.monotonic() + 90         # a checkpoint (every 30 s) that has seen GPU 0 work
    while time.monotonic() < deadline:
        ck = checkpoint(cluster, job)
        if ck and any((g["agg"].get("util_mean") or 0) > 0 for g in ck["gpus"]):
            break
        time.sleep(1)
    before = int(time.time())
    r = live["seff"](str(job))
    assert r.returncode == 0, r.stderr
    got = lines_of(r.stdout)
    assert got["State"] == "RUNNING" and "Running: figures so far." in r.stdout
    assert "WARNING: Efficiency statistics may be misleading for RUNNING jobs.\n" in r.stdout
    assert f"Live GPU figures so far (sampler checkpoint on {cluster.node}," in r.stdout, r.stdout
    for _ in range(3):                       # seff and this test must read the same checkpoint
        doc = json.loads(live["seff"]("--json", str(job)).stdout)
        ck = checkpoint(cluster, job)
        if ck and doc["live"].get("updated") == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ck["updated"])):
            break
    after = int(time.time())
    start = int(line["Start"])
    assert before - start <= doc["elapsed_s"] <= after - start + 1, (doc["elapsed_s"], start)
    assert doc["running"] is True and doc["findings"] is None and doc["live"]["node"] == cluster.node
    devices = {d["minor"]: d for d in doc["live"]["devices"]}
    assert sorted(devices) == sorted(g["minor"] for g in ck["gpus"]), doc["live"]
    for g in ck["gpus"]:
        d, agg = devices[g["minor"]], g["agg"]
        assert d["util_mean_pct"] == round(agg["util_mean"], 1), (d, agg)
        assert d["mem_used_max_gib"] == round(agg["mem_used_max_mib"] / 1024, 2), (d, agg)
        assert d["mem_used_pct"] == round(agg["mem_used_max_mib"] / g["mem_total_mib"] * 100, 1), (d, g)
    util = sorted(devices[m]["util_mean_pct"] for m in devices)
    assert util[0] == 0 and 50 <= util[-1] <= 71 and doc["live"]["used"] == 1, doc["live"]


@pytest.mark.parametrize("bad", ["abc", "12x"])
def test_a_bad_job_id(live, bad):
    r = live["seff"](bad)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"piqc-slurm: Bad job/step specified: {bad}\n")


def _real_seff(env: dict[str, str]) -> str | None:
    script = os.environ.get("PIQC_SEFF_SCRIPT") or "/tmp/seff-22.05.8"
    if not Path(script).is_file() or shutil.which("perl") is None:
        return None
    ok = subprocess.run(["perl", "-MSlurmdb", "-MSlurm", "-e", "1"], capture_output=True, env=env).returncode == 0
    return script if ok else None


@pytest.mark.outside_tool
@pytest.mark.parametrize("case", [*CASES, "running"])
def test_seff_lines_are_real_seff_s(live, cluster, case):
    script = _real_seff(cluster.root_env())
    if script is None:
        pytest.skip("Slurm 22.05.8's seff script (PIQC_SEFF_SCRIPT) or libslurmdb-perl is not installed")
    jobid = CASES.get(case, "{running}").format(**live["ids"])
    for _ in range(3):   # a running job's wall-clock time moves: the two runs must fall in one second
        real = subprocess.run(["perl", script, jobid], capture_output=True, text=True, env=cluster.root_env())
        ours = live["seff"](jobid)
        assert real.returncode == 0 and ours.returncode == 0, (real.stderr, ours.stderr)
        want = real.stdout.splitlines()
        got = ours.stdout.splitlines()[:len(want)]
        if got == want or case != "running":
            break
    assert got == want, f"--- seff\n{real.stdout}--- piqc-slurm\n{ours.stdout}"
