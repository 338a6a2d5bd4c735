#!/usr/bin/env python3
"""The ingest part of the store suite (bench_store.py): 1,000,000 generated sacct
rows for `piqc-slurm ingest --sacct-file`, on SQLite and PostgreSQL.

    .venv/bin/python bench/run.py --only store [--jobs 1000000]

Rows are made from the shapes of the real sacct output recorded on the test
cluster (tests/fixtures/sacct/22.05.8/*.ingest.txt: the exact form ingest
asks for, epoch times and a \\x1f delimiter): each generated job copies one
recorded allocation line (completed, failed 3:0, cancelled, timeout, array
task, exclusive 8-GPU, the name with `|` and `<b>`) with a new job id, user
(500 users), account, GPU count and times spread over 30 days. By default
one row per job (1M rows = 1M jobs); steps=True adds each shape's .batch and
.extern lines (3 rows per job).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "sacct" / "22.05.8"
PY = str(REPO / ".venv" / "bin" / "python")
D = "\x1f"
T0 = 1_793_000_000  # 2026-10-26


def shapes() -> tuple[str, list[list[list[str]]]]:
    """(header, [job: [allocation fields, step fields...]]) from the recorded fixtures, every file's
    rows put in the order of the widest header (fixtures recorded before ingest asked for TotalCPU
    lack it: 00:00:00 there, what sacct prints for a job with no CPU time)."""
    files = []
    for f in sorted(FIX.glob("*.ingest.txt")):
        lines = [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
        files.append((lines[0].split(D), lines[1:]))
    names = max((h for h, _ in files), key=len)
    out = []
    for own, rows in files:
        pos = {n: i for i, n in enumerate(own)}
        missing = set(names) - set(own)
        if missing - {"TotalCPU"}:
            raise RuntimeError(f"a fixture lacks {sorted(missing)}: re-record it (tests/fixtures/sacct/capture.py)")
        job: list[list[str]] = []
        for ln in rows:
            raw = ln.split(D)
            fields = [raw[pos[n]] if n in pos else "00:00:00" for n in names]
            if "." not in fields[0]:
                if job:
                    out.append(job)
                job = [fields]
            elif job:
                job.append(fields)
        if job:
            out.append(job)
    return D.join(names), out


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


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    from run import main

    sys.exit(main(["--only", "store", *sys.argv[1:]]))
