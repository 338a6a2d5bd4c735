#!/usr/bin/env python3
"""The analysis store of the store suite (bench_store.py): 1,000,000 jobs with
their node summaries and GPU rows, for `analyze`, `digest`, `costs`, `gaps`, `sacct`.

    .venv/bin/python bench/run.py --only store [--jobs 1000000]

The store is written directly (executemany on SQLAlchemy's connection for
SQLite, COPY on PostgreSQL) into jobs, node_summaries, gpu_usage and node_gpus, after
open_engine has migrated the schema: going through simulate or ingest would
take far longer than the analysis for a million jobs. The shapes follow what
ingest and the Epilog's summaries store:

- cluster `bench`; End spread over 30 days from --t0; ids in End order;
- ~10% CPU-only jobs; GPU jobs of 1/2/4/8 GPUs (one node) on gres types
  h100 / a100 / l40s (partitions of the same names), AllocTRES as sacct
  prints it (billing,cpu,gres/gpu:TYPE,gres/gpu,mem,node);
- states ~74% COMPLETED, ~20% FAILED / TIMEOUT / CANCELLED by UID (a quarter
  of the cancelled ones never started), the rest OUT_OF_MEMORY, NODE_FAIL,
  PREEMPTED;
- recurring jobs: half the jobs belong to --keys (name, user, account) keys
  with their own GPU count, type and typical elapsed (runs vary ~10%, 5% of
  them twice as slow: RUNTIME_REGRESSION); the others have one-off names; 400 users, 40 accounts;
- one node summary per started GPU job (job_ref = the job's id), ~5% of GPU
  jobs without one (NO_SAMPLES); one gpu_usage row per GPU with samples,
  seconds, active_seconds, util_mean, mem_used_max_mib, mem_total_mib,
  power_mean_w, power_limit_w, power_frac_mean (absent on 20%: older
  samplers), sm/tensor/dram_active_mean on 70% of the h100 jobs (GPM);
  usage profiles per job: healthy, under-batched, input-bound (busy CPUs),
  small-on-a-big-card, some GPUs idle (active_seconds 0), all idle;
  utilization histograms and timelines are not written (analyze reads neither);
  exit_signal as ingest writes it (never NULL); restarts NULL (sacct 22.05
  prints none and the summaries' restart counts are not copied to the jobs);
- the node inventory (node_gpus) of the nodes named in the nodelists.

`generate` and `build` are also what tests/unit/test_analyze_parallel.py
makes its store with; `timed` measures a subprocess (wall, CPU, peak RSS).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")
DAY = 86400
CLUSTER = "bench"

# gres type: (NVML name, mem_total_mib, power_limit_w)
GPU = {
    "h100": ("NVIDIA H100 80GB HBM3", 81559.0, 700.0),
    "a100": ("NVIDIA A100-SXM4-80GB", 81920.0, 400.0),
    "l40s": ("NVIDIA L40S", 46068.0, 350.0),
}
TYPES = tuple(GPU)
NODES_PER_TYPE = 64  # 8 GPUs each
STATES = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")
STATE_P = (0.74, 0.11, 0.045, 0.045, 0.03, 0.015, 0.015)
EXIT = {"COMPLETED": "0:0", "FAILED": "1:0", "TIMEOUT": "0:15", "CANCELLED": "0:15", "OUT_OF_MEMORY": "0:125",
        "NODE_FAIL": "0:0", "PREEMPTED": "0:0"}
# exit_signal as ingest stores it: the job's signal, else its batch step's (0:15 for TIMEOUT and CANCELLED)
SIGNAL = {s: int(code.split(":")[1]) for s, code in EXIT.items()}
# usage profiles of GPU jobs
HEALTHY, UNDER, INPUT, SMALL, SOME_IDLE, ALL_IDLE = range(6)
PROFILE_P = (0.45, 0.15, 0.10, 0.10, 0.12, 0.08)

JOB_COLS = ("id", "cluster", "job_id_raw", "submit", "job_id", "name", "user", "uid", "account", "partition", "qos",
            "state", "state_by", "exit_code", "derived_exit_code", "eligible", "start", "end", "elapsed",
            "timelimit", "alloc_cpus", "alloc_nodes", "alloc_mem_mib", "alloc_gpus", "gpu_type", "alloc_tres",
            "nodelist", "work_dir", "comment", "exit_signal", "restarts", "total_cpu_s", "req_gpus")
SUM_COLS = ("id", "cluster", "job_id_raw", "restart_count", "node", "started_at", "job_ref", "user", "monitor",
            "interval", "started", "ended", "partial", "nvml_ok", "gpu_count", "doc")
GPU_COLS = ("id", "summary_id", "minor", "uuid", "name", "gpu_type", "mem_total_mib", "lost", "did_work", "samples",
            "seconds", "util_mean", "util_max", "active_seconds", "mem_used_max_mib", "power_mean_w", "energy_j",
            "power_limit_w", "power_frac_mean", "sm_active_mean", "tensor_active_mean", "dram_active_mean")
INV_COLS = ("cluster", "node", "minor", "gpu_type", "uuid", "name", "source", "seen_at")


def _none(a: np.ndarray) -> list:
    """A float array as a list with None for NaN (SQL NULL)."""
    return [None if v != v else v for v in a.tolist()]


def generate(n: int, t0: int, keys: int, seed: int = 11) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """The rows of each table: {table: (columns, [row tuples])}."""
    rng = np.random.default_rng(seed)
    end = np.sort(t0 + rng.integers(0, 30 * DAY, n))

    # recurring keys: their own user, GPU count, type and typical elapsed
    k_user = rng.integers(0, 400, keys)
    k_cpu = rng.random(keys) < 0.10
    k_ngpu = np.where(k_cpu, 0, rng.choice([1, 2, 4, 8], keys, p=[0.45, 0.25, 0.18, 0.12]))
    k_type = rng.integers(0, 3, keys)
    k_elapsed = np.exp(rng.uniform(np.log(300), np.log(6 * 3600), keys))
    recurring = rng.random(n) < 0.5
    key = rng.integers(0, keys, n)

    cpu_only = np.where(recurring, k_cpu[key], rng.random(n) < 0.10)
    ngpu = np.where(recurring, k_ngpu[key], np.where(cpu_only, 0, rng.choice([1, 2, 4, 8], n,
                                                                              p=[0.45, 0.25, 0.18, 0.12])))
    gt = np.where(recurring, k_type[key], rng.choice(3, n, p=[0.4, 0.35, 0.25]))
    user = np.where(recurring, k_user[key], rng.integers(0, 400, n))
    st = rng.choice(len(STATES), n, p=STATE_P)
    timelimit = rng.choice([3600, 4 * 3600, 12 * 3600, 24 * 3600, 48 * 3600], n)
    one_off = np.exp(rng.uniform(np.log(20), np.log(20 * 3600), n))
    run = k_elapsed[key] * np.exp(rng.normal(0, 0.1, n)) * np.where(rng.random(n) < 0.05, 2.0, 1.0)
    elapsed = np.where(recurring, run, one_off).astype(np.int64)
    timelimit = np.maximum(timelimit, elapsed + 60)
    timeout = st == STATES.index("TIMEOUT")
    elapsed = np.where(timeout, timelimit + rng.integers(0, 60, n), elapsed)
    failed_early = np.isin(st, [STATES.index(s) for s in ("FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")])
    elapsed = np.where(failed_early, (elapsed * rng.uniform(0.05, 1.0, n)).astype(np.int64), elapsed)
    never = (st == STATES.index("CANCELLED")) & (rng.random(n) < 0.25)
    elapsed = np.where(never, 0, elapsed)
    start = end - elapsed
    submit = start - rng.integers(0, 3600, n)
    cpus = np.where(cpu_only, rng.choice([1, 2, 4, 8, 16, 32], n), ngpu * 8)
    mem_mib = np.where(cpu_only, cpus * 4096, ngpu * 65536)
    node_no = rng.integers(1, NODES_PER_TYPE + 1, n)
    minor0 = np.where(ngpu == 8, 0, rng.integers(0, 8, n) // np.maximum(ngpu, 1) * np.maximum(ngpu, 1))
    profile = rng.choice(len(PROFILE_P), n, p=PROFILE_P)
    cpu_eff = np.where(profile == INPUT, rng.uniform(0.88, 0.99, n), rng.uniform(0.05, 0.6, n))
    total_cpu = cpu_eff * elapsed * cpus

    names = [f"train-{k % 97}-{k:04d}" if r else f"job-{i}"
             for i, (r, k) in enumerate(zip(recurring.tolist(), key.tolist(), strict=True))]
    jobs = []
    e_l, s_l, sub_l, el_l, tl_l = end.tolist(), start.tolist(), submit.tolist(), elapsed.tolist(), timelimit.tolist()
    ng_l, gt_l, u_l, st_l, cpu_l, mem_l = (ngpu.tolist(), gt.tolist(), user.tolist(), st.tolist(), cpus.tolist(),
                                           mem_mib.tolist())
    node_l, tc_l, never_l = node_no.tolist(), total_cpu.tolist(), never.tolist()
    for i in range(n):
        g, tname, state = ng_l[i], TYPES[gt_l[i]], STATES[st_l[i]]
        u = f"user{u_l[i]:03d}"
        raw = 1_000_000 + i
        if g:
            node = f"{tname}-n{node_l[i]:03d}"
            tres = f"billing={g},cpu={cpu_l[i]},gres/gpu:{tname}={g},gres/gpu={g},mem={mem_l[i] // 1024}G,node=1"
        else:
            node = f"cpu-n{node_l[i]:03d}"
            tres = f"billing={cpu_l[i]},cpu={cpu_l[i]},mem={mem_l[i] // 1024}G,node=1"
        st_by = 10_000 + u_l[i] if state == "CANCELLED" else None
        jobs.append((i + 1, CLUSTER, raw, sub_l[i], str(raw), names[i], u, 10_000 + u_l[i],
                     f"acct{u_l[i] % 40:02d}", tname if g else "cpu", "normal",
                     f"CANCELLED by {st_by}" if st_by else state, st_by, EXIT[state], "0:0", sub_l[i],
                     None if never_l[i] else s_l[i], e_l[i], el_l[i], tl_l[i], cpu_l[i], 1, mem_l[i], g,
                     tname if g else None, tres, node, f"/home/{u}/work", "", SIGNAL[state], None,
                     float(tc_l[i]), g))

    # node summaries: started GPU jobs, ~5% without one
    has = (ngpu > 0) & ~never & (elapsed > 0) & (rng.random(n) >= 0.05)
    j_ix = np.flatnonzero(has)
    m = len(j_ix)
    sum_ids = np.arange(1, m + 1)
    doc = json.dumps({"format": "piqc-summary/1", "cluster": CLUSTER, "bench": True})
    summaries = []
    for sid, i in zip(sum_ids.tolist(), j_ix.tolist(), strict=True):
        job = jobs[i]
        summaries.append((sid, CLUSTER, job[2], 0, job[26], job[16], job[0], job[6], "on", 10.0, float(job[16]),
                          float(job[17]), False, True, job[23], doc))

    # one row per GPU of each summary
    per = ngpu[j_ix]
    g_job = np.repeat(j_ix, per)
    g_sum = np.repeat(sum_ids, per)
    starts = np.repeat(np.cumsum(per) - per, per)
    g_minor = np.arange(len(g_job)) - starts + np.repeat(minor0[j_ix], per)
    q = len(g_job)
    g_type = gt[g_job]
    prof = profile[g_job]
    secs = np.maximum(elapsed[g_job] - rng.uniform(0, 2, q), 1.0)
    samples = np.maximum((secs // 10).astype(np.int64), 1)
    # idle GPUs: all of an ALL_IDLE job, the upper half of a SOME_IDLE one (a 1-GPU one: its GPU)
    local = g_minor - np.repeat(minor0[j_ix], per)
    idle = (prof == ALL_IDLE) | ((prof == SOME_IDLE) & (local >= np.repeat(per, per) // 2))
    lo_hi = {HEALTHY: (70, 99), UNDER: (55, 95), INPUT: (15, 45), SMALL: (20, 45), SOME_IDLE: (70, 99),
             ALL_IDLE: (0, 0)}
    util = np.zeros(q)
    for p, (a, b) in lo_hi.items():
        sel = prof == p
        util[sel] = rng.uniform(a, b, sel.sum())
    util[idle] = rng.uniform(0, 1.5, idle.sum())
    share = np.where(idle, 0.0, np.where(prof == INPUT, rng.uniform(0.3, 0.6, q), rng.uniform(0.85, 1.0, q)))
    active = np.where(idle, 0.0, share * secs)
    total = np.array([GPU[t][1] for t in TYPES])[g_type]
    plim = np.array([GPU[t][2] for t in TYPES])[g_type]
    mem_frac = np.where(prof == SMALL, rng.uniform(0.05, 0.2, q),
                        np.where(prof == UNDER, rng.uniform(0.1, 0.45, q), rng.uniform(0.4, 0.95, q)))
    mem_used = np.where(idle, rng.uniform(0, 600, q), mem_frac * total)
    pfrac = np.where(idle, rng.uniform(0.08, 0.12, q),
                     np.where(prof == UNDER, rng.uniform(0.2, 0.45, q),
                              np.where(prof == HEALTHY, rng.uniform(0.55, 0.95, q), rng.uniform(0.25, 0.6, q))))
    pmean = pfrac * plim
    pfrac_col = np.where(rng.random(q) < 0.8, pfrac, np.nan)
    gpm = (g_type == 0) & (rng.random(n) < 0.7)[g_job]
    sm = np.where(idle, 0.0, np.where(prof == HEALTHY, rng.uniform(0.55, 0.9, q),
                                      np.where(prof == SMALL, rng.uniform(0.1, 0.3, q), rng.uniform(0.15, 0.45, q))))
    tensor = np.where(prof == SMALL, rng.uniform(0.02, 0.1, q), sm * rng.uniform(0.2, 0.7, q))
    dram = np.where(prof == SMALL, rng.uniform(0.05, 0.15, q), sm * rng.uniform(0.3, 0.8, q))
    sm, tensor, dram = (np.where(gpm, x, np.nan) for x in (sm, tensor, dram))
    did = (share >= 0.05)
    gpus = list(zip(range(1, q + 1), g_sum.tolist(), g_minor.tolist(),
                    [f"GPU-{s:08x}-{mi}" for s, mi in zip(g_sum.tolist(), g_minor.tolist(), strict=True)],
                    [GPU[TYPES[t]][0] for t in g_type.tolist()], [TYPES[t] for t in g_type.tolist()],
                    total.tolist(), [False] * q, did.tolist(), samples.tolist(), secs.tolist(), util.tolist(),
                    np.minimum(util * 1.2 + 5, 100).tolist(), active.tolist(), mem_used.tolist(), pmean.tolist(),
                    (pmean * secs).tolist(), plim.tolist(), _none(pfrac_col), _none(sm), _none(tensor),
                    _none(dram), strict=True))

    inventory = [(CLUSTER, f"{t}-n{k:03d}", mi, t, f"GPU-{t}-{k:03d}-{mi}", GPU[t][0], "scontrol", t0)
                 for t in TYPES for k in range(1, NODES_PER_TYPE + 1) for mi in range(8)]
    return {"jobs": (JOB_COLS, jobs), "node_summaries": (SUM_COLS, summaries), "gpu_usage": (GPU_COLS, gpus),
            "node_gpus": (INV_COLS, inventory)}


def build(url: str, tables: dict[str, tuple[tuple[str, ...], list[tuple]]]) -> None:
    sys.path.insert(0, str(REPO))
    from piqc_slurm.store.db import open_engine

    engine = open_engine(url)  # migrates the schema to head
    try:
        with engine.begin() as conn:
            if conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar():
                raise SystemExit(f"{url.split('@')[-1]}: the store is not empty (the bench writes its own ids)")
            raw = conn.connection.driver_connection
            for table, (cols, rows) in tables.items():
                names = ", ".join(f'"{c}"' for c in cols)
                if engine.dialect.name == "postgresql":
                    with raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                        for r in rows:
                            copy.write_row(r)
                else:
                    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608
                    for i in range(0, len(rows), 100_000):
                        conn.exec_driver_sql(sql, rows[i:i + 100_000])
            if engine.dialect.name == "postgresql":
                for table in ("jobs", "node_summaries", "gpu_usage"):
                    conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                                         f"(SELECT max(id) FROM {table}))")
        if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int | None]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one run."""
    tf = None
    if os.path.exists("/usr/bin/time"):
        tf = tempfile.NamedTemporaryFile(prefix="piqc-bench-rss-", delete=False)
        tf.close()
        argv = ["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name, *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr}")
        if tf is not None:
            user, system, rss = Path(tf.name).read_text().split()[-3:]
            return dt, float(user) + float(system), int(rss)
    finally:
        if tf is not None:
            os.unlink(tf.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    # the children's high-water mark: it tells this run's peak only where it grew
    return dt, cpu, after.ru_maxrss if after.ru_maxrss > before.ru_maxrss else None


def findings_by_code(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT code, count(*) FROM findings GROUP BY code ORDER BY code")).all())
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    from run import main

    sys.exit(main(["--only", "store", *sys.argv[1:]]))
