-- piqc-slurm: example queries on the views (sql/views.sql), for SQLite and
-- PostgreSQL alike. They take a window of job end times, in epoch seconds
-- (UTC), as the named parameters :since and :until; e.g. the last 7 days:
--   SQLite:      sqlite3 /var/lib/piqc/piqc.db
--                  .parameter set :until "unixepoch('now')"
--                  .parameter set :since "unixepoch('now', '-7 days')"
--                  .read sql/queries.sql
--   PostgreSQL:  psql "$URL" -v until="$(date +%s)" -v since="$(date -d '7 days ago' +%s)" \
--                  -f sql/queries.sql
-- Money is rounded to cents: ROUND(CAST(x AS NUMERIC), 2) (PostgreSQL has
-- no ROUND of a double precision to n places).

-- 1. Top 10 users by idle GPU-hours (GPUs allocated that did no work).
SELECT v."user",
       COUNT(*) AS idle_gpus,
       ROUND(CAST(SUM(v.idle_gpu_hours) AS NUMERIC), 2) AS idle_gpu_hours
  FROM v_idle_gpus v
 WHERE v."end" >= :since AND v."end" < :until
 GROUP BY v."user"
 ORDER BY SUM(v.idle_gpu_hours) DESC, v."user"
 LIMIT 10;

-- 2. GPU-hours, idle share and cost per account (cost needs gpu_prices).
SELECT c.account,
       COUNT(*) AS gpu_jobs,
       ROUND(CAST(SUM(c.gpu_hours) AS NUMERIC), 2) AS gpu_hours,
       ROUND(CAST(100 * SUM(c.idle_gpu_hours) / NULLIF(SUM(c.gpu_hours), 0) AS NUMERIC), 1) AS idle_pct,
       ROUND(CAST(SUM(c.cost_usd) AS NUMERIC), 2) AS cost_usd,
       ROUND(CAST(SUM(c.idle_usd) AS NUMERIC), 2) AS idle_usd
  FROM v_job_cost c
 WHERE c."end" >= :since AND c."end" < :until AND c.alloc_gpus > 0
 GROUP BY c.account
 ORDER BY SUM(c.gpu_hours) DESC;

-- 3. Jobs that held GPUs of which some did no work, worst first.
SELECT v.job_id, v."user", v.account, v.alloc_gpus, v.gpus_used, v.gpus_idle,
       ROUND(CAST(v.idle_gpu_hours AS NUMERIC), 2) AS idle_gpu_hours
  FROM v_job_gpu v
 WHERE v."end" >= :since AND v."end" < :until AND v.gpus_idle > 0
 ORDER BY v.idle_gpu_hours DESC, v.job_id
 LIMIT 20;

-- 4. GPU time spent by jobs that did not complete, per user and state.
SELECT v."user", v.state, COUNT(*) AS jobs,
       ROUND(CAST(SUM(v.gpu_hours) AS NUMERIC), 2) AS gpu_hours
  FROM v_job_gpu v
 WHERE v."end" >= :since AND v."end" < :until AND v.alloc_gpus > 0 AND v.state <> 'COMPLETED'
 GROUP BY v."user", v.state
 ORDER BY SUM(v.gpu_hours) DESC, v."user", v.state;

-- 5. GPU jobs without sampler data (hooks not wired, sampler crashed).
SELECT v.job_id, v."user", v.partition, v.alloc_gpus, v.state
  FROM v_job_gpu v
 WHERE v."end" >= :since AND v."end" < :until AND v.alloc_gpus > 0 AND v.gpus_sampled = 0
 ORDER BY v."end", v.job_id;

-- 6. Low average utilization (under 30 %) on jobs that ran over an hour.
SELECT v.job_id, v."user", v.alloc_gpus, ROUND(CAST(v.util_avg AS NUMERIC), 1) AS util_avg,
       ROUND(CAST(v.gpu_hours AS NUMERIC), 2) AS gpu_hours
  FROM v_job_gpu v
 WHERE v."end" >= :since AND v."end" < :until AND v.elapsed > 3600 AND v.util_avg < 30
 ORDER BY v.gpu_hours DESC, v.job_id;

-- 7. The last 30 days with GPU jobs, per account (the daily view; no window).
SELECT d.day, d.account, d.gpu_jobs,
       ROUND(CAST(d.gpu_hours AS NUMERIC), 2) AS gpu_hours,
       ROUND(CAST(d.idle_gpu_hours AS NUMERIC), 2) AS idle_gpu_hours
  FROM v_gpu_hours_by_account_day d
 WHERE d.day >= (SELECT MIN(r.day) FROM (SELECT DISTINCT day FROM v_gpu_hours_by_account_day
                                          ORDER BY day DESC LIMIT 30) r)
 ORDER BY d.day DESC, d.account;
