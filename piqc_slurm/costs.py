"""`piqc-slurm costs`: spend, GPU-hours and cost per completed job, per group, sreport style.

A job counts in the window that holds its End (finished allocations only:
a running job is priced when it ends). Per job, cost and GPU-hours are
usage.cost's (the figures `sacct -o CostUSD` prints); completed and failed
are usage.outcome's. Per group:

  Jobs                   finished allocations (a job cancelled while pending counts, at $0)
  Completed              COMPLETED ones
  GPUHours               allocated GPU-hours
  SpendUSD               sum of the jobs' cost
  FailedSpendUSD         cost of jobs that started and did not complete
  CostPerCompletedUSD    SpendUSD / Completed: failed attempts included, so a
                         recurring job (--by job: same name + user + account)
                         that needs two tries a night costs what it really costs
  WasteUSD               the jobs' waste: the stored findings' dollars for jobs
                         `analyze` has judged; for the others the cost share of
                         GPUs that did no work (as sacct's WasteUSD)
  IdleGPUsUSD ... RegressionUSD (with -o)  that waste by finding code
  RecoverableDays (with -o)  the days of data RecoverablePerYearUSD rests on
  RecoverablePerYearUSD  WasteUSD of the trailing window that ends at -E (28
                         days, or from the store's first job end if later)
                         x 365 / that window's days
Sums are of unrounded figures, rounded half-up to the cent once, when printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from piqc_slurm.errors import UsageError
from piqc_slurm.usage.cost import gpu_hours, job_cost, money_text, parts_of
from piqc_slurm.usage.outcome import completed, failed
from piqc_slurm.usage.prices import PriceBook
from piqc_slurm.usage.utilization import idle_share_of

FIELDS = ("Group", "Jobs", "Completed", "GPUHours", "SpendUSD", "FailedSpendUSD", "CostPerCompletedUSD",
          "WasteUSD", "RecoverablePerYearUSD")
# Waste by finding code (with -o), from the stored findings: the same dollars WasteUSD sums.
CATEGORY_FIELDS = {"IdleGPUsUSD": "IDLE_GPUS", "WrongTierUSD": "WRONG_TIER", "InputBoundUSD": "INPUT_BOUND",
                   "UnderBatchedUSD": "UNDER_BATCHED", "FailedWasteUSD": "FAILED_SPEND",
                   "RegressionUSD": "RUNTIME_REGRESSION"}
EXTRA_FIELDS = (*CATEGORY_FIELDS, "RecoverableDays")
THIN_DAYS = 7
BY = ("user", "account", "partition", "gputype", "job")
TRAILING_DAYS = 28

_CODE_SUMS = ", ".join(f'SUM(CASE WHEN "code" = \'{c}\' THEN "waste_usd" ELSE 0 END) AS "{c}"'
                       for c in CATEGORY_FIELDS.values())
_SQL = (
    'SELECT j."id", j."cluster", j."name", j."user", j."account", j."partition", j."state", j."start", '  # noqa: S608
    'j."end", j."elapsed", j."alloc_gpus", j."gpu_type", j."alloc_tres", j."alloc_cpus", j."nodelist", '
    'g."sampled", g."idle", '
    'CASE WHEN EXISTS (SELECT 1 FROM analysis_runs r WHERE j."end" >= r."since" AND j."end" < r."until") '
    'THEN 1 ELSE 0 END AS "judged", '
    + ", ".join(f'f."{c}"' for c in CATEGORY_FIELDS.values()) + ' '  # noqa: S608 - constant names
    'FROM jobs j LEFT JOIN (SELECT s."job_ref", COUNT(*) AS "sampled", '
    'SUM(CASE WHEN u."did_work" THEN 0 WHEN u."did_work" IS NULL THEN 0 ELSE 1 END) AS "idle" '
    'FROM node_summaries s JOIN gpu_usage u ON u."summary_id" = s."id" JOIN jobs w ON w."id" = s."job_ref" '
    'WHERE w."end" >= :since AND w."end" < :until GROUP BY s."job_ref") g ON g."job_ref" = j."id" '
    f'LEFT JOIN (SELECT x."job_ref", {_CODE_SUMS} FROM findings x JOIN jobs w ON w."id" = x."job_ref" '
    'WHERE w."end" >= :since AND w."end" < :until GROUP BY x."job_ref") f ON f."job_ref" = j."id" '
    'WHERE j."end" IS NOT NULL AND j."end" >= :since AND j."end" < :until{extra}')
# The subqueries read only the window's jobs' GPU rows and findings (over the whole store they made
# a day's digest of a million-job store wait ~30 s on the server).
_KEYS = ("id", "cluster", "name", "user", "account", "partition", "state", "start", "end", "elapsed",
         "alloc_gpus", "gpu_type", "alloc_tres", "alloc_cpus", "nodelist", "sampled", "idle", "judged",
         *CATEGORY_FIELDS.values())


def parse_fields(spec: str | None) -> list[str]:
    if not spec:
        return list(FIELDS)
    by_lower = {f.lower(): f for f in (*FIELDS, *EXTRA_FIELDS)}
    out = []
    for name in spec.split(","):
        f = by_lower.get(name.strip().lower())
        if f is None:
            raise UsageError(f"costs: unknown field {name.strip()!r} (fields: {', '.join((*FIELDS, *EXTRA_FIELDS))})")
        out.append(f)
    return out


def load_jobs(reader, since: int, until: int, users: Sequence[str] | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"since": since, "until": until}
    extra = ""
    if users is not None:
        params.update({f"u{i}": u for i, u in enumerate(users)})
        extra = ' AND j."user" IN (' + ", ".join(f":u{i}" for i in range(len(users))) + ")" if users else " AND 1=0"
    return [dict(zip(_KEYS, r, strict=True)) for r in reader.all(_SQL.format(extra=extra), params)]


def priced(jobs: Iterable[Mapping[str, Any]], book: PriceBook) -> list[dict[str, Any]]:
    """Each job with its cost, GPU-hours, waste, completed and failed flags."""
    out = []
    for j in jobs:
        started = j["start"] is not None
        elapsed = j["elapsed"] or 0
        alloc = j["alloc_gpus"] or 0
        prices = book.for_cluster(j["cluster"])
        gtype = j["gpu_type"]
        cost = job_cost(parts_of(alloc, gtype, j["alloc_tres"] or ""), elapsed, prices,
                        partition=j["partition"], cpus=j["alloc_cpus"] or 0)
        by_code = {c: float(j[c] or 0.0) for c in CATEGORY_FIELDS.values()}
        if j["judged"] or any(by_code.values()):      # the stored findings' dollars
            waste = sum(by_code.values())
        else:                                          # not analysed yet: the idle GPUs' share
            waste = cost.usd * (idle_share_of(j["idle"] or 0, j["sampled"] or 0, alloc) or 0.0)
            by_code = {**dict.fromkeys(by_code, 0.0), "IDLE_GPUS": waste}
        canon = prices.catalog.canonical(gtype) if gtype else None
        out.append({**j, **{f"w_{c}": w for c, w in by_code.items()}, "cost": cost.usd,
                    "gpu_hours": gpu_hours(alloc, elapsed), "waste": waste,
                    "completed": completed(j["state"]), "failed": failed(j["state"], started),
                    "gputype": (canon or gtype or ("unknown" if alloc else "cpu")),
                    "job": f"{j['user']}:{j['account']}:{j['name']}"})
    return out


def group_key(by: str | None):
    if by is None:
        return lambda j: "total"
    if by not in BY:
        raise UsageError(f"costs: --by must be one of {', '.join(BY)}, got {by!r}")
    return lambda j: j[by] if by in ("gputype", "job") else (j[by] or "")


def table(jobs: Sequence[Mapping[str, Any]], by: str | None, trailing: Sequence[Mapping[str, Any]] | None = None,
          trailing_days: float = TRAILING_DAYS) -> list[dict[str, Any]]:
    """Rows per group (sorted by spend, largest first), then the total row."""
    key = group_key(by)
    groups: dict[str, dict[str, Any]] = {}
    rec: dict[str, float] = {}
    for j in trailing or ():
        k = key(j)
        rec[k] = rec.get(k, 0.0) + j["waste"]
        rec["\0total"] = rec.get("\0total", 0.0) + j["waste"]

    def acc(g: dict[str, Any], j: Mapping[str, Any]) -> None:
        g["Jobs"] += 1
        g["Completed"] += bool(j["completed"])
        g["GPUHours"] += j["gpu_hours"]
        g["SpendUSD"] += j["cost"]
        g["FailedSpendUSD"] += j["cost"] if j["failed"] else 0.0
        g["WasteUSD"] += j["waste"]
        for fld, code in CATEGORY_FIELDS.items():
            g[fld] += j[f"w_{code}"]

    def empty(name: str) -> dict[str, Any]:
        return {"Group": name, "Jobs": 0, "Completed": 0, "GPUHours": 0.0, "SpendUSD": 0.0, "FailedSpendUSD": 0.0,
                "WasteUSD": 0.0, **dict.fromkeys(CATEGORY_FIELDS, 0.0), "RecoverableDays": trailing_days}

    total = empty("total")
    for j in jobs:
        if by is not None:
            acc(groups.setdefault(key(j), empty(key(j))), j)
        acc(total, j)
    rows = sorted(groups.values(), key=lambda g: (-g["SpendUSD"], g["Group"]))
    if by is not None:
        for g in rows:
            g["Recoverable"] = rec.get(g["Group"], 0.0)
    total["Recoverable"] = rec.get("\0total", 0.0)
    for g in [*rows, total]:
        g["CostPerCompletedUSD"] = g["SpendUSD"] / g["Completed"] if g["Completed"] else None
        g["RecoverablePerYearUSD"] = (g.pop("Recoverable") * 365 / trailing_days) if trailing is not None \
            and trailing_days > 0 else None
    return [*rows, total]


def text_of(field: str, row: Mapping[str, Any]) -> str:
    v = row.get(field)
    if field in ("Group",):
        return str(v)
    if field in ("Jobs", "Completed"):
        return str(v)
    if field == "RecoverableDays":
        return f"{v:.1f}"
    if field == "GPUHours":
        return f"{v:.2f}"
    return money_text(v)


def render(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], mode: str, header: bool) -> str:
    """mode: 'P' (sreport -P: '|' between fields), 'p' (each field followed by '|'), 'table'."""
    cells = [[text_of(f, r) for f in fields] for r in rows]
    if mode in ("P", "p"):
        end = "|" if mode == "p" else ""
        lines = (["|".join(fields) + end] if header else []) + ["|".join(c) + end for c in cells]
        return "\n".join(lines) + "\n"
    widths = [max([len(f), *(len(c[i]) for c in cells)]) for i, f in enumerate(fields)]
    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                            strict=True)))
    out = [line(fields), " ".join("-" * w for w in widths)] if header else []
    out += [line(c) for c in cells]
    return "\n".join(out) + "\n"


def first_end(reader) -> int | None:
    rows = reader.all('SELECT MIN(j."end") FROM jobs j', {})
    return rows[0][0] if rows and rows[0][0] is not None else None


def trailing_start(reader, until: int, days: int) -> int:
    """Where the trailing window of RecoverablePerYearUSD begins: `days` before `until`, or the
    store's first job end if that is later (never after `until`)."""
    first = first_end(reader)
    return min(max(until - days * 86400, first if first is not None else until), until)
