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
import os
import time
from collections.abc import Callable
from typing import Any

from piqc_slurm.analyze.explain import JOB_INPUTS, VERDICT_FIELDS
from piqc_slurm.analyze.explain import findings as explain
from piqc_slurm.analyze.rules import NAN, Thresholds, judge
from piqc_slurm.usage.cost import job_costs
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
# Per GPU: power is the sampler's mean power / limit, else (older samplers) mean power over the limit;
# mig, whether NVML named it a MIG device (as analyze.inputs.gpu_inputs reads the name). Computed by
# the database: two numbers, not three and a name, for each of a window's millions of GPU rows.
_GPU_SQL = ('SELECT s."job_ref", u."samples", u."seconds", u."active_seconds", u."util_mean", u."mem_used_max_mib", '
            'u."mem_total_mib", COALESCE(u."power_frac_mean", u."power_mean_w" / NULLIF(u."power_limit_w", 0)), '
            'u."sm_active_mean", u."tensor_active_mean", u."dram_active_mean", '
            "CASE WHEN upper(u.\"name\") LIKE '%MIG%' THEN 1 ELSE 0 END "
            'FROM node_summaries s JOIN gpu_usage u ON u."summary_id" = s."id" JOIN jobs j ON j."id" = s."job_ref" '
            'WHERE j."end" IS NOT NULL AND j."end" >= :since AND j."end" < :until')
_GPU_COLS = ("job_ref", "samples", "seconds", "active_seconds", "util_mean", "mem_used_max_mib", "mem_total_mib",
             "power", "sm_active_mean", "tensor_active_mean", "dram_active_mean", "mig")
_INVENTORY_SQL = 'SELECT DISTINCT "cluster", "gpu_type" FROM node_gpus WHERE "gpu_type" IS NOT NULL'


class AnalyzeResult:
    __slots__ = ("jobs", "findings", "by_code", "waste_usd", "coverage", "shared", "seconds")

    def __init__(self) -> None:
        self.jobs = self.findings = 0
        self.by_code: dict[str, tuple[int, float]] = {}
        self.waste_usd = 0.0
        self.coverage: dict[str, tuple[int, int]] = {}   # node: (GPU jobs sampled, GPU jobs)
        self.shared = 0   # jobs on MIG slices, shards or MPS: no per-GPU findings
        self.seconds = 0.0


_TEXT = ("cluster", "name", "user", "account", "partition", "state", "exit_code", "derived_exit_code", "gpu_type",
         "alloc_tres", "nodelist")


# Integer columns (int64 unless a NULL makes them float64, as DataFrame.from_records infers);
# other number columns are float64 (NULL: NaN); text columns (_TEXT) are objects, None for NULL.
_INTS = frozenset(("id", "job_ref", "exit_signal", "restarts", "start", "end", "elapsed", "alloc_gpus", "alloc_cpus",
                   "samples", "mig"))


def _frame(reader, sql: str, cols: tuple[str, ...], params: dict):
    """The rows of `sql` as a DataFrame of `cols`. Each batch becomes one numpy record array (the
    driver's tuples converted in one C pass): transposing a million tuples in Python and inferring
    each column's type was ~60% of loading a window (a Python object per value, scattered)."""
    import numpy as np
    import pandas as pd

    csv = reader.copy_csv(sql, params) if hasattr(reader, "copy_csv") else None
    if csv is not None:  # PostgreSQL: COPY TO STDOUT, parsed by pandas in C
        return _csv_frame(csv, cols)
    kinds = {c: "O" if c in _TEXT else ("i8" if c in _INTS else "f8") for c in cols}
    parts: list[Any] = []
    for batch in reader.batches(sql, params, 50_000):
        while True:
            try:
                parts.append(np.array(batch, dtype=[(c, kinds[c]) for c in cols]))
                break
            except (TypeError, ValueError, OverflowError):
                _widen(kinds, cols, batch)
    data: dict[str, Any] = {}
    for c in cols:
        if not parts:
            data[c] = pd.Series([], dtype=object)
            continue
        arr = np.concatenate([p[c] for p in parts]) if len(parts) > 1 else parts[0][c].copy()
        data[c] = pd.Series(arr, dtype=object) if arr.dtype == object else pd.Series(arr)
    return pd.DataFrame(data, columns=list(cols))


def _csv_frame(data: bytes, cols: tuple[str, ...]):
    """The frame _frame makes, from COPY's CSV (NULL written \\N): numbers parsed exactly (pandas'
    default parser; tests/integration/test_analyze_postgres.py compares with the row path), integers
    int64 unless a NULL makes them float64, text as objects with None."""
    import io

    import pandas as pd

    text = [c for c in cols if c in _TEXT]
    if not data:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols}, columns=list(cols))
    df = pd.read_csv(io.BytesIO(data), names=list(cols), header=None, na_values=["\\N"], keep_default_na=False,
                     dtype={c: object if c in _TEXT else "float64" for c in cols if c not in _INTS})
    for c in text:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _widen(kinds: dict[str, str], cols: tuple[str, ...], batch: list[tuple]) -> None:
    """A batch a column's kind cannot hold: a NULL among integers (float64 from now on), text among
    numbers (SQLite keeps what it is given: objects). Earlier batches are promoted by concatenate."""
    import numpy as np

    for k, c in enumerate(cols):
        for kind in {"i8": ("i8", "f8", "O"), "f8": ("f8", "O")}.get(kinds[c], ()):
            try:
                np.array([r[k] for r in batch], dtype=kind)
            except (TypeError, ValueError, OverflowError):
                continue
            kinds[c] = kind
            break


_CHUNK = 10_000


def _native(x: Any) -> Any:
    """A numpy scalar as the Python value it holds (what DataFrame.to_dict boxes it to); others as they are."""
    import numpy as np

    return x.item() if isinstance(x, np.generic) else x


def _records(*frames) -> list[dict[str, Any]]:
    """One dict per row of the frames side by side (same index, distinct column names), as
    df.to_dict("records") makes them, column by column: a numeric column's values are its tolist()
    (the Python scalars iterating it yields); an object or extension column's are unboxed from numpy
    scalars as to_dict does. to_dict boxes every value one call at a time: ~3x slower."""
    cols: list[list] = []
    names: list[str] = []
    for df in frames:
        names.extend(df.columns.tolist())
        cols.extend(_column_values(df.iloc[:, k]) for k in range(df.shape[1]))
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


_PLAIN = (str, int, float, bool, type(None))


def _column_values(s) -> list:
    from pandas.api.extensions import ExtensionDtype

    if s.dtype == object or isinstance(s.dtype, ExtensionDtype):
        vals = s.to_numpy(dtype=object).tolist()
        return vals if all(type(x) in _PLAIN for x in vals) else [_native(x) for x in vals]
    return s.tolist()


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
    for c in _GPU_COLS[1:]:
        g[c] = pd.to_numeric(g[c], errors="coerce")
    sampled = g["samples"].fillna(0) > 0
    g["did"] = did_work_vector(g["active_seconds"], g["seconds"], g["samples"], min_share)
    g["idle"] = sampled & ~g["did"]
    g["sampled"] = sampled
    g["active"] = (g["active_seconds"] / g["seconds"].where(g["seconds"] > 0)).clip(0, 1)
    g["mig"] = g["mig"].fillna(0) > 0
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


def _costs(df, book: PriceBook):
    """usage.cost.job_cost(...).usd per job, through its many-jobs form."""
    return job_costs(df["cluster"], df["alloc_gpus"], df["gpu_type"], df["alloc_tres"], df["elapsed"],
                     df["partition"], df["alloc_cpus"], book)


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


_COUNT_SQL = 'SELECT count(*) FROM jobs j WHERE j."end" IS NOT NULL AND j."end" >= :since AND j."end" < :until'
PARALLEL_MIN_JOBS = 50_000  # a window this large loads its GPU rows and explains its findings on two cores


def _parallel() -> bool:
    import multiprocessing

    return (os.cpu_count() or 1) > 1 and "fork" in multiprocessing.get_all_start_methods()


def _forked(fn: Callable, *args):
    """fn(*args) in a forked child process (a future): the child inherits this process's memory, so
    only the arguments and the result are pickled. A window of a million jobs reads ~3 million rows:
    the Python objects the driver makes of them are most of its time, and a second core halves it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    try:
        return ex.submit(fn, *args)  # the fork-context pool forks its worker here
    finally:
        ex.shutdown(wait=False)


def _gpu_part(reader_type, url: str, window: dict, min_share: float, reader=None):
    """gpu_inputs of the window's GPU rows, read through `reader` or a new reader of `url` (in a child)."""
    r = reader if reader is not None else reader_type(url)
    try:
        return gpu_inputs(_frame(r, _GPU_SQL, _GPU_COLS, window), min_share)
    finally:
        if reader is None:
            r.close()


def _regression_part(reader_type, url: str, since: int, history_days: int, book: PriceBook, reader=None):
    """_regression_inputs of _SHARED["regression"] (the window's jobs) and their keys' earlier runs,
    read through `reader` or a new reader of `url` (in a child)."""
    jobs = _SHARED["regression"]
    r = reader if reader is not None else reader_type(url)
    try:
        keys = jobs[["cluster", "name", "user", "account"]].drop_duplicates()
        return _regression_inputs(jobs, _history(r, keys, since, history_days, book))
    finally:
        if reader is None:
            r.close()


def _shapes(df, cols: list[str]):
    """(values, row positions) per distinct combination of `cols` (None for a missing text value)."""
    for key, at in df.groupby(cols, dropna=False, sort=False).indices.items():
        yield tuple(None if isinstance(k, float) and k != k else k for k in key), at


def inputs(reader, since: int, until: int, cfg, book: PriceBook, progress: Callable[[str], None] | None = None):
    """The window's jobs with every input rules.judge needs (a pandas DataFrame indexed like the jobs)."""
    import numpy as np
    import pandas as pd

    say = progress or (lambda _m: None)
    t0 = time.monotonic()

    window = {"since": since, "until": until}
    gpu_args = (type(reader), reader.url, window, cfg["usage.min_active_share"])
    big = cfg["analyze.parallel"] and _parallel() and reader.all(_COUNT_SQL, window)[0][0] >= PARALLEL_MIN_JOBS
    pending = _forked(_gpu_part, *gpu_args) if big else None  # its rows load while this process loads the jobs
    jobs = _frame(reader, _JOBS_SQL, _JOB_COLS, window)
    say(f"{len(jobs):,} jobs loaded in {time.monotonic() - t0:.1f} s")
    if jobs.empty:
        if pending is not None:
            pending.result()
        return jobs
    # what needs only the jobs first: a child loading the GPU rows works meanwhile
    jobs["cost"] = _costs(jobs, book)
    for c in ("alloc_gpus", "elapsed"):
        jobs[c] = pd.to_numeric(jobs[c], errors="coerce").fillna(0)
    reg_args = (type(reader), reader.url, since, cfg["analyze.history_days"], book)
    _SHARED["regression"] = jobs[["cluster", "name", "user", "account", "id", "end", "elapsed", "cost", "state"]]
    # and the recurring jobs' medians in another (its copy of them comes with the fork)
    reg_pending = _forked(_regression_part, *reg_args) if big else None
    # per (cluster, type, partition) and per (state, started): a site's million jobs have a few dozen
    rates, tflops, bws = (np.full(len(jobs), NAN) for _ in range(3))
    for (cluster, gtype, part), at in _shapes(jobs, ["cluster", "gpu_type", "partition"]):
        prices = book.for_cluster(cluster)
        r = prices.gpu_rate(gtype, part)
        spec = prices.catalog.spec(gtype) if gtype else None
        rates[at] = r.usd if r.known else NAN
        tflops[at] = float(spec.bf16_tflops) if spec is not None and spec.bf16_tflops else NAN
        bws[at] = float(spec.mem_bw_gbs) if spec is not None and spec.mem_bw_gbs else NAN
    jobs["rate"], jobs["tflops"], jobs["mem_bw"] = rates, tflops, bws
    jobs["started"] = jobs["start"].notna().astype(int)
    failed, side = np.zeros(len(jobs), dtype=int), np.full(len(jobs), None, dtype=object)
    for (state, started), at in _shapes(jobs, ["state", "started"]):
        failed[at], side[at] = int(is_failed(state, bool(started))), failed_side(state)
    jobs["failed"] = failed
    jobs["side"] = pd.Series(side, index=jobs.index, dtype=object)
    cpus = pd.to_numeric(jobs["alloc_cpus"], errors="coerce")
    el = pd.to_numeric(jobs["elapsed"], errors="coerce")
    jobs["cpu_eff"] = pd.to_numeric(jobs["total_cpu_s"], errors="coerce") / (el * cpus).where((el * cpus) > 0)
    from piqc_slurm.slurm.parse import first_node, node_count

    nodelist = jobs["nodelist"].fillna("")
    jobs["node"] = _per_value(nodelist, lambda x: x.map(first_node))
    jobs["nodes"] = _per_value(nodelist, lambda x: x.map(node_count).astype("int64"))
    try:
        reg = reg_pending.result() if reg_pending is not None else _regression_part(*reg_args, reader=reader)
    finally:
        _SHARED.pop("regression", None)
    jobs = jobs.join(reg, on="id")
    g = pending.result() if pending is not None else _gpu_part(*gpu_args, reader=reader)
    say(f"{len(g):,} jobs' GPU rows loaded in {time.monotonic() - t0:.1f} s")
    jobs = jobs.join(g, on="id")
    several = _several(reader, jobs, window, book, cfg["usage.min_active_share"])
    for c, values in several.items():
        jobs[c] = values
    tres = jobs["alloc_tres"].fillna("")
    jobs["shared"] = (_per_value(tres, lambda x: x.str.contains("gres/shard") | x.str.contains("gres/mps"))
                      | jobs["mig"].fillna(False).astype(bool)).astype(int)
    return jobs


# The GPU rows, with their types and nodes, of the window's jobs on several nodes or of several GPU
# types (Slurm names no one type, AllocTRES two or more: a job across nodes of different GPUs).
_SEVERAL_GPU_SQL = ('SELECT s."job_ref", s."node", u."gpu_type", u."samples", u."seconds", u."active_seconds" '
                    'FROM node_summaries s JOIN gpu_usage u ON u."summary_id" = s."id" '
                    'JOIN jobs j ON j."id" = s."job_ref" WHERE j."end" IS NOT NULL AND j."end" >= :since '
                    'AND j."end" < :until AND ((j."gpu_type" IS NULL '
                    "AND j.\"alloc_tres\" LIKE '%gres/gpu:%gres/gpu:%') OR j.\"nodelist\" LIKE '%,%' "
                    "OR j.\"nodelist\" LIKE '%[%')")


def _several(reader, jobs, window: dict, book: PriceBook, min_share: float) -> dict[str, Any]:
    """Per job, analyze.inputs.idle_cost_share (GPUs of several types) and node_use (several nodes):
    NaN for a job on one node of one type, nearly all; only the others' GPU rows are read again."""
    import numpy as np

    from piqc_slurm.analyze.inputs import idle_cost_share, mixed_rates, node_use
    from piqc_slurm.usage.cost import rated_parts

    out = {c: np.full(len(jobs), NAN) for c in ("idle_cost_share", "used_nodes", "used_per_node")}
    tres = jobs["alloc_tres"].fillna("")
    mixed = (jobs["gpu_type"].isna() & (_per_value(tres, lambda x: x.str.count("gres/gpu:")) >= 2)).to_numpy()
    multi = (jobs["nodes"] > 1).to_numpy()
    if not (mixed | multi).any():
        return out
    rows: dict[int, list[dict[str, Any]]] = {}
    for batch in reader.batches(_SEVERAL_GPU_SQL, window, 10_000):
        for ref, node, gtype, samples, seconds, active in batch:
            rows.setdefault(int(ref), []).append({"node": node, "gpu_type": gtype, "samples": samples,
                                                  "seconds": seconds, "active_seconds": active})
    cols = jobs[["id", "cluster", "alloc_gpus", "alloc_tres", "partition"]].to_numpy()
    for i in np.flatnonzero(mixed | multi):
        ref, cluster, alloc, alloc_tres, partition = cols[i]
        mine = rows.get(int(ref), [])
        if multi[i]:
            use = node_use(mine, min_share)
            out["used_nodes"][i], out["used_per_node"][i] = use["used_nodes"], use["used_per_node"]
        if mixed[i]:
            partition = None if partition is None or partition != partition else partition
            parts = rated_parts(int(alloc), None, alloc_tres, book.for_cluster(cluster), partition)
            out["idle_cost_share"][i] = idle_cost_share(mine, min_share, mixed_rates(parts))
    return out


_SHARED: dict[str, Any] = {}  # what a forked child reads of the parent's memory


def _explain_rows(lo: int, hi: int) -> list[tuple]:
    """Rows (_FINDING_COLS) of the findings of flagged jobs lo..hi of _SHARED["explain"], a chunk's
    records at a time."""
    fj, fv, min_share, active_util, now = _SHARED["explain"]
    dumps = json.JSONEncoder().encode  # what SQLAlchemy's JSON type stores (json.dumps)
    rows: list[tuple] = []
    for i in range(lo, hi, _CHUNK):
        # one dict a job holds both its inputs and its verdict (their names are apart: JOB_INPUTS, VERDICT_FIELDS)
        for j in _records(fj.iloc[i:min(i + _CHUNK, hi)], fv.iloc[i:min(i + _CHUNK, hi)]):
            ref = int(j["id"])
            for f in explain(j, j, min_share, active_util):
                rows.append((ref, f["code"], float(f["waste_usd"]), dumps(f["evidence"]), f["advice_gpus"],
                             f["advice_tier"], now, f["sentence"], f["advice"], f["est_elapsed"],
                             f["est_cost_usd"], f["confidence"]))
    return rows


def _explain_stream(starts: list[int], n: int, out) -> None:
    """In a forked child: the rows of the chunks at `starts`, one (start, rows) message a chunk,
    then None; (-1, why) if it fails (the parent explains what did not arrive)."""
    try:
        for st in starts:
            out.put((st, _explain_rows(st, min(st + _CHUNK, n))))
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the parent takes over
        out.put((-1, f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()
        out.join_thread()


def _explain_into(conn, findings, n: int, parallel: bool, before: Callable[[], None] | None) -> list[tuple]:
    """Explain flagged jobs 0..n of _SHARED["explain"], insert their rows, return them; `before`
    (the old findings' delete) runs first. With `parallel`, a forked child explains the later ~70%
    of the chunks and sends each back as it is done, while this process deletes, explains the rest
    and inserts everything as it arrives: the insert no longer waits for the last explanation.
    Chunks a child did not deliver (it failed or died) are explained here."""
    import multiprocessing
    import queue as queues

    starts = list(range(0, n, _CHUNK))
    out: list[tuple] = []

    def insert(rows: list[tuple]) -> None:
        _insert(conn, findings, rows)
        out.extend(rows)

    mine = starts if not parallel or len(starts) < 2 else starts[:max(1, len(starts) * 3 // 10)]
    theirs = starts[len(mine):]
    child = q = None
    if theirs:
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        child = ctx.Process(target=_explain_stream, args=(theirs, n, q), daemon=True)
        child.start()
    pending = set(theirs)

    def drain(block: bool) -> None:
        while pending:
            try:
                item = q.get(timeout=1.0) if block else q.get_nowait()
            except queues.Empty:
                if not block:
                    return
                if child.is_alive():
                    continue
                try:  # it has ended: what it sent before is still in the pipe
                    item = q.get_nowait()
                except queues.Empty:
                    return
            except (EOFError, OSError, ValueError):  # a message cut short: it died while sending
                return
            if item is None or item[0] < 0:
                return
            pending.discard(item[0])
            insert(item[1])

    if before is not None:
        before()
    for st in mine:
        insert(_explain_rows(st, min(st + _CHUNK, n)))
        if q is not None:
            drain(False)
    if q is not None:
        drain(True)
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    for st in sorted(pending):
        insert(_explain_rows(st, min(st + _CHUNK, n)))
    return out


_FINDING_COLS = ("job_ref", "code", "waste_usd", "evidence", "advice_gpus", "advice_tier", "analyzed_at", "sentence",
                 "advice", "est_elapsed", "est_cost_usd", "confidence")  # a row of `rows`; evidence as JSON text


_SQLITE_DELETE = 'DELETE FROM findings WHERE "job_ref" IN (SELECT "value" FROM json_each(?))'
_COLUMN_LIST = ", ".join(f'"{c}"' for c in _FINDING_COLS)  # constant names: the model's columns
_SQLITE_INSERT = (f"INSERT INTO findings ({_COLUMN_LIST}) "  # noqa: S608
                  f"VALUES ({', '.join('?' * len(_FINDING_COLS))})")
_PG_COPY = f"COPY findings ({_COLUMN_LIST}) FROM STDIN"


def _delete(conn, findings, refs: list[int]) -> None:
    """Delete the findings of the jobs `refs`, in the session's transaction, on the driver's own
    cursor where it is SQLite's or psycopg's (SQLAlchemy's per-row parameter processing cost ~20 s of
    a million-job window): SQLite, one json_each list per 50,000 jobs; PostgreSQL, `job_ref =
    ANY(array)` per 100,000 (an IN list of 5000 binds costs the server ~25 ms to plan). Any other
    driver: Core statements."""
    from sqlalchemy import delete

    driver = _driver(conn)
    if driver == "sqlite":
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute("PRAGMA cache_size = -262144")  # 256 MiB: the window's index pages stay in memory
            for i in range(0, len(refs), 50_000):
                cur.execute(_SQLITE_DELETE, (json.dumps(refs[i:i + 50_000]),))
        finally:
            cur.close()
    elif driver == "psycopg":
        with conn.connection.driver_connection.cursor() as cur:
            for i in range(0, len(refs), 100_000):
                # the ids as one array literal the server parses ('{1,2,...}'): psycopg's per-element
                # dumping of a list cost ~3 s of a million-job window
                cur.execute('DELETE FROM findings WHERE "job_ref" = ANY(%s::bigint[])',
                            ("{" + ",".join(map(str, refs[i:i + 100_000])) + "}",))
    else:
        for i in range(0, len(refs), 5000):
            conn.execute(delete(findings).where(findings.c.job_ref.in_(refs[i:i + 5000])))


def _insert(conn, findings, rows: list[tuple]) -> None:
    """Insert `rows` (_FINDING_COLS, the evidence as JSON text): SQLite, one executemany; PostgreSQL
    (psycopg), one COPY (executemany is a round of the protocol per row); any other driver, a Core
    INSERT binding the evidence as the text it already is."""
    from sqlalchemy import Text, bindparam, insert

    if not rows:
        return
    driver = _driver(conn)
    if driver == "sqlite":
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.executemany(_SQLITE_INSERT, rows)
        finally:
            cur.close()
    elif driver == "psycopg":
        with conn.connection.driver_connection.cursor() as cur, cur.copy(_PG_COPY) as copy:
            for r in rows:
                copy.write_row(r)
    else:
        ins = insert(findings).values({c: bindparam(c, type_=Text() if c == "evidence" else findings.c[c].type)
                                       for c in _FINDING_COLS})
        for i in range(0, len(rows), 5000):
            conn.execute(ins, [dict(zip(_FINDING_COLS, r, strict=True)) for r in rows[i:i + 5000]])


def _driver(conn) -> str:
    d = conn.dialect
    return "sqlite" if d.name == "sqlite" else ("psycopg" if d.name == "postgresql" and d.driver == "psycopg"
                                                 else "other")


def analyze(reader, engine, since: int, until: int, cfg, book: PriceBook,
            progress: Callable[[str], None] | None = None) -> AnalyzeResult:
    import pandas as pd
    from sqlalchemy.orm import Session

    from piqc_slurm.store.models import AnalysisRun, Finding

    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    res = AnalyzeResult()
    t = Thresholds.from_config(cfg)
    jobs = inputs(reader, since, until, cfg, book, say)
    res.jobs = len(jobs)
    say(f"{res.jobs:,} jobs' inputs in {time.monotonic() - t0:.1f} s")
    rows: list[tuple] = []  # _FINDING_COLS
    now = int(time.time())
    inventory: dict[str, set[str]] = {}
    for cluster, gtype in reader.all(_INVENTORY_SQL, {}):
        inventory.setdefault(cluster, set()).add(gtype)
    clusters = jobs.groupby("cluster") if not jobs.empty else []
    if not jobs.empty and clusters.ngroups == 1 and jobs["cluster"].notna().all():
        clusters = [(jobs["cluster"].iloc[0], jobs)]  # what the groupby yields for one cluster, without its copy
    min_share, active_util = cfg["usage.min_active_share"], cfg["sampler.active_util"]
    judged = []  # per cluster: its flagged jobs' inputs and verdicts, what explain reads
    for cluster, part in clusters:
        tiers = _tiers(book, cluster, cfg["analyze.wt_candidates"], inventory)
        v = pd.DataFrame(judge(part, t, tiers), index=part.index)
        flagged = v[[c for c in v.columns if not c.startswith("w_") and c in
                     ("FAILED_SPEND", "IDLE_GPUS", "WRONG_TIER", "INPUT_BOUND", "UNDER_BATCHED",
                      "RUNTIME_REGRESSION", "NO_SAMPLES")]].fillna(False).astype(bool).any(axis=1)
        judged.append((part.loc[flagged, [c for c in JOB_INPUTS if c in part.columns]],
                       v.loc[flagged, [c for c in VERDICT_FIELDS if c in v.columns]]))
    say(f"{sum(len(fj) for fj, _ in judged):,} jobs flagged in {time.monotonic() - t0:.1f} s")
    gpu_jobs = jobs.loc[(jobs["alloc_gpus"] > 0) & (jobs["started"] > 0), ["node", "sampled_gpus"]] \
        if not jobs.empty else jobs
    if not gpu_jobs.empty:
        cov = (gpu_jobs["sampled_gpus"].fillna(0) > 0).groupby(gpu_jobs["node"]).agg(["sum", "size"])
        for node, sampled, n in zip(cov.index, cov["sum"], cov["size"], strict=True):
            res.coverage[node] = (int(sampled), int(n))
        res.shared = int((jobs.loc[gpu_jobs.index, "shared"] > 0).sum())
    refs = [int(x) for x in jobs["id"]] if not jobs.empty else []
    with Session(engine) as s, s.begin():
        conn = s.connection()
        if not judged:
            _delete(conn, Finding.__table__, refs)
        for k, (fj, fv) in enumerate(judged):
            _SHARED["explain"] = (fj, fv, min_share, active_util, now)  # a child's copy comes with the fork
            try:
                rows.extend(_explain_into(conn, Finding.__table__, len(fj),
                                          cfg["analyze.parallel"] and len(fj) >= PARALLEL_MIN_JOBS and _parallel(),
                                          (lambda: _delete(conn, Finding.__table__, refs)) if k == 0 else None))
            finally:
                _SHARED.clear()
        s.add(AnalysisRun(since=since, until=until, at=now, jobs=res.jobs, findings=len(rows),
                          thresholds=json.loads(json.dumps(t._asdict()))))
    say(f"{len(rows):,} findings written in {time.monotonic() - t0:.1f} s")
    res.findings = len(rows)
    for r in rows:
        n, w = res.by_code.get(r[1], (0, 0.0))
        res.by_code[r[1]] = (n + 1, w + r[2])
        res.waste_usd += r[2]
    res.seconds = time.monotonic() - t0
    return res
