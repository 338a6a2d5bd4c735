#!/usr/bin/env python3
"""Side by side on the live test cluster: piqc-slurm against what admins use today, same jobs, one run.

    .venv/bin/python bench/run.py --only cluster

Needs the local Slurm 22.05.8 test cluster (docker-slurm/cluster.sh) with at
least 2,000 finished jobs in slurmdbd; where it has fewer, submit them first
(cheap: one array of `true`, as the test user, while nothing else uses the
cluster):

    eval "$(bash docker-slurm/cluster.sh env)"
    runuser -u piqcuser -- env SLURM_CONF=$SLURM_CONF sbatch --array=0-1999 --wrap true -o /dev/null

1. `piqc-slurm ingest` of every job slurmdbd holds into a new SQLite store
   (the cluster's piqc.toml, this store).
2. `piqc-slurm sacct ARGS` against `sacct ARGS` for each flag set below, both
   as root on the same jobs, wall clock median of --runs (7; quick 3): the
   ratio ours / sacct per set; target <= 1.0x on the median set and <= 1.25x
   on the worst. Each pair's output line counts are kept in the detail (they
   must agree, or the comparison is void: the suite fails).
3. `piqc-slurm seff JOB` against Slurm's seff (contribs/seff/seff of
   slurm-22-05-8-1, run by perl with the Debian libslurmdb-perl), and an
   efficiency listing of the array's tasks, `piqc-slurm sacct -X -P -o
   JobID,State,Elapsed,TimeEff,CPUEff,MemEff -j ARRAY` against reportseff
   (PyPI, in .venv) `--no-color -p --format ... ARRAY`.
4. The floor: the interpreter's start (`python -c pass`, with and without
   site: the editable install's import hook), `import piqc_slurm.cli`, and
   the imports `piqc-slurm sacct -j` makes (`-X importtime`, top modules).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import PIQC, PY, REPO, Ctx, Skip, run, stats  # noqa: E402

MIN_JOBS = 2000
SEFF_SCRIPT = Path("/tmp/piqc-bench/seff-22.05.8")
SLURM_GIT = Path("/work/.mirror/SchedMD+slurm/repo")
EFF_FORMAT = "JobID,State,Elapsed,TimeEff,CPUEff,MemEff"


def cluster_env() -> dict[str, str]:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from slurmtest import parse_env_lines
    finally:
        sys.path.remove(str(REPO / "tests"))
    r = subprocess.run(["bash", str(REPO / "docker-slurm/cluster.sh"), "env"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"no test cluster (cluster.sh env: {r.stderr.strip()[:200]})")
    env = dict(os.environ)
    env.update(parse_env_lines(r.stdout))
    env["TZ"] = "UTC"
    return env


def seff_script(env: dict[str, str]) -> list[str] | None:
    """Slurm 22.05.8's own seff, run by perl, where its Perl modules are installed."""
    if not SEFF_SCRIPT.exists():
        r = subprocess.run(["git", "-C", str(SLURM_GIT), "show", "slurm-22-05-8-1:contribs/seff/seff"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        SEFF_SCRIPT.parent.mkdir(parents=True, exist_ok=True)
        SEFF_SCRIPT.write_text(r.stdout)
    probe = subprocess.run(["perl", "-MSlurmdb", "-MSlurm", "-e", "1"], capture_output=True, env=env)
    return ["perl", str(SEFF_SCRIPT)] if probe.returncode == 0 else None


def pair(ctx: Ctx, key: str, label: str, ours: list[str], theirs: list[str], ref: str, env: dict[str, str],
         runs: int, same_lines: bool = True) -> float:
    """Ours and theirs alternately (one warm-up each), median of `runs`; the ratio figure."""
    out_o, out_t = run(ours, env)[1], run(theirs, env)[1]
    to, tt = [], []
    for _ in range(runs):
        to.append(run(ours, env)[0])
        tt.append(run(theirs, env)[0])
    lo, lt = len(out_o.splitlines()), len(out_t.splitlines())
    if same_lines and lo != lt:
        raise RuntimeError(f"{label}: {lo} lines from us, {lt} from {ref}: not the same jobs\n"
                           f"ours: {' '.join(ours)}\ntheirs: {' '.join(theirs)}")
    mo, mt = statistics.median(to), statistics.median(tt)
    ctx.add(f"{key}.ours", f"piqc-slurm {label}", mo * 1000, "ms", gate=True, lines=lo, runs=runs)
    ctx.add(f"{key}.theirs", f"{ref} {label}", mt * 1000, "ms", lines=lt, runs=runs)
    ctx.add(f"{key}.ratio", f"{label}: piqc-slurm / {ref}", mo / mt, "x", ratio=mo / mt, ratio_to=ref)
    return mo / mt


def finished_jobs(env: dict[str, str]) -> tuple[list[tuple[str, str, str]], str]:
    """The finished allocations slurmdbd holds (JobID, State, JobName), and the first one's Submit."""
    out = run(["sacct", "-a", "-X", "-n", "-P", "-S", "2020-01-01", "-E", "now", "-o", "JobID,State,JobName,Submit"],
              env)[1]
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    rows = [r for r in rows if len(r) == 4]
    first = min((r[3] for r in rows), default="2020-01-01T00:00:00")
    return [(r[0], r[1], r[2]) for r in rows if r[1].split()[0] not in ("RUNNING", "PENDING", "REQUEUED",
                                                                       "SUSPENDED", "COMPLETING")], first


def floor(ctx: Ctx, env: dict[str, str], url: str, job: str, runs: int) -> None:
    for key, what, argv in (
            ("python", "python -c pass (venv, site + editable-install hook)", [PY, "-c", "pass"]),
            ("python_nosite", "python -S -c pass (no site: the bare interpreter)", [PY, "-S", "-c", "pass"]),
            ("import_cli", "python -c 'import piqc_slurm.cli'", [PY, "-c", "import piqc_slurm.cli"]),
            ("sacct_binary", "sacct --version (Slurm's C client, the same floor for it)", ["sacct", "--version"])):
        xs = [run(argv, env)[0] for _ in range(runs + 1)][1:]
        ctx.add(f"floor.{key}", what, statistics.median(xs) * 1000, "ms")
    r = subprocess.run([PY, "-X", "importtime", "-m", "piqc_slurm", "--db", url, "sacct", "-j", job],
                       capture_output=True, text=True, env=env)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = sum(c for c, depth, _ in rows if depth == 1)
    heavy = sorted(((c, n) for c, depth, n in rows if depth <= 2), reverse=True)[:8]
    ctx.add("floor.imports_sacct", "imports of `piqc-slurm sacct -j` (-X importtime, cumulative of top level)",
            top / 1000, "ms", heaviest={n: round(c / 1000, 1) for c, n in heavy})


def suite(ctx: Ctx) -> None:
    if os.geteuid() != 0:
        raise Skip("needs root (the cluster's sacct as the admin)")
    env = cluster_env()
    if not shutil.which("sacct", path=env.get("PATH")):
        raise Skip("no sacct")
    jobs, first = finished_jobs(env)
    if len(jobs) < MIN_JOBS:
        raise Skip(f"{len(jobs)} finished jobs in slurmdbd, {MIN_JOBS} needed: submit them (see bench_cluster.py)")
    runs = 3 if ctx.quick else 7
    arrays = {}
    for jid, _state, _name in jobs:
        if "_" in jid:
            base = jid.split("_")[0]
            arrays[base] = arrays.get(base, 0) + 1
    if not arrays:
        raise Skip("no array job in slurmdbd: submit the 2,000 as one array (see bench_cluster.py)")
    array_id, tasks = max(arrays.items(), key=lambda kv: kv[1])
    done = [j for j, s, _ in jobs if s == "COMPLETED" and "_" not in j]
    one = done[-1] if done else jobs[-1][0]
    ctx.note(f"{len(jobs):,} finished jobs in slurmdbd; array {array_id} ({tasks:,} tasks); -j {one}")

    with tempfile.TemporaryDirectory(prefix="piqc-bench-cluster-") as d:
        url = f"sqlite:///{d}/piqc.db"
        secs, _ = run([PIQC, "--db", url, "ingest", "-q", "--create-store", "--since", first], env)
        ctx.add("ingest", f"piqc-slurm ingest of every job in slurmdbd ({len(jobs):,} finished) into a new store",
                secs, "s")
        t_first = run(["sacct", "-a", "-X", "-n", "-P", "-j", array_id, "-o", "Submit"], env)[1].split()[0]
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.strptime(t_first, "%Y-%m-%dT%H:%M:%S"))
        until = "now"
        sets = (
            ("j", "-j JOB", ["-j", one]),
            ("window", "-a -X -S T -E now (a window)", ["-a", "-X", "-S", since, "-E", until]),
            ("state", "-a -s F,CA,TO -S T -E now", ["-a", "-s", "F,CA,TO", "-S", since, "-E", until]),
            ("table", "-a -X -S T -E now -o JobID,JobName%20,User,State,Elapsed,ExitCode (a table)",
             ["-a", "-X", "-S", since, "-E", until, "-o", "JobID,JobName%20,User,State,Elapsed,ExitCode"]),
            ("parsable", "-a -P -S T -E now -o JobID,State,Elapsed (all steps)",
             ["-a", "-P", "-S", since, "-E", until, "-o", "JobID,State,Elapsed"]),
            ("user", "-u piqcuser -S T", ["-u", "piqcuser", "-S", since]),
            ("recent", "-n -a -S now-1hours", ["-n", "-a", "-S", "now-1hours"]),
            ("default", "(no flags: the default window)", []),
            ("json", "--json -j JOB", ["--json", "-j", one]),
        )
        ratios = {}
        for key, label, args in sets:
            ratios[key] = pair(ctx, f"sacct.{key}", f"sacct {label}", [PIQC, "--db", url, "sacct", *args],
                               ["sacct", *args], "sacct", env, runs, same_lines=key != "json")
        vals = sorted(ratios.values())
        ctx.add("sacct.ratio_median", "piqc-slurm sacct / sacct: the median flag set", statistics.median(vals), "x",
                target=1.0, sets=len(vals))
        worst = max(ratios, key=ratios.get)
        ctx.add("sacct.ratio_worst", f"piqc-slurm sacct / sacct: the worst flag set ({worst})", ratios[worst], "x",
                target=1.25)

        seff = seff_script(env)
        if seff:
            pair(ctx, "seff", f"seff JOB ({one})", [PIQC, "--db", url, "seff", one], [*seff, one],
                 "Slurm's seff", env, runs, same_lines=False)
        else:
            ctx.note("no Slurm seff (perl Slurmdb/Slurm modules, or the slurm git mirror, missing)")
        rs = Path(PY).with_name("reportseff")
        if rs.exists():
            pair(ctx, "reportseff", f"efficiency listing of array {array_id} ({tasks:,} tasks)",
                 [PIQC, "--db", url, "sacct", "-X", "-P", "-o", EFF_FORMAT, "-j", array_id],
                 [str(rs), "--no-color", "-p", "--format", EFF_FORMAT, array_id], "reportseff", env, runs,
                 same_lines=False)
        else:
            ctx.note("no reportseff in .venv (the dev extras)")
        floor(ctx, env, url, one, runs)
        s = stats([run([PIQC, "--db", url, "doctor"], env, check=False)[0] for _ in range(3)])
        ctx.add("doctor", "piqc-slurm doctor (every check)", s["median"], "s")


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--only", "cluster", *sys.argv[1:]]))
