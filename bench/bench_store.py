#!/usr/bin/env python3
"""Store at scale: 1M generated jobs with GPU summaries, on SQLite and PostgreSQL.

    .venv/bin/python bench/run.py --only store [--jobs 1000000] [--quick] [--no-pg]

Three stores per backend, each made fresh (PostgreSQL: a new database on
docker-slurm/postgres.sh's server, dropped after):

1. ingest: --jobs sacct rows (bench_ingest.py: the recorded fixtures' shapes,
   one allocation row per job) through `piqc-slurm ingest --sacct-file`, then
   again (every row an update). Target <= 60 s.
2. the analysis store: --jobs jobs with their node summaries and GPU rows
   (bench_analyze.py: written directly, shaped as ingest and the Epilog's
   summaries store them), then `analyze` over its 30 days (target <= 60 s),
   `digest` of 7 of them (target <= 30 s), `costs --by account` over the 30
   days, `gaps` over 48 hours (the nightly's window), and three `sacct`
   queries, median of 5 (target <= 0.5 s each, interpreter start included):
   one user one day, one account one month, `-j` one job.
3. the summaries store: --summaries jobs (quick 200, else 2,000) with a node
   summary and a 60 s timeline each, made from the recorded summary
   tests/fixtures/summaries/4gpu-2idle.* and spooled as the Epilog spools
   them, through `piqc-slurm ingest --sacct-file --spool` (summaries per
   second), then the store's bytes per GPU-hour (every table and index; SQLite
   after VACUUM, PostgreSQL pg_total_relation_size after VACUUM): target
   <= 500 B, beside a Prometheus-style 30 s scrape of the same three metrics
   (util, memory, power) at ~1.5 B/sample: 3 x 120 x 1.5 = 540 B/GPU-hour.

Times are wall clock of a `piqc-slurm` subprocess, interpreter start included,
with CPU seconds (user + system) and peak RSS in the detail. Run as root
(PostgreSQL comes from postgres.sh).
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench_analyze  # noqa: E402
import bench_ingest  # noqa: E402
from common import PIQC, REPO, Ctx, env_utc, pg_database, postgres_available, repeat  # noqa: E402

DAY = 86400
T0 = bench_ingest.T0
SUMMARY_FIXTURE = REPO / "tests" / "fixtures" / "summaries" / "4gpu-2idle.summary.json"
PROM_BYTES_PER_SAMPLE = 1.5
PROM_SERIES = 3        # util, memory used, power: the timeline's three metrics
PROM_SCRAPE_S = 30


def fmt_t(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def backends(ctx: Ctx) -> list[str]:
    if not ctx.pg:
        return ["sqlite"]
    why = postgres_available()
    if why:
        ctx.note(f"no PostgreSQL ({why}): SQLite only")
        return ["sqlite"]
    return ["sqlite", "postgresql"]


@contextlib.contextmanager
def fresh_store(backend: str, tmp: Path, name: str):
    if backend == "sqlite":
        db = tmp / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{db}"
    else:
        with pg_database(f"piqc_bench_{name}") as url:
            yield url


def piqc(url: str, *args: str) -> list[str]:
    return [PIQC, "--db", url, *args]


# -- 1. ingest -------------------------------------------------------------------------------------------

def ingest(ctx: Ctx, tmp: Path, jobs: int, names: list[str]) -> None:
    src = tmp / "sacct.txt"
    t = time.perf_counter()
    rows = bench_ingest.generate(src, jobs, steps=False)
    ctx.note(f"generated {rows:,} sacct rows ({src.stat().st_size / 2**20:.0f} MiB) in "
             f"{time.perf_counter() - t:.0f} s")
    for backend in names:
        with fresh_store(backend, tmp, "ingest") as url:
            argv = piqc(url, "ingest", "-q", "--create-store", "--sacct-file", str(src), "--tz", "UTC")
            secs, cpu, rss = bench_analyze.timed(argv, env_utc())
            ctx.add(f"ingest.{backend}", f"ingest {rows:,} sacct rows into a new {backend} store", secs, "s",
                    target=60.0, gate=True, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024, rows_per_s=rows / secs)
            argv = piqc(url, "ingest", "-q", "--sacct-file", str(src), "--tz", "UTC")
            secs, cpu, rss = bench_analyze.timed(argv, env_utc())
            ctx.add(f"ingest_again.{backend}", f"ingest the same {rows:,} rows again (all updates), {backend}",
                    secs, "s", target=60.0, gate=True, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024)
    src.unlink()


# -- 2. analysis store: analyze, digest, costs, gaps, sacct ----------------------------------------------

def analysis(ctx: Ctx, tmp: Path, jobs: int, names: list[str]) -> None:
    t0 = calendar.timegm(time.strptime("2026-11-01", "%Y-%m-%d"))
    t = time.perf_counter()
    tables = bench_analyze.generate(jobs, t0, keys=max(60, min(4000, jobs // 250)))
    ctx.note(f"generated {len(tables['jobs'][1]):,} jobs, {len(tables['node_summaries'][1]):,} summaries, "
             f"{len(tables['gpu_usage'][1]):,} GPU rows in {time.perf_counter() - t:.0f} s")
    pick = tables["jobs"][1][len(tables["jobs"][1]) // 2]
    one_job, one_user, one_account = str(pick[4]), pick[6], pick[8]
    day = t0 + 10 * DAY
    env = env_utc()
    with contextlib.ExitStack() as stack:
        urls = {}
        for backend in names:  # every store first, then the rows go (the analyses get the memory)
            url = stack.enter_context(fresh_store(backend, tmp, "analysis"))
            t = time.perf_counter()
            bench_analyze.build(url, tables)
            ctx.note(f"{backend}: analysis store written in {time.perf_counter() - t:.0f} s")
            urls[backend] = url
        del tables
        for backend, url in urls.items():
            secs, cpu, rss = bench_analyze.timed(piqc(url, "analyze", "-S", fmt_t(t0), "-E", fmt_t(t0 + 30 * DAY),
                                                      "-q"), env)
            findings = sum(bench_analyze.findings_by_code(url).values())
            ctx.add(f"analyze.{backend}", f"analyze 30 days, {jobs:,} jobs, {backend}", secs, "s", target=60.0,
                    gate=True, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024, findings=findings)
            secs, cpu, rss = bench_analyze.timed(piqc(url, "analyze", "-S", fmt_t(t0), "-E", fmt_t(t0 + 30 * DAY),
                                                      "-q"), env)
            ctx.add(f"analyze_again.{backend}", f"analyze the same 30 days again (findings replaced), {backend}",
                    secs, "s", target=60.0, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024)
            page = tmp / f"digest-{backend}.html"
            secs, cpu, rss = bench_analyze.timed(piqc(url, "digest", "-S", fmt_t(t0 + 7 * DAY), "-E",
                                                      fmt_t(t0 + 14 * DAY), "-o", str(page), "-q"), env)
            ctx.add(f"digest.{backend}", f"digest of 7 days (~{jobs * 7 // 30:,} jobs), {backend}", secs, "s",
                    target=30.0, gate=True, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024, bytes=page.stat().st_size)
            secs, cpu, rss = bench_analyze.timed(piqc(url, "costs", "-S", fmt_t(t0), "-E", fmt_t(t0 + 30 * DAY),
                                                      "--by", "account", "-P"), env)
            ctx.add(f"costs.{backend}", f"costs --by account over 30 days, {backend}", secs, "s", gate=True,
                    cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024)
            secs, cpu, rss = bench_analyze.timed(piqc(url, "gaps", "-S", fmt_t(t0 + 10 * DAY), "-E",
                                                      fmt_t(t0 + 12 * DAY), "--no-events", "-P", "-n"), env)
            ctx.add(f"gaps.{backend}", f"gaps over 48 hours (the nightly's window), 1,536 GPUs, {backend}", secs,
                    "s", gate=True, cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024)
            queries = (
                ("user_day", f"sacct -u {one_user} -S DAY -E DAY+1",
                 ["sacct", "-u", one_user, "-S", fmt_t(day), "-E", fmt_t(day + DAY), "-o",
                  "JobID,User,State,Elapsed,AllocGPUs,GPUUtilAvg,CostUSD"]),
                ("account_month", f"sacct -A {one_account} -S T0 -E T0+30d -X",
                 ["sacct", "-A", one_account, "-S", fmt_t(t0), "-E", fmt_t(t0 + 30 * DAY), "-X", "-o",
                  "JobID,User,State,Elapsed,AllocGPUs,GPUUtilAvg,CostUSD"]),
                ("job", "sacct -j JOB", ["sacct", "-j", one_job, "-o",
                                        "JobID,User,State,Elapsed,AllocGPUs,GPUUtilAvg,CostUSD,Findings"]),
            )
            admin = tmp / "admin.toml"  # sacct -u/-A of other users: the bench runs as an admin
            admin.write_text(f"[access]\nadmin_users = [{json.dumps(_me())}]\n")
            for key, label, argv in queries:
                times, out = repeat([PIQC, "--config", str(admin), "--db", url, *argv], env, 5)
                lines = max(len(out.splitlines()) - 2, 0)
                ctx.add(f"sacct.{key}.{backend}", f"piqc-slurm {label} ({lines:,} line{'' if lines == 1 else 's'}), "
                        f"{backend}: median of 5",
                        statistics.median(times), "s", target=0.5, gate=True, min=min(times), max=max(times))


def _me() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


# -- 3. summaries: ingest with timelines, bytes per GPU-hour ---------------------------------------------

def spool_summaries(sacct_file: Path, spool: Path) -> tuple[int, float, int]:
    """Summary + 60 s timeline files for every started job of `sacct_file`, shaped as the recorded
    summary; returns (summaries, GPU-hours, timeline bins)."""
    fixture = json.loads(SUMMARY_FIXTURE.read_text())
    worked, idle = fixture["devices"][0], fixture["devices"][2]
    lines = sacct_file.read_text().splitlines()
    names = lines[0].split(bench_ingest.D)
    ix = {n: i for i, n in enumerate(names)}
    n = bins_total = 0
    gpu_hours = 0.0
    for line in lines[1:]:
        f = line.split(bench_ingest.D)
        start, end = f[ix["Start"]], f[ix["End"]]
        if not start.isdigit() or not end.isdigit() or int(end) <= int(start):
            continue
        start_i, end_i = int(start), int(end)
        tres = dict(kv.split("=", 1) for kv in f[ix["AllocTRES"]].split(",") if "=" in kv)
        ngpu = int(tres.get("gres/gpu", 0))
        if not ngpu:
            continue
        node = f[ix["NodeList"]] or "vm"
        doc = copy.deepcopy(fixture)
        secs = end_i - start_i
        devices = []
        for m in range(ngpu):
            d = copy.deepcopy(worked if m % 4 < 2 else idle)
            d.update(minor=m, index=m, uuid=f"GPU-{node}-{m}", seconds=float(secs), samples=secs)
            devices.append(d)
        doc.update(cluster=f[ix["Cluster"]], job_id=int(f[ix["JobIDRaw"]]), user=f[ix["User"]],
                   account=f[ix["Account"]], partition=f[ix["Partition"]], node=node, started=float(start_i),
                   ended=float(end_i), gpus=list(range(ngpu)), devices=devices)
        nb = math.ceil(secs / 60)
        doc["timeline_bins"] = nb * ngpu
        key = f"{doc['cluster']}.{doc['job_id']}.0.{node}.{start_i}"
        d = spool / node
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{key}.timeline.jsonl", "w") as fh:
            for b in range(nb):
                t = start_i - start_i % 60 + 60 * b
                for m in range(ngpu):
                    w = m % 4 < 2
                    fh.write(json.dumps({"t": t, "gpu": m, "util": round(70 + (b * 7 + m) % 25, 1) if w else 0.0,
                                         "mem_mib": 40960 if w else 0, "power_w": 550.7 if w else 60.0},
                                        separators=(",", ":")) + "\n")
        (d / f"{key}.summary.json").write_text(json.dumps(doc, separators=(",", ":")))
        n += 1
        bins_total += nb * ngpu
        gpu_hours += secs * ngpu / 3600
    return n, gpu_hours, bins_total


def store_bytes(url: str) -> dict[str, int]:
    """Bytes per table, its indexes included, after VACUUM."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        with sqlite3.connect(path) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c = sqlite3.connect(path, isolation_level=None)
        try:
            c.execute("VACUUM")
            idx = dict(c.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
            per: dict[str, int] = {}
            try:
                for name, size in c.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                    per[idx.get(name, name)] = per.get(idx.get(name, name), 0) + size
            except sqlite3.OperationalError:  # no dbstat in this SQLite: the file as a whole
                per = {"(file)": os.path.getsize(path)}
            return per
        finally:
            c.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
            rows = conn.execute(text("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                                     "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                     "WHERE n.nspname = 'public' AND c.relkind = 'r'")).all()
        return {name: int(size) for name, size in rows}
    finally:
        engine.dispose()


def summaries(ctx: Ctx, tmp: Path, count: int, names: list[str]) -> None:
    src = tmp / "sacct-summaries.txt"
    bench_ingest.generate(src, count, steps=False, seed=11)
    spool = tmp / "spool"
    t = time.perf_counter()
    n, gpu_hours, bins = spool_summaries(src, spool)
    ctx.note(f"spooled {n:,} summaries, {bins:,} timeline bins ({gpu_hours:,.0f} GPU-hours) in "
             f"{time.perf_counter() - t:.0f} s")
    prom = PROM_SERIES * 3600 / PROM_SCRAPE_S * PROM_BYTES_PER_SAMPLE
    ctx.add("prometheus_bytes_per_gpu_hour", f"Prometheus-style scrape of the same {PROM_SERIES} metrics every "
            f"{PROM_SCRAPE_S} s at {PROM_BYTES_PER_SAMPLE} B/sample (reference)", prom, "B")
    for backend in names:
        with fresh_store(backend, tmp, "summaries") as url:
            # the spool is read, never changed, by ingest --spool: the same files serve every backend
            argv = piqc(url, "ingest", "-q", "--create-store", "--sacct-file", str(src), "--tz", "UTC",
                        "--spool", str(spool))
            secs, cpu, rss = bench_analyze.timed(argv, env_utc())
            ctx.add(f"ingest_summaries.{backend}", f"ingest {n:,} jobs with summaries and 60 s timelines "
                    f"({bins:,} bins), {backend}: summaries/s", n / secs, "1/s", gate=False, seconds=secs,
                    cpu_s=cpu, peak_rss_mib=(rss or 0) / 1024)
            ctx.add(f"ingest_summaries_time.{backend}", f"ingest {n:,} jobs with summaries and timelines, {backend}",
                    secs, "s", gate=True)
            per = store_bytes(url)
            total = sum(per.values())
            timeline = per.get("timeline", 0)
            ctx.add(f"bytes_per_gpu_hour.{backend}", f"store bytes per GPU-hour, 60 s timeline, every table "
                    f"and index, {backend}", total / gpu_hours, "B", target=500.0, ratio=total / gpu_hours / prom,
                    ratio_to="Prometheus 30 s scrape", gpu_hours=gpu_hours, total_bytes=total,
                    timeline_bytes=timeline, tables={k: v for k, v in sorted(per.items()) if v})
            ctx.add(f"timeline_bytes_per_gpu_hour.{backend}", f"of which the timeline table (packed: a row per "
                    f"summary and GPU) and its index, {backend}", timeline / gpu_hours, "B",
                    ratio=timeline / gpu_hours / prom, ratio_to="Prometheus 30 s scrape")


def suite(ctx: Ctx) -> None:
    jobs = ctx.jobs or (20_000 if ctx.quick else 1_000_000)
    names = backends(ctx)
    with tempfile.TemporaryDirectory(prefix="piqc-bench-store-") as d:
        tmp = Path(d)
        ingest(ctx, tmp, jobs, names)
        analysis(ctx, tmp, jobs, names)
        summaries(ctx, tmp, 200 if ctx.quick else 2_000, names)


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--only", "store", *sys.argv[1:]]))
