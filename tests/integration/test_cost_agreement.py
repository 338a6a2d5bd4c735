"""One live job, four surfaces, one cost: the report in its output file (an
estimate from the Epilog's clock), `piqc-slurm seff`, `piqc-slurm sacct -o
CostUSD,GPUUtilAvg` and the SQL views, against an expected value computed
here by hand from real sacct's ElapsedRaw and the catalog's h100 price."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from slurmtest import REPO

pytestmark = pytest.mark.slurm

LOAD = json.dumps([{"gpus": [0, 1], "util": 80, "mem_gib": 20, "process": True}])
REPORT = re.compile(r"^Estimated cost: \$(?P<cost>[\d,.]+) \((?P<n>\d+) x (?P<type>\S+) for (?P<el>[\d:-]+) at "
                    r"\$(?P<rate>[\d.]+)/GPU-hour\)$", re.M)


def cents(x: float) -> str:
    return str(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s


@pytest.fixture(scope="module")
def live(cluster, tmp_path_factory):
    job = cluster.submit(f"exec fakegpu-work --seconds 25 --load '{LOAD}'", "--gres=gpu:4", "-o", "cost-%j.out",
                         name="t-cost")
    assert cluster.wait(job, timeout=150) == "COMPLETED"
    cluster.wait_summary(job, timeout=60)
    cluster.wait_hook("epilog", job)
    url = f"sqlite:///{tmp_path_factory.mktemp('cost')}/piqc.db"
    exe = str(REPO / ".venv" / "bin" / "piqc-slurm")
    r = subprocess.run([exe, "--db", url, "ingest", "--create-store", "--since", "now-2hours", "--spool",
                        str(cluster.dir / "piqc" / "shared-spool")], capture_output=True, text=True,
                       env=cluster.root_env())
    assert r.returncode == 0, r.stderr
    elapsed = int(cluster.run(["sacct", "-X", "-n", "-P", "-j", str(job), "-o", "ElapsedRaw"]).stdout.strip())
    return {"job": job, "url": url, "exe": exe, "elapsed": elapsed,
            "report": (cluster.home / f"cost-{job}.out").read_text()}


def test_every_surface_prints_the_accounting_cost(cluster, live):
    price = json.loads((REPO / "piqc_slurm" / "data" / "gpus.json").read_text())["types"]["h100"]["price"]
    want = cents(4 * live["elapsed"] / 3600 * price)          # 4 GPUs x sacct's Elapsed x the catalog's price
    env = cluster.root_env()
    got = subprocess.run([live["exe"], "--db", live["url"], "sacct", "-X", "-j", str(live["job"]), "-P", "-n", "-o",
                          "CostUSD,GPUUtilAvg,GPUsUsed,ElapsedRaw"], capture_output=True, text=True, env=env)
    cost, util, used, elapsed = got.stdout.strip().split("|")
    assert (cost, used, int(elapsed)) == (want, "2", live["elapsed"]), got.stdout
    assert 38.0 <= float(util) <= 41.0                           # 2 of 4 GPUs at 80 %: 40 % over the allocation
    seff = subprocess.run([live["exe"], "--db", live["url"], "seff", str(live["job"])], capture_output=True,
                          text=True, env=env).stdout
    # seff against the hand-computed cost (not against sacct's print), and its utilization in the same band
    assert f"GPU cost: ${want} " in seff, seff
    m = re.search(r"^GPU utilization over the allocation: ([\d.]+)%", seff, re.M)
    assert m and 38.0 <= float(m[1]) <= 41.0 and m[1] == util, seff
    # the views, with the same price in gpu_prices
    path = live["url"].split(":///", 1)[1]
    conn = sqlite3.connect(path)
    conn.executescript((REPO / "sql" / "views.sql").read_text())
    conn.execute("INSERT OR REPLACE INTO gpu_prices VALUES ('h100', ?)", (price,))
    vu, vc = conn.execute("SELECT g.util_avg, c.cost_usd FROM v_job_gpu g JOIN v_job_cost c ON c.job_ref = "
                          "g.job_ref WHERE g.job_id_raw = ?", (live["job"],)).fetchone()
    conn.close()
    assert (f"{vu:.1f}", cents(vc)) == (util, cost)


def test_the_report_is_an_estimate_within_a_second(cluster, live):
    m = REPORT.search(live["report"])
    assert m, live["report"]
    price = json.loads((REPO / "piqc_slurm" / "data" / "gpus.json").read_text())["types"]["h100"]["price"]
    assert (m["n"], m["type"], float(m["rate"])) == ("4", "h100", price)
    report_elapsed = seconds(m["el"])
    assert abs(report_elapsed - live["elapsed"]) <= 1, (report_elapsed, live["elapsed"])
    # the same rounding over its own whole seconds, and so within a cent of the accounting figure
    assert m["cost"] == cents(4 * report_elapsed / 3600 * price)
    assert abs(float(m["cost"]) - 4 * live["elapsed"] / 3600 * price) <= 0.011
    # half the cost bought idle GPUs: the same rounding
    assert (f"IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); "
            f"${cents(4 * report_elapsed / 3600 * price / 2)} "
            f"of ${m['cost']} bought idle GPUs.") in live["report"]
    assert "  Advice: Request --gres=gpu:2." in live["report"]
    assert Path(cluster.home / f"cost-{live['job']}.out").stat().st_uid != 0
