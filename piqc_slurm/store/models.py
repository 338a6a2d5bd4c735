"""The store's tables (SQLAlchemy 2). Same models on SQLite and PostgreSQL;
the schema is created and changed only by Alembic migrations (store/migrations),
and sql/ holds the DDL they produce for each backend.

Identity: a job allocation is (cluster, job_id_raw, submit time): Slurm
reuses job ids after a database reset or a wrap-around, and a requeued job
keeps its id. A sampler summary is (cluster, job_id_raw, restart_count, node).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One job allocation as sacct reports it, its step lines in `steps`."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(64))
    job_id_raw: Mapped[int] = mapped_column(BigInteger)
    submit: Mapped[int] = mapped_column(BigInteger)  # epoch seconds, UTC
    job_id: Mapped[str] = mapped_column(String(64))  # as sacct prints it: 1234, 1234_5, 1234+0
    array_job_id: Mapped[int | None] = mapped_column(BigInteger)
    array_task_id: Mapped[int | None] = mapped_column(BigInteger)
    het_job_id: Mapped[int | None] = mapped_column(BigInteger)
    het_job_offset: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(64), default="")
    uid: Mapped[int | None] = mapped_column(Integer)
    account: Mapped[str] = mapped_column(String(64), default="")
    partition: Mapped[str] = mapped_column(String(64), default="")
    qos: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(32), default="")
    state_by: Mapped[int | None] = mapped_column(Integer)  # "CANCELLED by 123"
    exit_code: Mapped[str] = mapped_column(String(16), default="")
    derived_exit_code: Mapped[str] = mapped_column(String(16), default="")
    eligible: Mapped[int | None] = mapped_column(BigInteger)
    start: Mapped[int | None] = mapped_column(BigInteger)
    end: Mapped[int | None] = mapped_column(BigInteger)
    elapsed: Mapped[int] = mapped_column(BigInteger, default=0)  # seconds
    timelimit: Mapped[int | None] = mapped_column(BigInteger)  # seconds
    alloc_cpus: Mapped[int] = mapped_column(Integer, default=0)
    alloc_nodes: Mapped[int] = mapped_column(Integer, default=0)
    alloc_mem_mib: Mapped[int | None] = mapped_column(BigInteger)
    alloc_gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(32))
    alloc_tres: Mapped[str] = mapped_column(Text, default="")
    nodelist: Mapped[str] = mapped_column(Text, default="")
    work_dir: Mapped[str] = mapped_column(Text, default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    # 0003: evidence for the analysis
    exit_signal: Mapped[int | None] = mapped_column(Integer)  # the job's signal, else its batch step's
    restarts: Mapped[int | None] = mapped_column(Integer)  # SLURM_JOB_RESTART_COUNT (sacct 22.05 has none)
    total_cpu_s: Mapped[float | None] = mapped_column(Float)  # sacct TotalCPU, seconds
    req_gpus: Mapped[int | None] = mapped_column(Integer)  # ReqTRES gres/gpu: a pending job's demand
    # 0007: the rest of sacct's fields, verbatim (slurm/records.py JobRecord.extra), and the step lines
    # (StepRecord.to_doc: {"step", "submit", "eligible", "start", "end", "v": {field: text}})
    extra: Mapped[dict | None] = mapped_column(JSON)
    steps: Mapped[list | None] = mapped_column(JSON)

    summaries: Mapped[list[NodeSummary]] = relationship(back_populates="job")

    __table_args__ = (
        UniqueConstraint("cluster", "job_id_raw", "submit", name="uq_jobs_identity"),
        Index("ix_jobs_user_end", "user", "end"),
        Index("ix_jobs_end", "end"),
        Index("ix_jobs_start", "start"),
        Index("ix_jobs_job_id_raw", "job_id_raw"),  # 0008: sacct -j by index (uq_jobs_identity leads with cluster)
        Index("ix_jobs_array_job_id", "array_job_id"),  # 0008: sacct -j finds an array's tasks
        Index("ix_jobs_het_job_id", "het_job_id"),  # and a heterogeneous job's components
    )


# 0009: sacct -A filters on lower(account) (sacct matches accounts case-blind) within a time window
Index("ix_jobs_account_end", func.lower(Job.account), Job.end)


class NodeSummary(Base):
    """One sampler summary: one run of a job on one node (piqc-summary/1)."""

    __tablename__ = "node_summaries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(64))
    job_id_raw: Mapped[int] = mapped_column(BigInteger)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # whole seconds
    job_ref: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    user: Mapped[str] = mapped_column(String(64), default="")
    monitor: Mapped[str] = mapped_column(String(16), default="on")
    interval: Mapped[float | None] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float)
    ended: Mapped[float | None] = mapped_column(Float)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    partial_reason: Mapped[str | None] = mapped_column(Text)
    nvml_ok: Mapped[bool | None] = mapped_column(Boolean)
    nvml_error: Mapped[str | None] = mapped_column(Text)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    doc: Mapped[dict] = mapped_column(JSON)  # the summary as delivered

    job: Mapped[Job | None] = relationship(back_populates="summaries")
    gpus: Mapped[list[GpuUsage]] = relationship(back_populates="summary", cascade="all, delete-orphan")

    __table_args__ = (
        # The start is part of the identity: Slurm may reuse a job id after a database reset.
        UniqueConstraint("cluster", "job_id_raw", "restart_count", "node", "started_at", name="uq_summaries_run"),
        Index("ix_summaries_job_ref", "job_ref"),
        Index("ix_summaries_user", "user"),  # row-level security filters on it (sql/postgres-rls.sql)
    )


class GpuUsage(Base):
    """One GPU of one node summary, by device minor and UUID."""

    __tablename__ = "gpu_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    summary_id: Mapped[int] = mapped_column(ForeignKey("node_summaries.id", ondelete="CASCADE"))
    minor: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(String(96))
    name: Mapped[str | None] = mapped_column(String(128))
    gpu_type: Mapped[str | None] = mapped_column(String(32))
    mem_total_mib: Mapped[float | None] = mapped_column(Float)
    lost: Mapped[bool] = mapped_column(Boolean, default=False)
    did_work: Mapped[bool | None] = mapped_column(Boolean)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    util_mean: Mapped[float | None] = mapped_column(Float)
    util_p50: Mapped[float | None] = mapped_column(Float)
    util_p95: Mapped[float | None] = mapped_column(Float)
    util_max: Mapped[float | None] = mapped_column(Float)
    active_seconds: Mapped[float | None] = mapped_column(Float)
    mem_util_mean: Mapped[float | None] = mapped_column(Float)
    mem_used_max_mib: Mapped[float | None] = mapped_column(Float)
    mem_used_mean_mib: Mapped[float | None] = mapped_column(Float)
    power_mean_w: Mapped[float | None] = mapped_column(Float)
    energy_j: Mapped[float | None] = mapped_column(Float)
    process_seconds: Mapped[float | None] = mapped_column(Float)
    job_process_seconds: Mapped[float | None] = mapped_column(Float)
    util_hist: Mapped[list | None] = mapped_column(JSON)  # 0003: ms per utilization percent, 101 bins
    # 0004: power against its limit, and NVML GPM activity (0..1; absent where the GPU has no GPM)
    power_limit_w: Mapped[float | None] = mapped_column(Float)
    power_frac_mean: Mapped[float | None] = mapped_column(Float)
    sm_active_mean: Mapped[float | None] = mapped_column(Float)
    sm_active_p95: Mapped[float | None] = mapped_column(Float)
    sm_occupancy_mean: Mapped[float | None] = mapped_column(Float)
    sm_occupancy_p95: Mapped[float | None] = mapped_column(Float)
    tensor_active_mean: Mapped[float | None] = mapped_column(Float)
    tensor_active_p95: Mapped[float | None] = mapped_column(Float)
    dram_active_mean: Mapped[float | None] = mapped_column(Float)
    dram_active_p95: Mapped[float | None] = mapped_column(Float)

    summary: Mapped[NodeSummary] = relationship(back_populates="gpus")
    __table_args__ = (Index("ix_gpu_usage_summary", "summary_id"),)


class GpuTimeline(Base):
    """One GPU's timeline in one summary, packed: the bins (60 s by default, for charts) from t0
    every `step` seconds, `n` of them, as one compressed blob of util, memory and power arrays
    (one row per summary and GPU, not per bin). The format, and the only code that writes or
    reads `data`: piqc_slurm/store/timeline.py (pack, unpack). The table keeps the name
    `timeline` it had (0001-0007: one row per GPU per bin), so grants and policies name it alike."""

    __tablename__ = "timeline"
    summary_id: Mapped[int] = mapped_column(ForeignKey("node_summaries.id", ondelete="CASCADE"),
                                            primary_key=True)
    minor: Mapped[int] = mapped_column(Integer, primary_key=True)
    t0: Mapped[int] = mapped_column(BigInteger)  # epoch seconds of the first bin
    step: Mapped[int] = mapped_column(Integer)  # seconds between bins (0: a single bin)
    n: Mapped[int] = mapped_column(Integer)  # bins
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SpoolReplay(Base):
    """Which spooled summary files this store has taken in (per store, so a
    shared spool read by two stores is replayed into each)."""

    __tablename__ = "spool_replays"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    at: Mapped[int] = mapped_column(BigInteger)


class Watermark(Base):
    """Ingest progress per cluster and source."""

    __tablename__ = "watermarks"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    until: Mapped[int] = mapped_column(BigInteger)


class Finding(Base):
    """One waste finding on one job (filled by `piqc-slurm analyze`): a stable
    code (DESIGN.md: IDLE_GPUS, UNDER_BATCHED, WRONG_TIER, FAILED_SPEND,
    NO_SAMPLES), the dollars it wastes, the evidence, and the advice."""

    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_ref: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    waste_usd: Mapped[float] = mapped_column(Float, default=0.0)
    evidence: Mapped[dict] = mapped_column(JSON)
    advice_gpus: Mapped[int | None] = mapped_column(Integer)
    advice_tier: Mapped[str | None] = mapped_column(String(32))
    analyzed_at: Mapped[int] = mapped_column(BigInteger)
    # 0004
    sentence: Mapped[str] = mapped_column(Text, default="", server_default="")  # the evidence, for a person
    advice: Mapped[str] = mapped_column(Text, default="", server_default="")    # what to change
    est_elapsed: Mapped[int | None] = mapped_column(BigInteger)  # seconds the job would need on the advice
    est_cost_usd: Mapped[float | None] = mapped_column(Float)    # its cost there
    confidence: Mapped[str | None] = mapped_column(String(16))   # high, medium, low

    __table_args__ = (
        UniqueConstraint("job_ref", "code", name="uq_findings_job_code"),
        Index("ix_findings_code", "code"),
    )


class AnalysisRun(Base):
    """One `piqc-slurm analyze` over a window: the jobs whose End is in [since, until) have been
    judged with these thresholds (a job there with no findings row was found clean)."""

    __tablename__ = "analysis_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    since: Mapped[int] = mapped_column(BigInteger)
    until: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[int] = mapped_column(BigInteger)
    jobs: Mapped[int] = mapped_column(Integer)
    findings: Mapped[int] = mapped_column(Integer)
    thresholds: Mapped[dict] = mapped_column(JSON)


class JobGpu(Base):
    """Which GPUs (device minors, and UUIDs where NVML saw them) a job held on
    one node, from its summary: `nvml` when the sampler read the device,
    `prolog` when only SLURM_JOB_GPUS is known (NVML down, sampler off). A
    job with no summary has no rows here: its GPU indices are unknown."""

    __tablename__ = "job_gpus"
    summary_id: Mapped[int] = mapped_column(ForeignKey("node_summaries.id", ondelete="CASCADE"), primary_key=True)
    minor: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    uuid: Mapped[str | None] = mapped_column(String(96))
    source: Mapped[str] = mapped_column(String(16))


class NodeGpu(Base):
    """The GPU inventory: each GPU of each node, by device minor, with its type
    (and UUID and NVML name where a summary saw it). Sources: `summary`,
    `scontrol` (Gres= of `scontrol show node`, read at ingest: counts and
    types only) and `scenario` (simulate)."""

    __tablename__ = "node_gpus"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    minor: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu_type: Mapped[str | None] = mapped_column(String(32))
    uuid: Mapped[str | None] = mapped_column(String(96))
    name: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    seen_at: Mapped[int] = mapped_column(BigInteger)


class PriceOverride(Base):
    """Prices a scenario (or a site, by SQL) sets for one cluster: kind `type`
    (USD per GPU-hour of a GPU type; key `default` for unknown types) or
    `partition`. They come first in the lookup (usage/prices.py)."""

    __tablename__ = "price_overrides"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    usd: Mapped[float] = mapped_column(Float)


class CatalogOverride(Base):
    """GPU catalog entries a scenario overrides or adds for one cluster (the
    keys of data/gpus.json's types: mem_gib, bf16_tflops, mem_bw_gbs ...)."""

    __tablename__ = "catalog_overrides"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict] = mapped_column(JSON)


class IdleGap(Base):
    """One stretch of GPU time no job held (filled by `piqc-slurm gaps`, read by the
    digest): on one GPU (`minor`) of a node, or, where the node's GPUs are known by count
    only (a job there without job_gpus rows), on `gpus` GPUs of one type of the node
    (`minor` NULL). `kind` idle: `demand_gpu_seconds` of it pending jobs able to use it
    asked for; `kind` down: not held while a node event (down, drain) was open, `reason`
    its state and reason. The rows of one computation share window_start/window_end and
    replace those of an earlier run over the same clusters and window
    (piqc_slurm/analyze/gaps.py has the rules)."""

    __tablename__ = "idle_gaps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    minor: Mapped[int | None] = mapped_column(Integer)  # NULL: per node, by counts
    gpu_type: Mapped[str | None] = mapped_column(String(32))
    partition: Mapped[str | None] = mapped_column(String(64))  # the node's primary partition
    kind: Mapped[str] = mapped_column(String(8))  # idle, down
    start: Mapped[int] = mapped_column(BigInteger)  # epoch seconds, UTC
    end: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[int] = mapped_column(Integer)  # idle (or down) GPUs throughout the stretch
    demand_gpu_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    window_start: Mapped[int] = mapped_column(BigInteger)
    window_end: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_idle_gaps_window", "cluster", "window_start", "window_end"),
        Index("ix_idle_gaps_start", "start"),
    )


class UserNotice(Base):
    """One note `piqc-slurm notify-users --send` mailed to a user: when, for which window of job
    End times and how much waste. It keeps a user to at most one note per [notify] period_days.
    `cluster` is the config's cluster the note covered (empty: every cluster in the store)."""

    __tablename__ = "user_notices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(64), default="")
    user: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[int] = mapped_column(BigInteger)  # epoch seconds, UTC
    window_start: Mapped[int] = mapped_column(BigInteger)
    window_end: Mapped[int] = mapped_column(BigInteger)
    waste_usd: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_user_notices_user_sent", "user", "sent_at"),)


class WatchAction(Base):
    """One thing the sampler's live watch did while a job ran (sampler/oncall.py; the summary's
    "watch" list): a rule's notice, its recovery, a warning or cancel of the cancel policy (or a dry
    run of one). Rewritten with its summary; the digest lists a window's by `at`."""

    __tablename__ = "watch_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    summary_id: Mapped[int] = mapped_column(ForeignKey("node_summaries.id", ondelete="CASCADE"))
    cluster: Mapped[str] = mapped_column(String(64))
    job_id_raw: Mapped[int] = mapped_column(BigInteger)
    node: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(64), default="")
    rule: Mapped[str] = mapped_column(String(32))      # IDLE_GPUS, IDLE_GPU, UNDER_BATCHED
    action: Mapped[str] = mapped_column(String(24))    # notice, recovered, warn, cancel, dry-run-warn, dry-run-cancel
    at: Mapped[int] = mapped_column(BigInteger)        # epoch seconds
    since: Mapped[int] = mapped_column(BigInteger)     # when the rule's condition began
    usd: Mapped[float | None] = mapped_column(Float)   # the job's cost so far then
    detail: Mapped[str | None] = mapped_column(Text)   # evidence, reason or result, as a person reads it

    __table_args__ = (Index("ix_watch_actions_at", "at"), Index("ix_watch_actions_summary", "summary_id"))
