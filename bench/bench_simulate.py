#!/usr/bin/env python3
"""Simulate: the cluster week (examples/cluster-week/generate.py, seed
7: 2,231 jobs on 100 GPUs) loaded by `piqc-slurm simulate` into a fresh store,
then `piqc-slurm costs --by account` and `piqc-slurm sacct -a -M week` on it.

    .venv/bin/python bench/run.py --only simulate [--quick]     (as one suite of the runner)
    .venv/bin/python bench/bench_simulate.py [--runs 3] [--seed 7] [--weeks 1] [--pg-url URL]

--weeks K makes K copies of the week, copy k shifted k weeks later, its job
ids raised by k x 100,000 and its nodes renamed `<node>-w<k+1>` (so no GPU is
held twice: a job may run past the end of its week), one cluster `week`.

Figures: wall time of `piqc-slurm simulate` (a subprocess, so interpreter
start is included) into a fresh store each run, median / min / max over
--runs; one more `simulate` of the same scenario into the last store (every
row replaced: the idempotent path); then the median over --query-runs of
`costs --by account` and of `sacct -a -M week -S .. -E .. -P -o
JobIDRaw,CostUSD` on that store. SQLite always; PostgreSQL too with --pg-url
(a database whose role may CREATE DATABASE, e.g. `docker-slurm/postgres.sh
url`; each run gets a new database, dropped afterwards).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATE = REPO / "examples" / "cluster-week" / "generate.py"
VENV_PY = REPO / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
ID_STRIDE = 100_000  # job ids of copy k: + k x this (one week has ~2,300 ids from 400001)
SUMMARY = re.compile(r"(\d+) job\(s\), (\d+) summaries in")


def generator():
    spec = importlib.util.spec_from_file_location("cluster_week_generate", GENERATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shifted(text: str, days: int) -> str:
    return (datetime.fromisoformat(text) + timedelta(days=days)).isoformat()


def scenario(gen, seed: int, weeks: int) -> dict:
    """The generated week, or `weeks` copies of it one after the other on copies of the nodes."""
    week = gen.generate(seed)
    if weeks == 1:
        return week
    doc = {"cluster": week["cluster"], "prices": week["prices"], "nodes": list(week["nodes"]),
           "jobs": list(week["jobs"])}
    for k in range(1, weeks):
        suffix = f"-w{k + 1}"
        doc["nodes"] += [{**n, "name": n["name"] + suffix} for n in week["nodes"]]
        for j in week["jobs"]:
            c = {**j, "job_id": j["job_id"] + k * ID_STRIDE}
            for key in ("submit", "eligible", "start", "end"):
                if key in c:
                    c[key] = shifted(c[key], 7 * k)
            if "node" in c:
                c["node"] = c["node"] + suffix
            doc["jobs"].append(c)
    return doc


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr}")
    return dt, r


class Postgres:
    """Fresh databases on the server of --pg-url, each dropped when done."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self.base = make_url(url)
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def _run(self, sql: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def create(self) -> str:
        name = f"piqc_bench_sim_p{os.getpid()}_{secrets.token_hex(4)}"
        self._run(f'CREATE DATABASE "{name}"')
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self._run(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def fmt(seconds: list[float]) -> str:
    return " ".join(f"{x:>8.2f}" for x in (statistics.median(seconds), min(seconds), max(seconds)))


def suite(ctx) -> None:
    """The runner's suite: --runs 3 simulates of one week, queries median of 5, SQLite and PostgreSQL
    (quick: 1 simulate, SQLite only, no second simulate, median of 3)."""
    from common import postgres_available

    argv = ["--runs", "1" if ctx.quick else "3", "--query-runs", "3" if ctx.quick else "5"]
    if ctx.quick:  # the store suite covers PostgreSQL; quick keeps under its 2 minutes
        argv.append("--no-again")
    elif ctx.pg and not postgres_available():
        sys.path.insert(0, str(REPO / "tests"))
        from pg import postgres_url

        argv += ["--pg-url", postgres_url()]
    main(argv, ctx)


def main(argv: list[str] | None = None, ctx=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="simulate runs, each into a fresh store (default 3)")
    ap.add_argument("--query-runs", type=int, default=5, help="runs of each query (default 5)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed (default 7: README's totals)")
    ap.add_argument("--weeks", type=int, default=1, help="copies of the week, one after the other (default 1)")
    ap.add_argument("--pg-url", metavar="URL", help="also PostgreSQL: a database whose role may CREATE DATABASE")
    ap.add_argument("--no-again", action="store_true", help="skip the second simulate into the same store")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.query_runs < 1 or args.weeks < 1:
        ap.error("--runs, --query-runs and --weeks must be at least 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    env["TZ"] = "UTC"  # -S/-E are local time; the scenario is UTC
    gen = generator()
    with tempfile.TemporaryDirectory(prefix="piqc-bench-simulate-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        doc = scenario(gen, args.seed, args.weeks)
        path = tmp / "week.json"
        path.write_text(gen.dumps(doc))
        gen_s = time.perf_counter() - t0
        try:
            me = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            me = str(os.getuid())
        config = tmp / "piqc.toml"  # our own config (not /etc/piqc's); admin, so sacct -a sees every job
        config.write_text(f"[access]\nadmin_users = [{json.dumps(me)}]\n")
        start = gen.WEEK_START
        since = start.isoformat()
        until = (start + timedelta(days=7 * args.weeks + 3)).isoformat()  # jobs run on past their week's end
        jobs = len(doc["jobs"])
        print(f"scenario: seed {args.seed}, {args.weeks} week(s): {jobs:,} jobs, {len(doc['nodes'])} nodes, "
              f"{sum(n['gpus'] for n in doc['nodes'])} GPUs ({path.stat().st_size / 2**20:.1f} MiB), "
              f"generated in {gen_s:.1f}s")
        print(f"window: -S {since} -E {until}")
        print(f"{'backend':<10} {'step':<52} {'runs':>4} {'median s':>8} {'min s':>8} {'max s':>8}")
        backends = [("sqlite", None)] + ([("postgresql", Postgres(args.pg_url))] if args.pg_url else [])
        for backend, pg in backends:
            made: list[str] = []

            def fresh(i: int, backend=backend, pg=pg, made=made) -> str:
                url = f"sqlite:///{tmp}/{backend}-{i}.db" if pg is None else pg.create()
                made.append(url)
                return url

            def cli(url: str, *a: str) -> list[str]:
                return [PY, "-m", "piqc_slurm", "--config", str(config), "--db", url, *a]

            try:
                times, counts, url = [], None, ""
                for i in range(args.runs):
                    if url and pg is not None:
                        pg.drop(made.pop())
                    url = fresh(i)
                    dt, r = timed(cli(url, "simulate", "--scenario", str(path)), env)
                    times.append(dt)
                    m = SUMMARY.search(r.stderr)
                    counts = (int(m.group(1)), int(m.group(2))) if m else (jobs, -1)
                step = f"simulate: {counts[0]:,} jobs, {counts[1]:,} summaries, fresh store"
                print(f"{backend:<10} {step:<52} {args.runs:>4} {fmt(times)}")
                if ctx is not None:
                    ctx.add(f"simulate.{backend}", f"simulate the example week ({counts[0]:,} jobs), fresh "
                            f"{backend} store: median", statistics.median(times), "s", gate=True, runs=len(times))
                if not args.no_again:
                    dt, _ = timed(cli(url, "simulate", "-q", "--scenario", str(path)), env)
                    print(f"{backend:<10} {'simulate again, same store (rows replaced)':<52} {1:>4} {fmt([dt])}")
                queries = (
                    ("costs --by account", ["costs", "-S", since, "-E", until, "--by", "account", "-P"], 2),
                    ("sacct -a -M week -P -o JobIDRaw,CostUSD",
                     ["sacct", "-a", "-M", "week", "-S", since, "-E", until, "-P", "-o", "JobIDRaw,CostUSD"], 1),
                )
                for label, argv, skip in queries:
                    qt, out = [], ""
                    for _ in range(args.query_runs):
                        dt, r = timed(cli(url, *argv), env)
                        qt.append(dt)
                        out = r.stdout
                    rows = len(out.splitlines()) - skip  # less the header (and costs' total row)
                    step = f"{label}: {rows:,} rows"
                    print(f"{backend:<10} {step:<52} {args.query_runs:>4} {fmt(qt)}")
                    if ctx is not None:
                        ctx.add(f"{label.split()[0]}.{backend}", f"{label} on the week ({rows:,} rows), {backend}: "
                                "median", statistics.median(qt), "s", gate=True, runs=len(qt))
                _, r = timed(cli(url, "costs", "-S", since, "-E", until, "-P", "-o", "Group,Jobs,GPUHours,SpendUSD"),
                             env)
                print(f"{backend:<10} costs total: {r.stdout.splitlines()[-1]}  (Group|Jobs|GPUHours|SpendUSD)")
            finally:
                if pg is not None:
                    for u in made:
                        pg.drop(u)
    return 0


if __name__ == "__main__":
    sys.exit(main())
