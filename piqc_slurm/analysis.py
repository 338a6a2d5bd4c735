"""`piqc-slurm analyze`: load a window's jobs in bulk, judge them with
analyze.rules (vectorised, pandas), explain each finding (analyze.explain), and
write the findings in bulk. Idempotent: the window's jobs' findings are
replaced, and the window is recorded as judged (analysis_runs), so a job
there with no finding is known to be clean.

A job is in the window when its End is in [since, until) (as `costs`).
Recurring jobs' earlier completed runs are read from `analyze.history_days`
before the window, for RUNTIME_REGRESSION.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from piqc_slurm.analyze.explain import findings as explain
from piqc_slurm.analyze.rules import NAN, Thresholds, judge
from piqc_slurm.usage.cost import Part, job_cost, parts_of
from piqc_slurm.usage.outcome import failed as is_failed
from piqc_slurm.usage.outcome import side as failed_side
from piqc_slurm.usage.prices import PriceBook
from piqc_slurm.usage.rules import did_work_vector

_JOBS_SQL = ('SELECT j."id", j."cluster", j."name", j."user", j."account", j."partition", j."state", '
             'j."exit_code", j."derived_exit_code", j."exit_signal", j."restarts", j."start", j."end", j."elapsed", '
             'j."alloc_gpus", j."gpu_type", j."alloc_tres", j."alloc_cpus", j."total_cpu_s", j."nodelist" '
             'FROM jobs j WHERE j."end" IS NOT NULL AND j."end" >= :since AND j."end" < :until')
_JOB_COLS = ("id", "cluster", "name", "user", "account", "partition", "state", "exit_code", "derived_exit_code",
             "exit_signal", "restarts", "start", "end", "elapsed", "alloc_gpus", "gpu_type", "alloc_tres",
             "alloc_cpus", "total_cpu_s", "nodelist")
_GPU_SQL = ('SELECT s."job_ref", u."samples", u."seconds", u."active_seconds", u."util_mean", u."mem_used_max_mib", '
            'u."mem_total_mib", u."power_mean_w", u."power_limit_w", u."power_frac_mean", u."sm_active_mean", '
            'u."tensor_active_mean", u."dram_active_mean", u."name" FROM node_summaries s JOIN gpu_usage u ON '
            'u."summary_id" = s."id" JOIN jobs j ON j."id" = s."job_ref" '
            'WHERE j."end" IS NOT NULL AND j."end" >= :since AND j."end" < :until')
_GPU_COLS = ("job_ref", "samples", "seconds", "active_seconds", "util_mean", "mem_used_max_mib", "mem_total_mib",
             "power_mean_w", "power_limit_w", "power_frac_mean", "sm_active_mean", "tensor_active_mean",
             "dram_active_mean", "name")
_INVENTORY_SQL = 'SELECT DISTINCT "cluster", "gpu_type" FROM node_gpus WHERE "gpu_type" IS NOT NULL'


class AnalyzeResult:
    __slots__ = ("jobs", "findings", "by_code", "waste_usd", "coverage", "seconds")

    def __init__(self) -> None:
        self.jobs = self.findings = 0
        self.by_code: dict[str, tuple[int, float]] = {}
        self.waste_usd = 0.0
        self.coverage: dict[str, tuple[int, int]] = {}   # node: (GPU jobs sampled, GPU jobs)
        self.seconds = 0.0


_TEXT = ("cluster", "name", "user", "account", "partition", "state", "exit_code", "derived_exit_code", "gpu_type",
         "alloc_tres", "nodelist")


def _frame(reader, sql: str, cols: tuple[str, ...], params: dict):
    import pandas as pd

    rows: list[tuple] = []
    for batch in reader.batches(sql, params, 50_000):
        rows.extend(batch)
    df = pd.DataFrame.from_records(rows, columns=list(cols))
    for c in _TEXT:  # text columns keep None (not NaN) for a missing value: the pricing code reads them
        if c in df.columns:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


_CHUNK = 10_000


def _records(df) -> list[dict[str, Any]]:
    """df.to_dict("records"): the same dicts of the same values, made column by column. A numeric
    column's values are its tolist() (the Python scalars iterating it yields); an object or extension
    column's are boxed as to_dict boxes them (maybe_box_native), except str and None, which that
    leaves as they are. to_dict boxes every value of those columns one call at a time: ~3x slower."""
    from pandas.api.extensions import ExtensionDtype
    from pandas.core.dtypes.cast import maybe_box_native

    cols = []
    for k in range(df.shape[1]):
        s = df.iloc[:, k]
        if s.dtype == object or isinstance(s.dtype, ExtensionDtype):
            vals = s.to_numpy(dtype=object).tolist()
            vals = [x if x is None or type(x) is str else maybe_box_native(x) for x in vals]
        else:
            vals = s.tolist()
        cols.append(vals)
    names = df.columns.tolist()
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


def _per_value(s, f):
    """f(s), a pandas string method on a Series of text without missing values, computed once per
    distinct value (a million jobs have a few states, nodes, TRES and GPU names) and spread back:
    the same values, dtype and index."""
    import pandas as pd

    codes, uniq = pd.factorize(s)
    out = f(pd.Series(uniq, dtype=s.dtype))
    return pd.Series(out.to_numpy()[codes], index=s.index, dtype=out.dtype, name=s.name)


def gpu_inputs(gpus, min_share: float, catalog_power: dict | None = None):
    """Per-job inputs from per-GPU rows (pandas): sampled/used/idle counts and the working GPUs' means."""
    import pandas as pd

    if gpus.empty:
        return pd.DataFrame(columns=["sampled_gpus", "used_gpus", "idle_gpus", "util_used", "active_used",
                                     "power_used", "sm_used", "tensor_used", "dram_used", "mem_peak_gib",
                                     "mem_total_gib", "mig"])
    g = gpus.copy()
    for c in _GPU_COLS[1:-1]:
        g[c] = pd.to_numeric(g[c], errors="coerce")
    sampled = g["samples"].fillna(0) > 0
    g["did"] = did_work_vector(g["active_seconds"], g["seconds"], g["samples"], min_share)
    g["idle"] = sampled & ~g["did"]
    g["sampled"] = sampled
    power = g["power_frac_mean"].where(g["power_frac_mean"].notna(), g["power_mean_w"] / g["power_limit_w"])
    g["power"] = power
    g["active"] = (g["active_seconds"] / g["seconds"].where(g["seconds"] > 0)).clip(0, 1)
    g["mig"] = _per_value(g["name"].fillna(""), lambda x: x.str.contains("MIG", case=False))
    w = g[g["did"]]
    agg = g.groupby("job_ref").agg(sampled_gpus=("sampled", "sum"), used_gpus=("did", "sum"),
                                   idle_gpus=("idle", "sum"), mem_peak=("mem_used_max_mib", "max"),
                                   mem_total=("mem_total_mib", "max"), mig=("mig", "any"))
    means = w.groupby("job_ref").agg(util_used=("util_mean", "mean"), active_used=("active", "mean"),
                                     power_used=("power", "mean"), sm_used=("sm_active_mean", "mean"),
                                     tensor_used=("tensor_active_mean", "mean"), dram_used=("dram_active_mean", "mean"))
    out = agg.join(means, how="left")
    out["mem_peak_gib"] = out.pop("mem_peak") / 1024.0
    out["mem_total_gib"] = out.pop("mem_total") / 1024.0
    return out


def _history(reader, keys, since: int, history_days: int, book: PriceBook):
    """Earlier completed runs of the recurring jobs in the window: key -> [(end, elapsed, cost)]."""
    import pandas as pd

    if history_days <= 0 or keys.empty:
        return pd.DataFrame(columns=["cluster", "name", "user", "account", "end", "elapsed", "cost"])
    h = _frame(reader, _JOBS_SQL, _JOB_COLS, {"since": since - history_days * 86400, "until": since})
    h = h[_per_value(h["state"].fillna(""), lambda x: x.str.startswith("COMPLETED"))]
    h = h.merge(keys, on=["cluster", "name", "user", "account"], how="inner")
    h["cost"] = _costs(h, book)
    return h[["cluster", "name", "user", "account", "end", "elapsed", "cost"]]


def _costs(df, book: PriceBook) -> list[float]:
    """usage.cost.job_cost(...).usd per job (Prices memoises its rate lookups; parts_of is
    memoised here per (GPUs, type, AllocTRES): most jobs of a site share a handful of shapes)."""
    out = []
    parts_memo: dict[tuple, list[Part]] = {}
    for cluster, alloc, gtype, tres, elapsed, part, cpus in zip(
            df["cluster"], df["alloc_gpus"], df["gpu_type"], df["alloc_tres"], df["elapsed"], df["partition"],
            df["alloc_cpus"], strict=True):
        a = int(alloc or 0)
        pk = (a, gtype, tres or "")
        parts = parts_memo.get(pk)
        if parts is None:
            parts = parts_memo[pk] = parts_of(a, gtype, tres or "")
        out.append(job_cost(parts, int(elapsed or 0), book.for_cluster(cluster), partition=part,
                            cpus=int(cpus or 0)).usd)
    return out


def _regression_inputs(jobs, hist):
    """runs_before, elapsed_median, cost_median per job from its key's earlier completed runs."""
    import pandas as pd

    key = ["cluster", "name", "user", "account"]
    cur = jobs[key + ["id", "end", "elapsed", "cost", "state"]].copy()
    cur["completed"] = _per_value(cur["state"].fillna(""), lambda x: x.str.startswith("COMPLETED"))
    h = hist.assign(id=-1, completed=True, state="COMPLETED")
    allruns = pd.concat([h, cur], ignore_index=True)
    # The key's four text columns are factorised once, into a group number (NaN where a part is
    # missing: groupby leaves those rows out, as it does grouping by the columns); every grouping
    # below is by that number. Runs are in End order within a key (stable: ties keep their order).
    allruns["_key"] = allruns.groupby(key, sort=False).ngroup()
    allruns = allruns.sort_values(["_key", "end"], kind="stable")
    comp = allruns[allruns["completed"]]
    grp = comp.groupby("_key", sort=False)
    # a key's first (or only) run has no median before it: the medians need only the keys run more than once
    multi = comp[grp["end"].transform("size") > 1]
    mgrp = multi.groupby("_key", sort=False)
    comp = comp.assign(runs_before=grp.cumcount(),
                       elapsed_median=_median_before(multi, mgrp, "elapsed").reindex(comp.index),
                       cost_median=_median_before(multi, mgrp, "cost").reindex(comp.index))
    mine = comp[comp["id"] >= 0].set_index("id")[["runs_before", "elapsed_median", "cost_median"]]
    return mine


def _median_before(comp, grp, col: str):
    """Per row, the median of `col` over the earlier rows of its group (NaN for a group's first):
    what grp[col].transform(lambda s: s.expanding().median().shift()) gives, in one pass
    (groupby().expanding() runs pandas' windowed median over all groups at once; a lambda per
    group cost ~3 ms each, and one-off job names make as many groups as jobs)."""
    import pandas as pd

    if grp.ngroups == 0:  # no rows, or none with a whole key (groupby drops missing keys)
        return pd.Series(NAN, index=comp.index, dtype="float64")
    em = grp[col].expanding().median().droplevel(0)
    return comp.assign(_m=em.reindex(comp.index)).groupby("_key", sort=False)["_m"].shift()


def _tiers(book: PriceBook, cluster: str, candidates: str, inventory: dict[str, set[str]]) -> list[dict]:
    prices = book.for_cluster(cluster)
    cat = prices.catalog
    types = list(cat.types)
    if candidates == "site" and inventory.get(cluster):
        types = [t for t in (cat.canonical(x) for x in inventory[cluster]) if t]
    out = []
    for t in dict.fromkeys(types):
        spec = cat.spec(t)
        if spec is None or not spec.mem_gib or not spec.bf16_tflops or not spec.mem_bw_gbs:
            continue
        rate = prices.gpu_rate(t)
        if rate.known:
            out.append({"type": t, "rate": rate.usd, "mem_gib": float(spec.mem_gib), "tflops": float(spec.bf16_tflops),
                        "mem_bw": float(spec.mem_bw_gbs)})
    return out


def inputs(reader, since: int, until: int, cfg, book: PriceBook):
    """The window's jobs with every input rules.judge needs (a pandas DataFrame indexed like the jobs)."""
    import pandas as pd

    jobs = _frame(reader, _JOBS_SQL, _JOB_COLS, {"since": since, "until": until})
    if jobs.empty:
        return jobs
    gpus = _frame(reader, _GPU_SQL, _GPU_COLS, {"since": since, "until": until})
    g = gpu_inputs(gpus, cfg["usage.min_active_share"])
    jobs = jobs.join(g, on="id")
    jobs["cost"] = _costs(jobs, book)
    rates, tflops, bws = [], [], []
    memo: dict[tuple, tuple[float, float, float]] = {}  # the same lookups, once per (cluster, type, partition)
    for k in zip(jobs["cluster"], jobs["gpu_type"], jobs["partition"], strict=True):
        got = memo.get(k)
        if got is None:
            cluster, gtype, part = k
            prices = book.for_cluster(cluster)
            r = prices.gpu_rate(gtype, part)
            spec = prices.catalog.spec(gtype) if gtype else None
            got = memo[k] = (r.usd if r.known else NAN,
                             float(spec.bf16_tflops) if spec is not None and spec.bf16_tflops else NAN,
                             float(spec.mem_bw_gbs) if spec is not None and spec.mem_bw_gbs else NAN)
        rates.append(got[0])
        tflops.append(got[1])
        bws.append(got[2])
    jobs["rate"], jobs["tflops"], jobs["mem_bw"] = rates, tflops, bws
    jobs["started"] = jobs["start"].notna().astype(int)
    outcome: dict[tuple, tuple[int, str | None]] = {}  # (state, started) -> (failed, side), once per state
    fs = []
    for k in zip(jobs["state"], [st is not None and st == st for st in jobs["start"]], strict=True):
        got = outcome.get(k)
        if got is None:
            got = outcome[k] = (int(is_failed(k[0], k[1])), failed_side(k[0]))
        fs.append(got)
    jobs["failed"] = [f for f, _ in fs]
    jobs["side"] = [sd for _, sd in fs]
    cpus = pd.to_numeric(jobs["alloc_cpus"], errors="coerce")
    el = pd.to_numeric(jobs["elapsed"], errors="coerce")
    jobs["cpu_eff"] = pd.to_numeric(jobs["total_cpu_s"], errors="coerce") / (el * cpus).where((el * cpus) > 0)
    tres = jobs["alloc_tres"].fillna("")
    jobs["shared"] = (_per_value(tres, lambda x: x.str.contains("gres/shard") | x.str.contains("gres/mps"))
                      | jobs["mig"].fillna(False).astype(bool)).astype(int)
    for c in ("alloc_gpus", "elapsed"):
        jobs[c] = pd.to_numeric(jobs[c], errors="coerce").fillna(0)
    keys = jobs[["cluster", "name", "user", "account"]].drop_duplicates()
    hist = _history(reader, keys, since, cfg["analyze.history_days"], book)
    reg = _regression_inputs(jobs, hist)
    jobs = jobs.join(reg, on="id")
    jobs["node"] = _per_value(jobs["nodelist"].fillna(""), lambda x: x.str.split(",").str[0])
    return jobs


def _pg_replace(conn, findings, refs: list[int], rows: list[dict[str, Any]]) -> bool:
    """PostgreSQL (psycopg): the same DELETE and INSERT, as `job_ref = ANY(array)` per batch and one
    COPY, in the session's transaction (as store/jobs.py upserts jobs). An IN list of 5000 binds
    costs the server ~25 ms to plan, and executemany a round of the protocol per row: together ~70
    of the ~160 s a million-job window took. The values are the ones the INSERT binds (each through
    its column type's bind processor: the evidence through SQLAlchemy's JSON serialiser). False,
    having done nothing, where the rows do not give every column (an INSERT would fill defaults)."""
    cols = [c for c in findings.columns if c.name != "id"]
    if rows and set(rows[0]) != {c.name for c in cols}:
        return False
    procs = [(c.name, c.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) for c in cols]
    names = ", ".join(f'"{c.name}"' for c in cols)
    with conn.connection.driver_connection.cursor() as cur:
        for i in range(0, len(refs), 5000):
            cur.execute('DELETE FROM findings WHERE "job_ref" = ANY(%s)', (refs[i:i + 5000],))
        if rows:
            with cur.copy(f"COPY findings ({names}) FROM STDIN") as copy:  # constant text: the model's columns
                for r in rows:
                    copy.write_row([p(r[c]) if p else r[c] for c, p in procs])
    return True


def analyze(reader, engine, since: int, until: int, cfg, book: PriceBook,
            progress: Callable[[str], None] | None = None) -> AnalyzeResult:
    import pandas as pd
    from sqlalchemy import delete, insert
    from sqlalchemy.orm import Session

    from piqc_slurm.store.models import AnalysisRun, Finding

    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    res = AnalyzeResult()
    t = Thresholds.from_config(cfg)
    jobs = inputs(reader, since, until, cfg, book)
    res.jobs = len(jobs)
    say(f"{res.jobs:,} jobs loaded in {time.monotonic() - t0:.1f} s")
    rows: list[dict[str, Any]] = []
    now = int(time.time())
    inventory: dict[str, set[str]] = {}
    for cluster, gtype in reader.all(_INVENTORY_SQL, {}):
        inventory.setdefault(cluster, set()).add(gtype)
    clusters = jobs.groupby("cluster") if not jobs.empty else []
    if not jobs.empty and clusters.ngroups == 1 and jobs["cluster"].notna().all():
        clusters = [(jobs["cluster"].iloc[0], jobs)]  # what the groupby yields for one cluster, without its copy
    for cluster, part in clusters:
        tiers = _tiers(book, cluster, cfg["analyze.wt_candidates"], inventory)
        v = pd.DataFrame(judge(part, t, tiers), index=part.index)
        flagged = v[[c for c in v.columns if not c.startswith("w_") and c in
                     ("FAILED_SPEND", "IDLE_GPUS", "WRONG_TIER", "INPUT_BOUND", "UNDER_BATCHED",
                      "RUNTIME_REGRESSION", "NO_SAMPLES")]].fillna(False).astype(bool).any(axis=1)
        fj, fv = part[flagged], v[flagged]
        for i in range(0, len(fj), _CHUNK):  # a chunk's records at a time: ~90 boxed values a job
            pj, pv = _records(fj.iloc[i:i + _CHUNK]), _records(fv.iloc[i:i + _CHUNK])
            for j, vv in zip(pj, pv, strict=True):
                for f in explain(j, vv, cfg["usage.min_active_share"], cfg["sampler.active_util"]):
                    rows.append({"job_ref": int(j["id"]), "code": f["code"], "waste_usd": float(f["waste_usd"]),
                                 "evidence": f["evidence"], "advice_gpus": f["advice_gpus"],
                                 "advice_tier": f["advice_tier"], "analyzed_at": now, "sentence": f["sentence"],
                                 "advice": f["advice"], "est_elapsed": f["est_elapsed"],
                                 "est_cost_usd": f["est_cost_usd"], "confidence": f["confidence"]})
    gpu_jobs = jobs.loc[(jobs["alloc_gpus"] > 0) & (jobs["started"] > 0), ["node", "sampled_gpus"]] \
        if not jobs.empty else jobs
    if not gpu_jobs.empty:
        cov = (gpu_jobs["sampled_gpus"].fillna(0) > 0).groupby(gpu_jobs["node"]).agg(["sum", "size"])
        for node, sampled, n in zip(cov.index, cov["sum"], cov["size"], strict=True):
            res.coverage[node] = (int(sampled), int(n))
    refs = [int(x) for x in jobs["id"]] if not jobs.empty else []
    findings = Finding.__table__  # Core statements on the table: no ORM bulk machinery (see below)
    with Session(engine) as s, s.begin():
        conn = s.connection()
        if not (conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
                and _pg_replace(conn, findings, refs, rows)):
            for i in range(0, len(refs), 5000):
                s.execute(delete(findings).where(findings.c.job_ref.in_(refs[i:i + 5000])))
            # A Core INSERT of the table (every row has every column; None is NULL): one executemany per
            # batch. The ORM's bulk insert (insert(Finding)) leaves a row's None columns out of its INSERT,
            # so it split each batch at every change of them (~1 statement per 1.3 rows): ~50 us a row more.
            ins = insert(findings)
            for i in range(0, len(rows), 5000):
                s.execute(ins, rows[i:i + 5000])
        s.add(AnalysisRun(since=since, until=until, at=now, jobs=res.jobs, findings=len(rows),
                          thresholds=json.loads(json.dumps(t._asdict()))))
    res.findings = len(rows)
    for r in rows:
        n, w = res.by_code.get(r["code"], (0, 0.0))
        res.by_code[r["code"]] = (n + 1, w + r["waste_usd"])
        res.waste_usd += r["waste_usd"]
    res.seconds = time.monotonic() - t0
    return res
