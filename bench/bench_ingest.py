#!/usr/bin/env python3
"""Ingest and query at scale: 1,000,000 generated sacct rows into SQLite and
PostgreSQL, then `piqc-slurm sacct -u USER -S DAY -E DAY` on that store.

    .venv/bin/python bench/bench_ingest.py [--jobs 1000000] [--steps] [--backends sqlite,postgresql]

Rows are made from the shapes of the real sacct output recorded on the test
cluster (tests/fixtures/sacct/22.05.8/*.ingest.txt: the exact form ingest
asks for, epoch times and a \\x1f delimiter): each generated job copies one
recorded allocation line (completed, failed 3:0, cancelled, timeout, array
task, exclusive 8-GPU, the name with `|` and `<b>`) with a new job id, user
(500 users), account, GPU count and times spread over 30 days. By default
one row per job (1M rows = 1M jobs); --steps adds each shape's .batch and
.extern lines (3 rows per job).

Figures: wall time of `piqc-slurm ingest --sacct-file` (a subprocess, so
interpreter start is included), and the median of 5 runs of the query.
PostgreSQL comes from docker-slurm/postgres.sh (run as root).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "sacct" / "22.05.8"
PY = str(REPO / ".venv" / "bin" / "python")
D = "\x1f"
T0 = 1_793_000_000  # 2026-10-26


def shapes() -> tuple[str, list[list[list[str]]]]:
    """(header, [job: [allocation fields, step fields...]]) from the recorded fixtures."""
    header = ""
    out = []
    for f in sorted(FIX.glob("*.ingest.txt")):
        lines = [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
        header = lines[0]
        job: list[list[str]] = []
        for ln in lines[1:]:
            fields = ln.split(D)
            if "." not in fields[0]:
                if job:
                    out.append(job)
                job = [fields]
            elif job:
                job.append(fields)
        if job:
            out.append(job)
    return header, out


def generate(path: Path, n: int, steps: bool, seed: int = 7) -> int:
    header, jobs = shapes()
    names = header.split(D)
    ix = {name: i for i, name in enumerate(names)}
    rnd = random.Random(seed)
    rows = 0
    with open(path, "w") as fh:
        fh.write(header + "\n")
        for k in range(n):
            shape = jobs[k % len(jobs)]
            raw = 1_000_000 + k
            submit = T0 + (k * 30 * 86400) // n
            start = submit + rnd.randint(0, 600)
            elapsed = rnd.randint(60, 8 * 3600)
            end = start + elapsed
            ngpu = rnd.choice((1, 1, 2, 4, 8))
            user = f"user{rnd.randint(0, 499):03d}"
            for j, src in enumerate(shape if steps else shape[:1]):
                f = list(src)
                suffix = src[ix["JobID"]].partition(".")[2]
                jid = str(raw) + (f".{suffix}" if suffix else "")
                f[ix["JobID"]] = jid
                f[ix["JobIDRaw"]] = jid
                if j == 0:
                    f[ix["User"]] = user
                    f[ix["Account"]] = f"acct{int(user[4:]) % 40:02d}"
                    f[ix["AllocTRES"]] = f"billing={ngpu},cpu={ngpu * 4},gres/gpu:h100={ngpu},gres/gpu={ngpu}," \
                                         f"mem={ngpu * 16}G,node=1"
                for name, val in (("Submit", submit), ("Eligible", submit), ("Start", start), ("End", end)):
                    if f[ix[name]] not in ("", "None", "Unknown"):
                        f[ix[name]] = str(val)
                f[ix["ElapsedRaw"]] = str(elapsed)
                fh.write(D.join(f) + "\n")
                rows += 1
    return rows


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr}")
    return dt, r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--steps", action="store_true", help="also the .batch/.extern rows (3 per job)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    env = dict(os.environ, TZ="UTC")
    with tempfile.TemporaryDirectory(prefix="piqc-bench-ingest-") as d:
        tmp = Path(d)
        src = tmp / "sacct.txt"
        t0 = time.perf_counter()
        rows = generate(src, args.jobs, args.steps)
        print(f"generated {rows:,} sacct rows for {args.jobs:,} jobs ({src.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f}s")
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/bench.db"
                cleanup = None
            else:
                sys.path.insert(0, str(REPO / "tests"))
                from pg import create_database, drop_database

                url = create_database("piqc_bench")
                cleanup = (drop_database, url)
            try:
                dt, _ = timed([PY, "-m", "piqc_slurm", "--db", url, "ingest", "-q", "--create-store",
                               "--sacct-file", str(src), "--tz", "UTC"], env)
                print(f"{backend:>10}: ingest {rows:,} rows: {dt:.1f}s ({rows / dt:,.0f} rows/s)")
                day = time.strftime("%Y-%m-%d", time.gmtime(T0 + 10 * 86400))
                nxt = time.strftime("%Y-%m-%d", time.gmtime(T0 + 11 * 86400))
                q = [str(REPO / ".venv/bin/piqc-slurm"), "--db", url, "sacct", "-u", "user042", "-S", day, "-E", nxt,
                     "-P", "-o", "JobID,User,State,Elapsed,AllocGPUs,CostUSD"]
                times, out = [], ""
                for _ in range(5):
                    dt, out = timed(q, env)
                    times.append(dt)
                print(f"{backend:>10}: `piqc-slurm sacct -u user042 -S {day} -E {nxt}`: median "
                      f"{statistics.median(times) * 1000:.0f} ms over 5 runs, {len(out.splitlines()) - 1} jobs")
                dt, _ = timed([PY, "-m", "piqc_slurm", "--db", url, "ingest", "-q", "--sacct-file", str(src),
                               "--tz", "UTC"], env)
                print(f"{backend:>10}: ingest again (all updates): {dt:.1f}s")
            finally:
                if cleanup:
                    cleanup[0](cleanup[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
