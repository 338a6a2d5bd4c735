-- piqc-slurm reporting views: the everyday questions about GPU use, in SQL.
-- This file is for SQLite (and the source of sql/views.postgresql.sql, which
-- sql/generate.py derives from it: a line ending in "-- postgresql: <text>"
-- becomes <text> there, and each view is created security_invoker).
-- Load it after the schema exists, and again after each migration:
--     sqlite3 /var/lib/piqc/piqc.db < sql/views.sql

-- Conventions: times are epoch seconds, UTC, as in the tables; "day" is the
-- UTC day a job ended (text 'YYYY-MM-DD' on SQLite, a DATE on PostgreSQL:
-- `day >= '2026-11-01'` works on both). "user" is a reserved word on
-- PostgreSQL: always quote it (unquoted, `SELECT user` is the current role).
-- GPU-hours are allocation-based: alloc_gpus * elapsed / 3600.

-- Prices per GPU-hour for v_job_cost. Not part of the migrated schema (the
-- application prices jobs through piqc_slurm/usage/prices.py: stored
-- scenario prices, [prices], the catalog, [partition_prices], the fallback);
-- a site that wants cost in SQL fills this table with one row per gres type
-- it uses, `default` included:
--     INSERT INTO gpu_prices VALUES ('h100', 4.00), ('default', 2.00);
-- gpu_type is matched exactly against jobs.gpu_type (Slurm's gres type): no
-- catalog aliases, no partition prices. For GPU jobs whose gres types are all
-- listed, cost_usd equals CostUSD (a test checks it); CPU-only jobs are 0 here.
CREATE TABLE IF NOT EXISTS gpu_prices (
    gpu_type TEXT PRIMARY KEY,
    usd_per_gpu_hour DOUBLE PRECISION NOT NULL
);

DROP VIEW IF EXISTS v_job_cost;
DROP VIEW IF EXISTS v_gpu_hours_by_account_day;
DROP VIEW IF EXISTS v_gpu_hours_by_user_day;
DROP VIEW IF EXISTS v_idle_gpus;
DROP VIEW IF EXISTS v_job_gpu;

-- One row per job allocation. From the sampler (all node summaries joined to
-- the job, one row per GPU per summary): gpus_sampled, gpus_used (did work:
-- active for at least usage.min_active_share of its sampled time), gpus_idle
-- (did no work), util_avg, mem_peak_mib, energy_kwh.
-- idle_gpu_hours = gpus_idle * elapsed / 3600.
-- util_avg is GPUUtilAvg's definition (piqc_slurm/usage/utilization.py; a
-- test checks the two agree): each sampled GPU's mean utilization, weighted
-- by its sampled seconds over the longest-sampled GPU of its node summary,
-- summed, divided by the ALLOCATED GPU count (at least the sampled count),
-- so an idle or unsampled allocated GPU counts as 0%.
-- A job without sampler data has gpus_sampled 0 and NULL util_avg.
CREATE VIEW v_job_gpu AS
SELECT j.id AS job_ref,
       j.cluster,
       j.job_id,
       j.job_id_raw,
       j.name,
       j."user",
       j.account,
       j.partition,
       j.state,
       j.start,
       j."end",
       j.elapsed,
       j.alloc_gpus,
       j.gpu_type,
       CAST(j.alloc_gpus * j.elapsed AS DOUBLE PRECISION) / 3600 AS gpu_hours,
       COALESCE(g.gpus_sampled, 0) AS gpus_sampled,
       COALESCE(g.gpus_used, 0) AS gpus_used,
       COALESCE(g.gpus_idle, 0) AS gpus_idle,
       CAST(COALESCE(g.gpus_idle, 0) * j.elapsed AS DOUBLE PRECISION) / 3600 AS idle_gpu_hours,
       g.util_sum / (CASE WHEN j.alloc_gpus > g.gpus_sampled THEN j.alloc_gpus ELSE g.gpus_sampled END)
           AS util_avg,
       g.mem_peak_mib,
       g.energy_kwh
  FROM jobs j
  LEFT JOIN (
        SELECT s.job_ref,
               COUNT(*) AS gpus_sampled,
               SUM(CASE WHEN u.did_work THEN 1 ELSE 0 END) AS gpus_used,
               SUM(CASE WHEN NOT u.did_work THEN 1 ELSE 0 END) AS gpus_idle,
               COALESCE(SUM(u.util_mean * (CASE WHEN m.longest <= 0 OR u.seconds >= m.longest THEN 1.0
                                                ELSE u.seconds / m.longest END)), 0) AS util_sum,
               MAX(u.mem_used_max_mib) AS mem_peak_mib,
               SUM(u.energy_j) / 3600000 AS energy_kwh
          FROM node_summaries s
          JOIN gpu_usage u ON u.summary_id = s.id
          JOIN (SELECT summary_id, MAX(seconds) AS longest FROM gpu_usage GROUP BY summary_id) m
            ON m.summary_id = s.id
         WHERE s.job_ref IS NOT NULL
         GROUP BY s.job_ref
       ) g ON g.job_ref = j.id;

-- One row per GPU that did no work in a job (gpu_usage.did_work = false),
-- with its job (NULL job columns while the summary is not yet joined to a
-- job by an ingest; "user" then comes from the summary).
-- idle_gpu_hours: the job's elapsed time, or the GPU's sampled seconds
-- when the job is not known yet, in hours.
CREATE VIEW v_idle_gpus AS
SELECT u.id AS gpu_usage_id,
       s.id AS summary_id,
       s.job_ref,
       s.cluster,
       s.job_id_raw,
       j.job_id,
       COALESCE(j."user", s."user") AS "user",
       j.account,
       j.partition,
       j.state,
       j.start,
       j."end",
       j.elapsed,
       j.gpu_type,
       s.node,
       u.minor,
       u.uuid,
       u.name AS gpu_name,
       u.seconds,
       u.util_max,
       u.mem_used_max_mib,
       u.process_seconds,
       CAST(COALESCE(j.elapsed, u.seconds) AS DOUBLE PRECISION) / 3600 AS idle_gpu_hours
  FROM gpu_usage u
  JOIN node_summaries s ON s.id = u.summary_id
  LEFT JOIN jobs j ON j.id = s.job_ref
 WHERE u.did_work = FALSE;

-- GPU jobs that ended, per UTC day of their end, cluster and user.
CREATE VIEW v_gpu_hours_by_user_day AS
SELECT date(v."end", 'unixepoch') AS day,  -- postgresql: SELECT CAST(to_timestamp(v."end") AT TIME ZONE 'UTC' AS DATE) AS day,
       v.cluster,
       v."user",
       COUNT(*) AS gpu_jobs,
       SUM(v.gpu_hours) AS gpu_hours,
       SUM(v.idle_gpu_hours) AS idle_gpu_hours
  FROM v_job_gpu v
 WHERE v."end" IS NOT NULL AND v.alloc_gpus > 0
 GROUP BY day, v.cluster, v."user";

-- GPU jobs that ended, per UTC day of their end, cluster and account.
CREATE VIEW v_gpu_hours_by_account_day AS
SELECT date(v."end", 'unixepoch') AS day,  -- postgresql: SELECT CAST(to_timestamp(v."end") AT TIME ZONE 'UTC' AS DATE) AS day,
       v.cluster,
       v.account,
       COUNT(*) AS gpu_jobs,
       SUM(v.gpu_hours) AS gpu_hours,
       SUM(v.idle_gpu_hours) AS idle_gpu_hours
  FROM v_job_gpu v
 WHERE v."end" IS NOT NULL AND v.alloc_gpus > 0
 GROUP BY day, v.cluster, v.account;

-- Cost per job from gpu_prices (the job's gpu_type, else the 'default' row;
-- NULL cost when neither is there). idle_usd: what its idle GPUs cost.
CREATE VIEW v_job_cost AS
SELECT v.job_ref,
       v.cluster,
       v.job_id,
       v."user",
       v.account,
       v.partition,
       v.state,
       v.start,
       v."end",
       v.alloc_gpus,
       v.gpu_type,
       v.gpu_hours,
       v.idle_gpu_hours,
       COALESCE(p.usd_per_gpu_hour, d.usd_per_gpu_hour) AS usd_per_gpu_hour,
       v.gpu_hours * COALESCE(p.usd_per_gpu_hour, d.usd_per_gpu_hour) AS cost_usd,
       v.idle_gpu_hours * COALESCE(p.usd_per_gpu_hour, d.usd_per_gpu_hour) AS idle_usd
  FROM v_job_gpu v
  LEFT JOIN gpu_prices p ON p.gpu_type = v.gpu_type
  LEFT JOIN gpu_prices d ON d.gpu_type = 'default';
