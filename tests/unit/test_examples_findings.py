"""Each example's README lists, by hand, the findings its scenario yields: simulate, analyze,
then `sacct -o JobIDRaw,Findings,WasteUSD,AdviceGPUs,AdviceTier` must print exactly them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = ["eight-asked-three-used", "batch-of-one", "classifier-on-h100", "gaps-2am"]
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_,]*)\s*\|\s*\$([\d,.]+)\s*\|\s*(\d*)\s*\|\s*([\w-]*)\s*\|$")


def expected(name: str) -> dict[str, list[str]]:
    text = (EXAMPLES / name / "README.md").read_text()
    section = text[text.index("xpected findings"):]
    return {m[1]: [m[2], m[3].replace(",", ""), m[4], m[5]] for m in
            (ROW.match(ln.strip()) for ln in section.splitlines()) if m}


@pytest.mark.parametrize("name", CASES)
def test_the_findings_are_the_readmes(name, tmp_path):
    want = expected(name)
    assert want, f"{name}/README.md has no expected-findings table"
    cluster = json.loads((EXAMPLES / name / "scenario.json").read_text())["cluster"]
    cfg = tmp_path / "piqc.toml"
    cfg.write_text("")
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(cfg), "--db", f"sqlite:///{tmp_path}/s.db"]
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}
    for argv in (["simulate", "-q", "--scenario", str(EXAMPLES / name / "scenario.json")],
                 ["analyze", "-q", "-S", "2026-01-01", "-E", "2027-01-01"]):
        r = subprocess.run(base + argv, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["sacct", "-M", cluster, "-j", ",".join(want), "-P", "-n", "-o",
                               "JobIDRaw,Findings,WasteUSD,AdviceGPUs,AdviceTier"], capture_output=True, text=True,
                       env=env)
    got = {ln.split("|")[0]: ln.split("|")[1:] for ln in r.stdout.splitlines()}
    assert got == want


def test_analyze_is_idempotent_and_records_the_window(tmp_path):
    import sqlite3

    name = "batch-of-one"
    cfg = tmp_path / "piqc.toml"
    cfg.write_text("")
    db = tmp_path / "s.db"
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(cfg), "--db", f"sqlite:///{db}"]
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}
    subprocess.run(base + ["simulate", "-q", "--scenario", str(EXAMPLES / name / "scenario.json")], check=True,
                   env=env)

    def findings() -> list[tuple]:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT j.job_id_raw, f.code, f.waste_usd, f.sentence FROM findings f JOIN jobs j "
                             "ON j.id = f.job_ref ORDER BY 1, 2").fetchall()

    runs = []
    for _ in range(2):
        subprocess.run(base + ["analyze", "-q", "-S", "2026-01-01", "-E", "2027-01-01"], check=True, env=env)
        runs.append(findings())
    assert runs[0] == runs[1] and len(runs[0]) == 6          # 5 UNDER_BATCHED + 1 FAILED_SPEND, not 12
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*), MIN(jobs), MAX(findings) FROM analysis_runs").fetchone() == (2, 6, 6)
