"""`piqc-slurm digest`: the page an HPC admin reads at 8am.

What it says, most important first, and where each number comes from (every
figure is computed by the module that owns it; this one only selects, sorts
and lays out):

- headline: spend, waste, recoverable per year (with the days it rests on),
  cost per completed job, jobs; each beside the previous window of the same
  length (costs.table's total row: usage.cost, the stored findings);
- what to change: the stored findings (analyze) with the most dollars, with
  job, user, account, sentence and advice; the rest counted;
- spend and waste per account and per user (costs.table --by), top N and the
  rest;
- GPU-hours by GPU type: allocated (costs), used (allocated x GPUUtilAvg,
  usage.utilization, as sacct prints it) and idle (held by no job: the
  stored idle gaps, `piqc-slurm gaps`);
- idle gaps: per node the idle GPU-hours with and without demand and their
  dollars (analyze.gaps.table over the stored stretches) and a node x hour
  heat map of idle GPUs;
- recurring jobs (same name + user + account) with the most spend: cost per
  run over the trailing window, regressions (RUNTIME_REGRESSION) marked;
- the live watch: what the samplers told users while their jobs ran (the
  watch_actions rows, by rule) and every cancel of the cancel policy with
  who, when, why, and what it saved: the job's spend rate at the cancel
  times the rest of its time limit (what the job would have spent idling
  to its limit; jobs.extra Timelimit);
- coverage: GPU jobs without sampler data, nodes whose hooks look broken,
  GPU types without a price.

`build` reads the store and returns plain data; `render_html` and
`render_text` lay it out (report/templates/digest.html.j2, report/charts.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from piqc_slurm import costs as C
from piqc_slurm.analyze import gaps as G
from piqc_slurm.usage.cost import gpu_hours
from piqc_slurm.usage.prices import PriceBook
from piqc_slurm.usage.utilization import util_over_allocation

TOP_FINDINGS = 15
TOP_GROUPS = 12
TOP_NODES = 40
TOP_RECURRING = 6
THIN_COVERAGE = 0.9  # a node where fewer of the GPU jobs have sampler data: its hooks look broken

_TOP_SQL = ('SELECT f."job_ref", f."code", f."waste_usd", f."sentence", f."advice", j."job_id", j."cluster", '
            'j."name", j."user", j."account", j."gpu_type", j."alloc_gpus" FROM findings f '
            'JOIN jobs j ON j."id" = f."job_ref" WHERE j."end" IS NOT NULL AND j."end" >= :since '
            'AND j."end" < :until AND f."waste_usd" > 0 ORDER BY f."waste_usd" DESC, f."job_ref", f."code" LIMIT :n')
_FINDING_SUMS_SQL = ('SELECT f."code", COUNT(*), SUM(f."waste_usd"), '
                     'SUM(CASE WHEN f."waste_usd" > 0 THEN 1 ELSE 0 END) FROM findings f '
                     'JOIN jobs j ON j."id" = f."job_ref" WHERE j."end" IS NOT NULL AND j."end" >= :since '
                     'AND j."end" < :until GROUP BY f."code"')
_REGRESSED_SQL = ('SELECT f."job_ref" FROM findings f JOIN jobs j ON j."id" = f."job_ref" '
                  'WHERE f."code" = \'RUNTIME_REGRESSION\' AND j."end" IS NOT NULL AND j."end" >= :since '
                  'AND j."end" < :until')
_GAPS_SQL = ('SELECT "cluster", "node", "minor", "gpu_type", "partition", "kind", "start", "end", "gpus", '
             '"demand_gpu_seconds", "window_start", "window_end", "computed_at" FROM idle_gaps '
             'WHERE "start" < :until AND "end" > :since')
_UTIL_SQL = ('SELECT s."job_ref", s."id", g."seconds", g."util_mean", g."did_work", g."mem_used_max_mib", '
             'g."energy_j", g."gpu_type" FROM node_summaries s JOIN gpu_usage g ON g."summary_id" = s."id" '
             'JOIN jobs j ON j."id" = s."job_ref" WHERE j."end" IS NOT NULL AND j."end" >= :since '
             'AND j."end" < :until')
_JUDGED_SQL = 'SELECT COUNT(*) FROM analysis_runs WHERE "since" <= :since AND "until" >= :until'
_WATCH_SQL = ('SELECT w."cluster", w."job_id_raw", w."node", w."user", w."rule", w."action", w."at", w."since", '
              'w."usd", w."detail", s."started", j."extra" FROM watch_actions w '
              'JOIN node_summaries s ON s."id" = w."summary_id" LEFT JOIN jobs j ON j."id" = s."job_ref" '
              'WHERE w."at" >= :since AND w."at" < :until ORDER BY w."at", w."id"')
TOP_CANCELS = 20
_UTIL_KEYS = ("job_ref", "node", "seconds", "util_mean", "did_work", "mem_used_max_mib", "energy_j", "gpu_type")


def _top(rows: Sequence[Mapping[str, Any]], n: int, key: str) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    """The first n rows by `key` (largest first) and what the rest add up to."""
    ranked = sorted(rows, key=lambda r: (-(r.get(key) or 0.0), str(r.get("Group", ""))))
    rest = ranked[n:]
    return ranked[:n], {"count": len(rest), "SpendUSD": sum(r.get("SpendUSD") or 0.0 for r in rest),
                        "WasteUSD": sum(r.get("WasteUSD") or 0.0 for r in rest)}


def _change(now: float | None, before: float | None) -> float | None:
    """The relative change from the previous window; None where it has no meaning."""
    if now is None or before is None or before == 0:
        return None
    return (now - before) / abs(before)


def _headline(total: Mapping[str, Any], days: float) -> dict[str, Any]:
    return {"spend": total["SpendUSD"], "waste": total["WasteUSD"], "recoverable": total["RecoverablePerYearUSD"],
            "recoverable_days": days, "per_completed": total["CostPerCompletedUSD"], "jobs": total["Jobs"],
            "completed": total["Completed"], "gpu_hours": total["GPUHours"]}


def _window(reader, since: int, until: int, book: PriceBook, days: int):
    jobs = C.priced(C.load_jobs(reader, since, until), book)
    t0 = C.trailing_start(reader, until, days)
    if t0 >= since:  # the trailing window lies inside this one: its jobs are already priced
        trailing = [j for j in jobs if j["end"] >= t0]
    else:
        trailing = C.priced(C.load_jobs(reader, t0, until), book)
    span = (until - t0) / 86400
    return jobs, trailing, span, C.table(jobs, None, trailing, span)[-1]


def _used_hours(reader, since: int, until: int, jobs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """GPU-hours used per job: allocated GPU-hours x GPUUtilAvg (usage.utilization, as sacct)."""
    from piqc_slurm.usage.utilization import fold

    by_job: dict[int, list[dict]] = defaultdict(list)
    for row in reader.all(_UTIL_SQL, {"since": since, "until": until}):
        d = dict(zip(_UTIL_KEYS, row, strict=True))
        by_job[d["job_ref"]].append(d)
    out = {}
    for j in jobs:
        rows = by_job.get(j["id"])
        if not rows or not j["alloc_gpus"]:
            continue
        st = fold(rows)
        util = util_over_allocation(st if st.gpus > 0 else None, j["alloc_gpus"])
        if util is not None:
            out[j["id"]] = j["gpu_hours"] * util / 100.0
    return out


def _gaps(reader, since: int, until: int, book: PriceBook) -> dict[str, Any]:
    """The stored idle stretches (piqc-slurm gaps) over the window: per cluster the latest
    computation that overlaps it, clipped to it; per node the totals and dollars
    (analyze.gaps.table), per node and hour the idle GPUs."""
    latest: dict[str, int] = {}
    rows = [dict(zip(("cluster", "node", "minor", "gpu_type", "partition", "kind", "start", "end", "gpus",
                      "demand", "w0", "w1", "at"), r, strict=True))
            for r in reader.all(_GAPS_SQL, {"since": since, "until": until})]
    for r in rows:
        key = (r["at"], r["w0"], r["w1"])
        if r["cluster"] not in latest or key > latest[r["cluster"]]:
            latest[r["cluster"]] = key
    rows = [r for r in rows if (r["at"], r["w0"], r["w1"]) == latest[r["cluster"]]]
    covered = {cl: (max(w0, since), min(w1, until)) for cl, (_at, w0, w1) in latest.items()}
    units: dict[tuple, dict[str, int]] = defaultdict(lambda: {"idle": 0, "demand": 0, "down": 0, "gpus": 0})
    hours = max(1, -(-(until - since) // 3600))
    heat: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * hours)
    for r in rows:
        a, b = max(r["start"], since), min(r["end"], until)
        if b <= a:
            continue
        u = units[(r["cluster"], r["node"], r["minor"], r["gpu_type"], r["partition"])]
        u["gpus"] = max(u["gpus"], r["gpus"])
        share = (b - a) / (r["end"] - r["start"])
        if r["kind"] == "down":
            u["down"] += r["gpus"] * (b - a)
            continue
        u["idle"] += r["gpus"] * (b - a)
        u["demand"] += round(r["demand"] * share)  # a stretch's demand, clipped in proportion
        for h in range((a - since) // 3600, (b - 1 - since) // 3600 + 1):
            lo, hi = max(a, since + h * 3600), min(b, since + (h + 1) * 3600)
            heat[(r["cluster"], r["node"])][h] += gpu_hours(r["gpus"], hi - lo)
    us = [G.Unit(cluster=c, node=n, minor=m, gpu_type=t, partition=p, partitions=frozenset(), gpus=v["gpus"],
                 idle_s=v["idle"], demand_s=min(v["demand"], v["idle"]), down_s=v["down"])
          for (c, n, m, t, p), v in sorted(units.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]
    table = G.table(G.Gaps(since, until, us, [], [], []), "node", book) if us else []
    by_type = G.table(G.Gaps(since, until, us, [], [], []), "gputype", book) if us else []
    nodes = table[:-1]
    top_nodes = nodes[:TOP_NODES]
    several = len({r["Cluster"] for r in nodes}) > 1
    for r in top_nodes:  # a node's name is its cluster's: two clusters may both have a gpu01
        r["Label"] = f"{r['Cluster']}:{r['Node']}" if several else r["Node"]
    return {"nodes": top_nodes, "rest": len(nodes) - len(top_nodes), "total": table[-1] if table else None,
            "by_type": {r["GPUType"]: r for r in by_type[:-1]},
            "heat": {"nodes": [r["Label"] for r in top_nodes], "hours": hours, "since": since,
                     "cells": [heat.get((r["Cluster"], r["Node"]), [0.0] * hours) for r in top_nodes]},
            "covered": covered}


def _recurring(trailing: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]],
               regressed: set[int]) -> list[dict[str, Any]]:
    """The recurring jobs with the most spend in the window (three runs or more over the trailing
    window): each run's end, cost and whether analyze marked it a regression."""
    spend: dict[str, float] = defaultdict(float)
    for j in window:
        spend[j["job"]] += j["cost"]
    runs: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for j in trailing:
        runs[j["job"]].append(j)
    keys = [k for k in sorted(spend, key=lambda k: (-spend[k], k)) if len(runs.get(k, ())) >= 3][:TOP_RECURRING]
    out = []
    for k in keys:
        rs = sorted(runs[k], key=lambda j: (j["end"], j["id"]))
        user, account, name = k.split(":", 2)
        out.append({"key": k, "name": name, "user": user, "account": account, "spend": spend[k],
                    "runs": [{"end": j["end"], "cost": j["cost"], "state": j["state"],
                              "regressed": j["id"] in regressed} for j in rs],
                    "regressions": sum(j["id"] in regressed for j in rs)})
    return out


def _coverage(jobs: Sequence[Mapping[str, Any]], book: PriceBook) -> dict[str, Any]:
    """GPU jobs that ran without sampler data, per node (its first), and GPU types without a price."""
    per_node: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    unsampled = 0
    unknown: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for j in jobs:
        if not j["alloc_gpus"] or j["start"] is None:
            continue
        node = (j["nodelist"] or "").split(",")[0]
        seen = bool(j["sampled"])
        unsampled += not seen
        if node:
            per_node[node][0] += seen
            per_node[node][1] += 1
        rate = book.for_cluster(j["cluster"]).gpu_rate(j["gpu_type"], j["partition"])
        if not rate.known:
            u = unknown[j["gpu_type"] or "(no type)"]
            u[0] += 1
            u[1] += j["gpu_hours"]
    thin = sorted(((n, a, b) for n, (a, b) in per_node.items() if b and a / b < THIN_COVERAGE),
                  key=lambda x: (x[1] / x[2], x[0]))
    return {"gpu_jobs": sum(b for _a, b in per_node.values()), "unsampled": unsampled,
            "thin_nodes": [{"node": n, "sampled": a, "jobs": b} for n, a, b in thin],
            "unknown_types": [{"type": t, "jobs": int(v[0]), "gpu_hours": v[1]} for t, v in sorted(unknown.items())]}


def _watch(reader, since: int, until: int) -> dict[str, Any]:
    """The live watch's actions in [since, until): counts per rule and action, and the cancels."""
    import json

    from piqc_slurm.errors import ParseError
    from piqc_slurm.slurm.parse import parse_elapsed

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    jobs: dict[str, set] = defaultdict(set)
    cancels = []
    for cl, job, node, user, rule, action, at, rsince, usd, detail, started, extra in reader.all(
            _WATCH_SQL, {"since": since, "until": until}):
        counts[rule][action] += 1
        jobs[rule].add((cl, job))
        if action not in ("cancel", "dry-run-cancel"):
            continue
        saved = None
        doc = json.loads(extra) if isinstance(extra, str | bytes) else (extra or {})
        try:
            limit = parse_elapsed(str(doc.get("Timelimit") or ""))
        except (ParseError, ValueError):
            limit = None
        ran = at - (started or at)
        if usd is not None and limit and ran > 0:
            saved = usd / ran * max(limit - ran, 0)
        cancels.append({"cluster": cl, "job_id": job, "node": node, "user": user, "rule": rule,
                        "dry_run": action == "dry-run-cancel", "at": at, "since": rsince, "usd": usd,
                        "saved": saved, "detail": detail or ""})
    return {"rules": {r: {"jobs": len(jobs[r]), **dict(a)} for r, a in sorted(counts.items())},
            "cancels": cancels[:TOP_CANCELS], "cancels_rest": max(len(cancels) - TOP_CANCELS, 0),
            "saved": sum(c["saved"] or 0.0 for c in cancels if not c["dry_run"])}


def build(reader, since: int, until: int, cfg, book: PriceBook, now: int | None = None) -> dict[str, Any]:
    """Everything the digest shows for [since, until) (job End times), as plain data."""
    days = cfg["analyze.recoverable_days"]
    span = until - since
    jobs, trailing, rec_days, total = _window(reader, since, until, book, days)
    pjobs, _ptrail, prec_days, ptotal = _window(reader, since - span, since, book, days)
    head, prev = _headline(total, rec_days), _headline(ptotal, prec_days)
    head["change"] = {k: _change(head[k], prev[k]) for k in ("spend", "waste", "recoverable", "per_completed",
                                                             "jobs")}
    accounts, acc_rest = _top(C.table(jobs, "account")[:-1], TOP_GROUPS, "SpendUSD")
    users, user_rest = _top(C.table(jobs, "user")[:-1], TOP_GROUPS, "SpendUSD")
    params = {"since": since, "until": until}
    top = [dict(zip(("job_ref", "code", "waste", "sentence", "advice", "job_id", "cluster", "name", "user",
                     "account", "gpu_type", "alloc_gpus"), r, strict=True))
           for r in reader.all(_TOP_SQL, {**params, "n": TOP_FINDINGS})]
    sums, priced_n = {}, 0  # per code (findings, dollars); findings with dollars
    for code, n, w, with_dollars in reader.all(_FINDING_SUMS_SQL, params):
        sums[code] = (int(n), float(w or 0.0))
        priced_n += int(with_dollars or 0)
    gaps = _gaps(reader, since, until, book)
    used = _used_hours(reader, since, until, jobs)
    types: dict[str, dict[str, float]] = {}
    for r in C.table(jobs, "gputype")[:-1]:
        if r["Group"] == "cpu":
            continue
        types[r["Group"]] = {"allocated": r["GPUHours"], "used": 0.0, "idle": 0.0, "SpendUSD": r["SpendUSD"]}
    for j in jobs:
        if j["id"] in used and j["gputype"] in types:
            types[j["gputype"]]["used"] += used[j["id"]]
    for t, r in gaps["by_type"].items():
        types.setdefault(t, {"allocated": 0.0, "used": 0.0, "idle": 0.0, "SpendUSD": 0.0})["idle"] = r["IdleGPUHours"]
    regressed = {r[0] for r in reader.all(_REGRESSED_SQL, {"since": min(since, C.trailing_start(reader, until, days)),
                                                          "until": until})}
    return {
        "since": since, "until": until, "generated": int(now or time.time()),
        "clusters": sorted({j["cluster"] for j in jobs}),
        "headline": head, "previous": prev, "thin_days": rec_days < C.THIN_DAYS,
        "top_findings": top,
        "findings_rest": {"count": max(priced_n - len(top), 0),
                          "waste": sum(w for _n, w in sums.values()) - sum(f["waste"] for f in top)},
        "by_code": {c: {"count": n, "waste": w} for c, (n, w) in sorted(sums.items(), key=lambda kv: -kv[1][1])},
        "accounts": accounts, "accounts_rest": acc_rest, "users": users, "users_rest": user_rest,
        "types": dict(sorted(types.items())), "gaps": gaps,
        "recurring": _recurring(trailing, jobs, regressed),
        "coverage": _coverage(jobs, book),
        "watch": _watch(reader, since, until),
        "empty": not jobs, "judged": bool(reader.all(_JUDGED_SQL, params)[0][0]),
        "trailing_days": days,
    }

