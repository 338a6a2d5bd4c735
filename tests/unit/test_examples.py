"""The examples end to end, through the real CLI (`python -m piqc_slurm` as a
subprocess, into a fresh temporary SQLite store): `simulate`, then `sacct` and
`costs` read back, and every figure is compared, to the cent, with the one the
example's README computes by hand (parsed from its "Expected cost" table and
its **Total** line: the hand computation is the independent expected value).

Also: the CPU-only job priced by `[usage] cpu_core_hour_price` (and free
without it), a job cancelled while pending costs 0.00, the examples share one
store side by side (one cluster name each), loading a scenario twice changes
nothing, a scenario error is one line on stderr with exit code 2, and the
cluster week (seed 7) loads and gives its README's totals, every job listed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pwd
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("eight-asked-three-used", "batch-of-one", "classifier-on-h100", "gaps-2am")
EARLY, LATE = "2026-01-01T00:00:00", "2027-12-31T00:00:00"  # around every example's times
COSTS_FIELDS = ("Group", "Jobs", "Completed", "GPUHours", "SpendUSD", "FailedSpendUSD", "CostPerCompletedUSD",
                "WasteUSD", "RecoverablePerYearUSD")  # DESIGN.md: `costs` default fields, in order
MONEY = r"\$(\d[\d,]*\.\d\d)"


def me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def write_config(path: Path, extra: str = "") -> Path:
    """A config of our own (never /etc/piqc's), admin = whoever runs the tests, so -a sees every job."""
    path.write_text(f"[access]\nadmin_users = [{json.dumps(me())}]\n{extra}")
    return path


def cli(url: str, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    env["TZ"] = "UTC"  # -S/-E are local time, as sacct's; the scenarios are UTC
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(config), "--db", url, *args],
                       capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, f"{' '.join(args)}: rc {r.returncode}\n{r.stderr}"
    return r


def sacct(url: str, config: Path, cluster: str, *extra: str, fields: str = "JobIDRaw,CostUSD") -> list[list[str]]:
    out = cli(url, config, "sacct", "-a", "-M", cluster, "-S", EARLY, "-E", LATE, "-P", "-n", "-o", fields,
              *extra).stdout
    return [line.split("|") for line in out.splitlines()]


def costs_rows(url: str, config: Path, *extra: str, since: str = EARLY) -> dict[str, dict[str, str]]:
    out = cli(url, config, "costs", "-S", since, "-E", LATE, "-P", *extra).stdout.splitlines()
    header = out[0].split("|")
    assert tuple(header) == COSTS_FIELDS
    return {row[0]: dict(zip(header, row, strict=True)) for row in (line.split("|") for line in out[1:])}


def costs_total(url: str, config: Path, since: str = EARLY) -> dict[str, str]:
    """The `costs -P -n` total row, read by DESIGN.md's field order."""
    lines = cli(url, config, "costs", "-S", since, "-E", LATE, "-P", "-n").stdout.splitlines()
    assert len(lines) == 1, lines
    row = dict(zip(COSTS_FIELDS, lines[0].split("|"), strict=True))
    assert row["Group"] == "total"
    return row


# ---- the READMEs, read ----

def scenario(name: str) -> dict:
    return json.loads((EXAMPLES / name / "scenario.json").read_text())


def readme(name: str) -> str:
    return (EXAMPLES / name / "README.md").read_text()


def plain(money: str) -> str:
    return money.replace(",", "")


def expected_costs(name: str) -> dict[int, str]:
    """job id -> the final $X.XX of the cost column, per row of the "Expected cost" table."""
    section = readme(name).split("## Expected cost", 1)[1].split("\n## ", 1)[0]
    out: dict[int, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or not cells[0].isdigit():
            continue
        found = re.findall(MONEY, cells[-1])
        assert found, f"{name}: no $X.XX in the cost column: {line}"
        job = int(cells[0])
        assert job not in out, f"{name}: job {job} twice in the table"
        out[job] = plain(found[-1])
    return out


def expected_total(name: str, label: str = "Total") -> tuple[str, str]:
    """(GPU-hours, USD) of the README's `**Total: H GPU-hours, $X**` line."""
    m = re.search(rf"\*\*{re.escape(label)}: ([\d,]+\.\d\d) GPU-hours, {MONEY}\*\*", readme(name))
    assert m, f"{name}: no **{label}: ...** line"
    return plain(m.group(1)), plain(m.group(2))


def test_the_readmes_parse_and_name_every_job() -> None:
    for name in NAMES:
        expected = expected_costs(name)
        assert set(expected) == {j["job_id"] for j in scenario(name)["jobs"]}, name
        hours, usd = expected_total(name)
        assert f"{sum(Decimal(v) for v in expected.values()):.2f}" == usd, name  # the table adds up to its total


def test_each_example_has_its_own_cluster() -> None:
    clusters = [scenario(name)["cluster"] for name in NAMES]
    assert len(set(clusters)) == len(clusters) and "week" not in clusters, clusters
    for name, cluster in zip(NAMES, clusters, strict=True):
        assert f"`{cluster}`" in readme(name), name
        assert f"`{cluster}`" in (EXAMPLES / "README.md").read_text(), name


# ---- one example per store ----

@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """Each example simulated alone into a fresh store: name -> (url, default config)."""
    out = {}
    for name in NAMES:
        d = tmp_path_factory.mktemp(name)
        url, config = f"sqlite:///{d}/store.db", write_config(d / "piqc.toml")
        cli(url, config, "simulate", "-q", "--scenario", str(EXAMPLES / name / "scenario.json"))
        out[name] = (url, config)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_sacct_cost_of_every_job_is_the_readmes(stores, name: str) -> None:
    url, config = stores[name]
    rows = sacct(url, config, scenario(name)["cluster"])
    got = {int(job): cost for job, cost in rows}
    assert len(got) == len(rows)  # one line per job
    assert got == expected_costs(name)


@pytest.mark.parametrize("name", NAMES)
def test_costs_total_is_the_readmes(stores, name: str) -> None:
    url, config = stores[name]
    row = costs_total(url, config)
    assert (row["GPUHours"], row["SpendUSD"]) == expected_total(name)


def test_batch_of_one_cost_per_completed_run(stores) -> None:
    """All runs' spend (the failed attempt included) over the completed runs, as its README works it out."""
    name = "batch-of-one"
    text = readme(name)
    m = re.search(rf"Completed: (\d+); CostPerCompletedUSD: ([\d.]+) / (\d+) = {MONEY}", text)
    assert m, "batch-of-one README: no `Completed: N; CostPerCompletedUSD: S / N = $X` line"
    completed, spend, divisor, per = int(m.group(1)), m.group(2), int(m.group(3)), plain(m.group(4))
    table = expected_costs(name)
    assert spend == expected_total(name)[1] == f"{sum(Decimal(v) for v in table.values()):.2f}"
    jobs = scenario(name)["jobs"]
    assert completed == divisor == sum(j["state"] == "COMPLETED" for j in jobs)
    assert any(j["state"] != "COMPLETED" for j in jobs)  # a failed run that the division must include
    group = "{user}:{account}:{name}".format(**jobs[0])
    assert all("{user}:{account}:{name}".format(**j) == group for j in jobs)
    url, config = stores[name]
    rows = costs_rows(url, config, "--by", "job")
    assert list(rows) == [group, "total"]
    assert rows[group]["Completed"] == str(completed)
    assert rows[group]["SpendUSD"] == spend
    assert rows[group]["CostPerCompletedUSD"] == per


def cpu_only_job(name: str) -> dict:
    [job] = [j for j in scenario(name)["jobs"] if "start" in j and j.get("gpu_indices") == []]
    return job


def test_cpu_only_job_is_free_by_default_and_priced_by_cpus_when_configured(stores, tmp_path: Path) -> None:
    name = "gaps-2am"
    job = cpu_only_job(name)
    url, config = stores[name]
    cluster = scenario(name)["cluster"]
    assert expected_costs(name)[job["job_id"]] == "0.00"
    assert sacct(url, config, cluster, "-j", str(job["job_id"])) == [[str(job["job_id"]), "0.00"]]
    # the README's second figure for it: AllocCPUS x hours x cpu_core_hour_price, by hand
    text = readme(name)
    price = re.search(r"`\[usage\] cpu_core_hour_price = ([\d.]+)`", text).group(1)
    m = re.search(rf"^{job['job_id']}: (\d+) CPUs x (\d+)/60 h x {re.escape(price)} = [\d.]+ = {MONEY}$", text, re.M)
    assert m, "gaps-2am README: no `JOB: N CPUs x M/60 h x PRICE = ... = $X` line"
    minutes = (datetime.fromisoformat(job["end"]) - datetime.fromisoformat(job["start"])).total_seconds() / 60
    assert (int(m.group(1)), int(m.group(2))) == (job["cpus"], minutes)
    priced = write_config(tmp_path / "priced.toml", f"[usage]\ncpu_core_hour_price = {price}\n")
    assert sacct(url, priced, cluster, "-j", str(job["job_id"])) == [[str(job["job_id"]), plain(m.group(3))]]
    # GPU jobs keep their GPU-only price; the total gains the CPU job's unrounded cost
    got = {int(j): c for j, c in sacct(url, priced, cluster)}
    assert got == {**expected_costs(name), job["job_id"]: plain(m.group(3))}
    row = costs_total(url, priced)
    assert (row["GPUHours"], row["SpendUSD"]) == expected_total(name, f"Total with cpu_core_hour_price = {price}")


def test_a_job_cancelled_while_pending_costs_nothing(stores) -> None:
    name = "gaps-2am"
    [job] = [j for j in scenario(name)["jobs"] if j["state"] == "CANCELLED" and "start" not in j]
    url, config = stores[name]
    assert expected_costs(name)[job["job_id"]] == "0.00"
    assert sacct(url, config, scenario(name)["cluster"], "-j", str(job["job_id"]),
                 fields="JobIDRaw,State,AllocGPUs,CostUSD") == [[str(job["job_id"]), "CANCELLED", "0", "0.00"]]


# ---- all examples in one store ----

def test_the_examples_share_one_store(tmp_path: Path) -> None:
    url, config = f"sqlite:///{tmp_path}/shared.db", write_config(tmp_path / "piqc.toml")
    for name in NAMES:
        cli(url, config, "simulate", "-q", "--scenario", str(EXAMPLES / name / "scenario.json"))
    everything = Counter()
    for name in NAMES:
        rows = sacct(url, config, scenario(name)["cluster"])
        assert {int(j): c for j, c in rows} == expected_costs(name), name
        everything.update(tuple(r) for r in rows)
    assert Counter(tuple(r) for r in sacct(url, config, "all")) == everything
    row = costs_total(url, config)
    totals = [expected_total(name) for name in NAMES]
    assert row["GPUHours"] == f"{sum(Decimal(h) for h, _ in totals):.2f}"
    assert row["SpendUSD"] == f"{sum(Decimal(u) for _, u in totals):.2f}"


@pytest.mark.parametrize("name", NAMES)
def test_simulating_twice_changes_nothing(tmp_path: Path, name: str) -> None:
    url, config = f"sqlite:///{tmp_path}/store.db", write_config(tmp_path / "piqc.toml")
    path = str(EXAMPLES / name / "scenario.json")
    fields = "JobIDRaw,JobName,User,Account,State,Start,End,AllocGPUs,GPUsUsed,GPUUtilAvg,GPUMemPeak,CostUSD,WasteUSD"

    def state() -> tuple[list[list[str]], dict]:
        return (sacct(url, config, scenario(name)["cluster"], "-D", fields=fields),
                costs_rows(url, config, "--by", "job"))

    cli(url, config, "simulate", "-q", "--scenario", path)
    once = state()
    cli(url, config, "simulate", "-q", "--scenario", path)
    assert state() == once
    assert len(once[0]) == len(scenario(name)["jobs"])


# ---- a scenario that does not load ----

def test_a_scenario_error_is_one_line_naming_the_path(tmp_path: Path) -> None:
    doc = copy.deepcopy(scenario("gaps-2am"))
    doc["jobs"][0]["gpu_load"][0]["util"] = 140
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc, indent=2))
    r = cli(f"sqlite:///{tmp_path}/store.db", write_config(tmp_path / "piqc.toml"), "simulate", "--scenario",
            str(bad), check=False)
    assert r.returncode == 2
    assert r.stderr == f"piqc-slurm: {bad}: jobs[0].gpu_load[0].util: expected 0..100, got 140\n"
    assert r.stdout == ""


def test_a_missing_scenario_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    r = cli(f"sqlite:///{tmp_path}/store.db", write_config(tmp_path / "piqc.toml"), "simulate", "--scenario",
            str(missing), check=False)
    assert r.returncode == 2
    assert r.stderr == f"piqc-slurm: {missing}: No such file or directory\n"


# ---- the cluster week, seed 7 ----

WEEK_DIR = EXAMPLES / "cluster-week"


def week_stated() -> dict[str, str]:
    """The README's stated output for seed 7 (its ```text block)."""
    section = (WEEK_DIR / "README.md").read_text().split("## Totals for seed 7", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return dict(re.findall(r"^(.+?)\s{2,}(\S+)$", block, re.M))


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> tuple[str, Path, dict]:
    """Seed 7 generated in-process, written out, simulated into a fresh store (it must finish)."""
    spec = importlib.util.spec_from_file_location("cluster_week_generate", WEEK_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.generate(7)
    d = tmp_path_factory.mktemp("week")
    (d / "week.json").write_text(module.dumps(doc))
    url, config = f"sqlite:///{d}/week.db", write_config(d / "piqc.toml")
    cli(url, config, "simulate", "-q", "--scenario", str(d / "week.json"))
    return url, config, doc


def exact_cost(doc: dict, job: dict) -> Decimal:
    """GPUs x hours x the node type's price, in exact decimals (0 if it never started)."""
    if "start" not in job:
        return Decimal(0)
    gpu_type = {n["name"]: n["gpu_type"] for n in doc["nodes"]}[job["node"]]
    seconds = int((datetime.fromisoformat(job["end"]).replace(tzinfo=UTC)
                   - datetime.fromisoformat(job["start"]).replace(tzinfo=UTC)).total_seconds())
    return Decimal(str(doc["prices"][gpu_type])) * len(job["gpu_indices"]) * seconds / 3600


def record_cost(doc: dict, job: dict) -> str:
    """The exact cost rounded half-up to the cent, as usage/cost.py says money is shown."""
    return str(exact_cost(doc, job).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def half_cent(doc: dict, job: dict) -> bool:
    """Exactly halfway between two cents: where rounding a binary float, not the decimal, can go wrong."""
    return (exact_cost(doc, job) * 200) % 2 == 1


def test_week_costs_total_is_the_readmes(week) -> None:
    url, config, doc = week
    stated = week_stated()
    row = costs_total(url, config, since="2026-11-16T00:00:00")
    assert row["GPUHours"] == stated["GPU-hours"]
    assert row["SpendUSD"] == stated["spend USD"]
    assert row["Completed"] == stated["completed jobs"]
    assert doc["cluster"] == "week" and len(doc["jobs"]) == int(stated["jobs"])


def test_week_sacct_lists_every_job(week) -> None:
    url, config, doc = week
    # the week holds costs exactly on a half cent (401064: 1 GPU x 1044 s x $1.50/h = $0.435): half-up gives 0.44
    assert sum(half_cent(doc, j) for j in doc["jobs"]) >= 10
    # -D: every record (a requeued job's runs share its id), each at its own cost
    records = sacct(url, config, "week", "-D")
    assert len(records) == len(doc["jobs"])
    assert Counter(tuple(r) for r in records) == Counter((str(j["job_id"]), record_cost(doc, j)) for j in doc["jobs"])
    # without -D: every job id once, its newest run
    newest: dict[int, dict] = {}
    for j in doc["jobs"]:
        if j["job_id"] not in newest or j.get("restarts", 0) > newest[j["job_id"]].get("restarts", 0):
            newest[j["job_id"]] = j
    rows = sacct(url, config, "week")
    assert len(rows) == len(newest) < len(doc["jobs"])
    assert {int(j): c for j, c in rows} == {k: record_cost(doc, j) for k, j in newest.items()}
