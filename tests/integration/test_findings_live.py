"""The findings on live jobs: six fake-GPU workloads, each the shape of one
finding (or of none), run side by side on the real cluster; `piqc-slurm
ingest` and `analyze` judge them, and `piqc-slurm sacct -o Findings` must
name exactly the expected codes. Then the two per-job surfaces must agree:
the report the Epilog appended to the job's output file and `piqc-slurm seff`
name the same codes, restricted to what the Epilog can know (IDLE_GPUS and
UNDER_BATCHED: it has no CPU time, no exit state, no history and no other
GPU types; report.epilog_text.judge_node, docs/findings.md), in the same
sentence, the dollar figures within a cent (the report prices its own whole
seconds, Prolog to Epilog, sacct's Elapsed is the accounting's).

The node has 8 GPUs and the six jobs ask for 10: the last two one-GPU jobs
wait for the failed job (15 s) and the first wave (25 s) to free a GPU; the
whole file takes about 70 s.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time

import pytest
from slurmtest import REPO

pytestmark = pytest.mark.slurm


def load(**entry) -> str:
    return json.dumps([entry])


def work(seconds: int, **entry) -> str:
    return f"fakegpu-work --seconds {seconds} --load '{load(**entry)}'"


# The input-bound job's CPU, sacct's TotalCPU / (Elapsed x AllocCPUS) >= analyze.ib_cpu_eff_min:
# - TotalCPU counts only processes their parent waited for (`exec fakegpu-work` with a burner in
#   the background gave TotalCPU 0.15 s of 26 s), so the script waits for its burners;
# - the kernel groups the scheduling by session (sched_autogroup_enabled=1), so burners in the
#   job's one session share one session's turn: on this 2-core machine, next to other sessions,
#   one burner got 17.2 s of 26 s, two 22.6 s of 27 s (0.84), four 19.7 s of 27 s. Each burner
#   in a session of its own (setsid) competes on its own, and with ConstrainCores=no four of them
#   spread over both cores: 15.8 s of CPU in 11 s under the same load. (TotalCPU may then exceed
#   Elapsed x 1 CPU: the job holds one CPU of the 64 the fake node declares.)
BURN = "for i in 1 2 3 4; do timeout 25 setsid sh -c 'while :; do :; done' & done;"
PROFILES = {  # name: (sbatch options, script, expected codes); submitted in this order
    "idle": (("--gres=gpu:4",), work(25, gpus=[0, 1], util=85, mem_gib=30), {"IDLE_GPUS"}),
    "right": (("--gres=gpu:2",), work(25, gpus=[0, 1], util=92, mem_gib=60), set()),
    "failed": (("--gres=gpu:1",), work(15, gpus=[0], util=80, mem_gib=10) + "; exit 3", {"FAILED_SPEND"}),
    "input": (("--gres=gpu:1", "-c", "1"), f"{BURN} {work(25, gpus=[0], util=30, mem_gib=10)}; wait",
              {"INPUT_BOUND"}),
    "power": (("--gres=gpu:1",), work(25, gpus=[0], util=90, mem_gib=10, power_frac=0.25), {"UNDER_BATCHED"}),
    "gpm": (("--gres=gpu:1",), work(25, gpus=[0], util=60, mem_gib=8, power_frac=0.25, sm_active=0.2,
                                    tensor_active=0.05, dram_active=0.3), {"UNDER_BATCHED"}),
}
DOLLAR_CODES = {"FAILED_SPEND", "IDLE_GPUS", "WRONG_TIER", "INPUT_BOUND", "UNDER_BATCHED"}
EPILOG_KNOWS = {"IDLE_GPUS", "UNDER_BATCHED"}  # of the codes the report can name, those seff's may hold
REPORT_LINE = re.compile(r"^(IDLE_GPUS|UNDER_BATCHED|INPUT_BOUND|WRONG_TIER): (.*)$", re.M)
FINDING_LINE = re.compile(r"^([A-Z][A-Z_]+): (.*)$", re.M)
DOLLARS = re.compile(r"\$([\d,]+\.\d\d)")


@pytest.fixture(scope="module")
def live(cluster, tmp_path_factory):
    t0 = int(time.time())
    jobs = {name: cluster.submit(script, *opts, "-o", "find-%j.out", name=f"t-find-{name}")
            for name, (opts, script, _) in PROFILES.items()}
    states, summaries = {}, {}
    for name, job in jobs.items():
        states[name] = cluster.wait(job, timeout=150)
    for name, job in jobs.items():
        summaries[name] = cluster.wait_summary(job, timeout=60)
        cluster.wait_hook("epilog", job)
    env = cluster.root_env()
    exe = str(REPO / ".venv" / "bin" / "piqc-slurm")
    db = tmp_path_factory.mktemp("findings") / "piqc.db"
    url = f"sqlite:///{db}"
    for argv in (["ingest", "--create-store", "--since", f"uts{t0 - 120}",
                  "--spool", str(cluster.dir / "piqc" / "shared-spool")],
                 ["analyze", "-S", f"uts{t0 - 120}", "-E", f"uts{int(time.time()) + 60}"]):
        r = subprocess.run([exe, "--db", url, *argv], capture_output=True, text=True, env=env)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    ids = ",".join(str(j) for j in jobs.values())
    r = subprocess.run([exe, "--db", url, "sacct", "-X", "-j", ids, "-P", "-n", "-o",
                        "JobIDRaw,Findings,AdviceGPUs,WasteUSD,CostUSD"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    acct = {int(line.split("|")[0]): line.split("|") for line in r.stdout.splitlines() if line}
    conn = sqlite3.connect(db)
    rows = [r for r in conn.execute("SELECT j.job_id_raw, f.code, f.evidence, f.waste_usd FROM findings f "
                                    "JOIN jobs j ON j.id = f.job_ref").fetchall() if r[0] in jobs.values()]
    conn.close()
    evidence = {(job, code): (json.loads(ev) if isinstance(ev, str) else ev, waste)
                for job, code, ev, waste in rows}
    seff = {}
    for name, job in jobs.items():
        r = subprocess.run([exe, "--db", url, "seff", str(job)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        seff[name] = r.stdout
    exits = {name: cluster.run(["sacct", "-X", "-n", "-P", "-j", str(job), "-o", "State,ExitCode"]).stdout.strip()
             for name, job in jobs.items()}
    return {"jobs": jobs, "states": states, "summaries": summaries, "acct": acct, "evidence": evidence,
            "seff": seff, "exits": exits,
            "report": {name: (cluster.home / f"find-{job}.out").read_text() for name, job in jobs.items()}}


@pytest.mark.parametrize("name", list(PROFILES))
def test_sacct_findings(live, name):
    job = live["jobs"][name]
    _, codes, advice_gpus, waste, cost = live["acct"][job]
    found = set(filter(None, codes.split(",")))
    assert found == PROFILES[name][2], (name, live["acct"][job], live["evidence"], live["summaries"][name])
    if found & DOLLAR_CODES:
        assert float(waste) > 0, live["acct"][job]
    else:
        assert (waste, advice_gpus) == ("0.00", ""), live["acct"][job]
    if name == "idle":
        assert advice_gpus == "2"
    if name == "failed":
        assert live["states"][name] == "FAILED" and live["exits"][name] == "FAILED|3:0"
        assert waste == cost and float(cost) > 0, live["acct"][job]
        ev, _ = live["evidence"][(job, "FAILED_SPEND")]
        assert ev["side"] == "user" and ev["state"] == "FAILED" and ev["exit_code"] == "3:0", ev
    else:
        assert live["states"][name] == "COMPLETED", live["states"]


def test_under_batched_by_power(live):
    ev, waste = live["evidence"][(live["jobs"]["power"], "UNDER_BATCHED")]
    assert ev["evidence"] == "power" and ev["power_frac"] < 0.5 and ev["util_used"] >= 50, ev
    assert ev["sm_active"] is None, ev       # the load sets no GPM activity: not measured, not 0


def test_under_batched_by_gpm(live, request):
    job = live["jobs"]["gpm"]
    ev, waste = live["evidence"][(job, "UNDER_BATCHED")]
    device, = live["summaries"]["gpm"]["devices"]
    if "sm_active_mean" not in device:
        # No GPM in the summary (the sampler does not record it yet): the ladder's next rung, power.
        assert ev["evidence"] == "power", ev
        request.applymarker(pytest.mark.xfail(strict=False, reason="the sampler records no GPM yet"))
    assert ev["evidence"] == "gpm" and ev["sm_active"] == pytest.approx(0.2, abs=0.005), ev
    assert ev["tensor_active"] == pytest.approx(0.05, abs=0.005), ev


def test_input_bound_by_cpu(live):
    ev, waste = live["evidence"][(live["jobs"]["input"], "INPUT_BOUND")]
    assert ev["evidence"] == "cpu" and ev["cpu_eff"] >= 0.85 and ev["util_used"] < 50, ev


def _findings(text: str, pattern: re.Pattern, after: str | None = None) -> dict[str, str]:
    if after is not None:
        text = text.partition(after)[2]
    return dict(pattern.findall(text))


@pytest.mark.parametrize("name", list(PROFILES))
def test_report_and_seff_agree(live, name):
    report = _findings(live["report"][name], REPORT_LINE)
    seff = _findings(live["seff"][name], FINDING_LINE, after="Findings (from `piqc-slurm analyze`):")
    assert "piqc-slurm GPU report" in live["report"][name]
    assert set(report) == set(seff) & EPILOG_KNOWS, (name, live["report"][name], live["seff"][name])
    for code in EPILOG_KNOWS & set(report):
        a, b = report[code], seff[code]
        assert DOLLARS.sub("$", a) == DOLLARS.sub("$", b), (a, b)
        for x, y in zip(DOLLARS.findall(a), DOLLARS.findall(b), strict=True):
            assert abs(float(x.replace(",", "")) - float(y.replace(",", ""))) <= 0.0100001, (a, b)
