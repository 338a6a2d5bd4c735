"""Which jobs `piqc-slurm sacct` lists, in which order: slurmdbd's rules as SQL.

From Slurm 22.05.8 (slurmdb_job_cond_def_start_end in src/common/slurmdb_defs.c,
setup_job_cond_limits and _state_time_string in
src/plugins/accounting_storage/mysql/as_mysql_jobacct_process.c,
_sort_desc_submit_time in src/sacct/options.c):

Default window. Without -j or -s: -S is 00:00 today (local), -E now. With -j
and no -s: -S is the epoch, -E now. With -s and no -j: -S is now, -E is -S.
With -s and -j: -S the epoch, -E is -S if -S was given, else now.

Selection. Without -s, a job is listed when it was eligible (Eligible set)
before -E and had not ended before -S: `eligible < E and (end >= S or no
end)`; with -j the rule is `submit < E and (end >= S or no end)` instead
(jobs never eligible, such as held ones, are listed then). With -s the window
only acts through each state's rule:
  PD  eligible, eligible < E, and (started after S; or ended unstarted after S;
      or still pending)
  R   started, started before E, and (ended after S or still running)
  S   (approximation: the store has no suspend intervals) state SUSPENDED,
      started before E, not ended before S
  CD CA F TO NF PR BF DL OOM RQ RS RV: in that state and ended in [S, E]
  other flag states: in that state
Without -D, REVOKED jobs are hidden, and of several records with the same
cluster and JobIDRaw (requeues, id reuse) only the newest one that matches
is listed (a RESIZING one is always listed).

Order. Submit, then array job id (0 for non-array jobs), array task id
(NO_VAL for none), JobIDRaw, as sacct sorts its list: array tasks come after
the plain jobs submitted with them, in task order, though the last task
keeps the array's (lowest) raw id.

Indexes. `-u USER` (or a non-admin caller) with a window uses ix_jobs_user_end;
a window alone ix_jobs_end; the duplicate check uq_jobs_identity. `-j`
matches job_id_raw, array_job_id and het_job_id, each indexed (migration
0008: ix_jobs_job_id_raw, ix_jobs_array_job_id, ix_jobs_het_job_id), so the
OR is answered from the three indexes instead of a scan of the table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from piqc_slurm.query.jobids import JobSel
from piqc_slurm.query.states import ENDED, OTHER, PENDING, RUNNING, SUSPENDED, state_class

NO_VAL = 0xFFFFFFFE

# The jobs columns the command reads, in this order (JobRow's slots).
COLUMNS: tuple[str, ...] = (
    "id", "cluster", "job_id_raw", "submit", "job_id", "array_job_id", "array_task_id", "het_job_id",
    "het_job_offset", "name", "user", "uid", "account", "partition", "qos", "state", "state_by",
    "exit_code", "derived_exit_code", "eligible", "start", "end", "elapsed", "alloc_cpus",
    "alloc_nodes", "alloc_gpus", "gpu_type", "alloc_tres", "nodelist", "work_dir", "comment",
)

# Read only when asked for (build_query's `more`): the verbatim fields and the step lines.
MORE_COLUMNS: tuple[str, ...] = ("extra", "steps")


@dataclass
class Selection:
    """What was asked (after defaults and access rules). None = no restriction."""

    start: int
    end: int
    clusters: list[str] | None = None
    users: list[str] | None = None      # stored user names
    uids: list[int] | None = None       # stored UIDs (numeric -u without a local name)
    owner: str | None = None            # PrivateData: only this user's jobs (non-admin caller)
    accounts: list[str] | None = None
    partitions: list[str] | None = None
    jobs: list[JobSel] | None = None
    states: list[str] | None = None
    duplicates: bool = False


def default_window(*, start: int | None, end: int | None, jobs: bool, states: bool, now: int,
                   midnight: int) -> tuple[int, int]:
    """(-S, -E) after sacct's defaults (slurmdb_job_cond_def_start_end)."""
    if states:
        if start is None and not jobs:
            start = now
        if start and end is None:
            end = start
    elif not jobs and start is None:
        start = midnight
    return (start or 0), (end if end is not None else now)


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, name: str, value: Any) -> str:
        if isinstance(value, str) and not value.isascii():
            value = _storable(value)
        self.values[name] = value
        return f":{name}"

    def many(self, prefix: str, values: Iterable[Any]) -> str:
        return ", ".join(self.add(f"{prefix}{i}", v) for i, v in enumerate(values))


def _storable(text: str) -> str:
    """A value from the command line as the store can bind it: argv bytes that are not UTF-8
    arrive as surrogates (\udcff), which no driver encodes; they become U+FFFD, as ingest stores
    such bytes of a job name or account."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside the escape range (not from argv)
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _runs(values: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct ints as (first, last) runs of consecutive values: 1-3,7 -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _q(alias: str, col: str) -> str:
    return f'{alias}."{col}"'


def _state_clause(a: str, state: str, p: _Params, i: int) -> str:
    st = p.add(f"st{i}", state)
    col = lambda c: _q(a, c)  # noqa: E731
    cls = state_class(state)
    if cls == PENDING:
        return (f"({col('eligible')} > 0 AND (({col('start')} > 0 AND :S < {col('start')}) OR "
                f"(({col('start')} IS NULL OR {col('start')} = 0) AND {col('end')} > 0 AND :S < {col('end')}) OR "
                f"(({col('start')} IS NULL OR {col('start')} = 0) AND ({col('end')} IS NULL OR {col('end')} = 0) "
                f"AND {col('state')} = {st})) AND :E > {col('eligible')})")
    if cls == RUNNING:
        return (f"({col('start')} > 0 AND (:S < {col('end')} OR (({col('end')} IS NULL OR {col('end')} = 0) "
                f"AND {col('state')} = {st})) AND :E > {col('start')})")
    if cls == SUSPENDED:
        return (f"({col('state')} = {st} AND {col('start')} > 0 AND {col('start')} <= :E AND "
                f"({col('end')} IS NULL OR {col('end')} = 0 OR {col('end')} >= :S))")
    if cls == ENDED:
        return f"({col('state')} = {st} AND {col('end')} > 0 AND {col('end')} BETWEEN :S AND :E)"
    assert cls == OTHER
    return f"({col('state')} = {st})"


def where(sel: Selection, a: str, p: _Params) -> list[str]:
    """The conditions (ANDed) for table alias `a`; the same for the main query and the duplicate check."""
    col = lambda c: _q(a, c)  # noqa: E731
    conds: list[str] = []
    p.add("S", sel.start)
    p.add("E", sel.end)
    if sel.clusters is not None:
        conds.append(f"{col('cluster')} IN ({p.many('cl', sel.clusters)})" if sel.clusters else "1 = 0")
    if sel.owner is not None:
        conds.append(f"{col('user')} = {p.add('owner', sel.owner)}")
    if sel.users is not None or sel.uids is not None:
        alts = []
        if sel.users:
            alts.append(f"{col('user')} IN ({p.many('us', sel.users)})")
        if sel.uids:
            alts.append(f"{col('uid')} IN ({p.many('uid', sel.uids)})")
        conds.append("(" + " OR ".join(alts) + ")" if alts else "1 = 0")
    if sel.accounts is not None:
        conds.append(f"lower({col('account')}) IN ({p.many('acct', [x.lower() for x in sel.accounts])})")
    if sel.partitions is not None:
        conds.append(f"lower({col('partition')}) IN ({p.many('part', [x.lower() for x in sel.partitions])})")
    if sel.jobs:
        plain = [j.job for j in sel.jobs if j.task is None and j.het is None]
        alts = []
        if plain:
            ids = p.many("job", plain)
            alts.append(f"{col('job_id_raw')} IN ({ids}) OR {col('het_job_id')} IN ({ids}) OR "
                        f"{col('array_job_id')} IN ({ids})")
        # one term per array job (its tasks as runs: `1234_[1-5000]` is one BETWEEN, not 5000 ORs,
        # which SQLite refuses past an expression depth of 1000) and per het job
        tasks: dict[int, list[int]] = {}
        hets: dict[int, list[int]] = {}
        for j in sel.jobs:
            if j.task is not None:
                tasks.setdefault(j.job, []).append(j.task)
            elif j.het is not None:
                hets.setdefault(j.job, []).append(j.het)
        for i, (job, ids) in enumerate(tasks.items()):
            runs = []
            for k, (lo, hi) in enumerate(_runs(ids)):
                if lo == hi:
                    runs.append(f"{col('array_task_id')} = {p.add(f'at{i}_{k}', lo)}")
                else:
                    runs.append(f"{col('array_task_id')} BETWEEN {p.add(f'at{i}_{k}', lo)} AND "
                                f"{p.add(f'au{i}_{k}', hi)}")
            alts.append(f"({col('array_job_id')} = {p.add(f'aj{i}', job)} AND ({' OR '.join(runs)}))")
        for i, (job, offsets) in enumerate(hets.items()):
            alts.append(f"({col('het_job_id')} = {p.add(f'hj{i}', job)} AND "
                        f"{col('het_job_offset')} IN ({p.many(f'ho{i}_', dict.fromkeys(offsets))}))")
        conds.append("(" + " OR ".join(alts) + ")")
    # "not ended before S": the store keeps an unset End as NULL (slurmdbd: 0); with S = 0 every job
    # passes, and leaving the test out lets the planner use the -j indexes instead of ix_jobs_end.
    not_ended_before = f"({col('end')} >= :S OR {col('end')} IS NULL)" if sel.start > 0 else None
    if sel.states:
        conds.append("(" + " OR ".join(_state_clause(a, s, p, i) for i, s in enumerate(sel.states)) + ")")
    elif sel.jobs:
        conds.append(f"{col('submit')} < :E")
        if not_ended_before:
            conds.append(not_ended_before)
    else:
        conds.append(f"{col('eligible')} > 0 AND {col('eligible')} < :E")
        if not_ended_before:
            conds.append(not_ended_before)
    if not sel.duplicates:
        conds.append(f"{col('state')} <> 'REVOKED'")
    return conds


def build_query(sel: Selection, more: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """The SELECT listing the jobs of `sel`, in sacct's order: COLUMNS, then the `more` columns
    (MORE_COLUMNS: the JSON ones, read only when a field needs them).

    Only constant identifiers and `:name` placeholders are put into the text;
    every value asked for is a bound parameter."""
    p = _Params()
    conds = where(sel, "j", p)
    if not sel.duplicates:
        inner = " AND ".join(where(sel, "d", p))
        conds.append('(j."state" = \'RESIZING\' OR NOT EXISTS (SELECT 1 FROM jobs d '  # noqa: S608
                     'WHERE d."cluster" = j."cluster" AND d."job_id_raw" = j."job_id_raw" '
                     f'AND d."submit" > j."submit" AND {inner}))')
    bad = [c for c in more if c not in MORE_COLUMNS]
    if bad:
        raise ValueError(f"not a column to add: {bad}")
    cols = ", ".join(_q("j", c) for c in COLUMNS + tuple(more))
    order = (f'j."submit", COALESCE(j."array_job_id", 0), COALESCE(j."array_task_id", {NO_VAL}), '
             'j."job_id_raw", j."cluster"')
    sql = f"SELECT {cols} FROM jobs j WHERE {' AND '.join(conds)} ORDER BY {order}"  # noqa: S608
    return sql, p.values
