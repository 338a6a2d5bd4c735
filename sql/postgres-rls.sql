-- piqc-slurm on PostgreSQL: read-only self-service, each user seeing only
-- their own jobs (row-level security). See sql/README.md for the login roles.
--
-- Run in the piqc database as a superuser (it creates roles, and changes
-- tables the store's role owns), after the migrations and
-- sql/views.postgresql.sql, and again after every reload of the views:
--     sudo -u postgres psql -d piqc -v ON_ERROR_STOP=1 -f sql/postgres-rls.sql
-- Idempotent.
--
-- Roles (cluster-wide, NOLOGIN groups; grant them to login roles):
--   piqc_reader  SELECT on jobs, node_summaries, gpu_usage, timeline, findings,
--                job_gpus, the views and gpu_prices; sees only rows whose
--                "user" is its login name (current_user).
--   piqc_admin   a piqc_reader that sees every row (the [access] admins of
--                piqc.toml), and the site-wide tables no user owns: idle_gaps,
--                node_gpus, analysis_runs, price_overrides, catalog_overrides,
--                user_notices (who was sent a note, when, for how much). Policies, not BYPASSRLS: a role attribute is not
--                inherited by members, a policy applies to them.
-- The owner of the tables (the role piqc-slurm ingests with) is not subject
-- to these policies (RLS is enabled, not forced), so ingest is unaffected.
-- Neither group can write: no INSERT, UPDATE or DELETE is granted.

DO $$
BEGIN
    IF current_setting('server_version_num')::int < 150000 THEN
        RAISE EXCEPTION 'PostgreSQL % is too old for sql/postgres-rls.sql: views need security_invoker (15+), or they would show every row', current_setting('server_version');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'piqc_reader') THEN
        CREATE ROLE piqc_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'piqc_admin') THEN
        CREATE ROLE piqc_admin NOLOGIN;
    END IF;
END
$$;

GRANT piqc_reader TO piqc_admin;

GRANT SELECT ON jobs, node_summaries, gpu_usage, timeline, findings, job_gpus, gpu_prices TO piqc_reader;
-- Idle GPU time, the node inventory and the analyses are the site's, not a user's: admins only.
GRANT SELECT ON idle_gaps, node_gpus, analysis_runs, price_overrides, catalog_overrides, user_notices,
    watch_actions TO piqc_admin;
GRANT SELECT ON v_job_gpu, v_idle_gpus, v_gpu_hours_by_user_day, v_gpu_hours_by_account_day, v_job_cost
    TO piqc_reader;

-- Views must check the querying user's rights and policies, not their
-- owner's (the owner bypasses RLS). views.postgresql.sql creates them so;
-- this repeats it for views created any other way.
ALTER VIEW v_job_gpu SET (security_invoker = true);
ALTER VIEW v_idle_gpus SET (security_invoker = true);
ALTER VIEW v_gpu_hours_by_user_day SET (security_invoker = true);
ALTER VIEW v_gpu_hours_by_account_day SET (security_invoker = true);
ALTER VIEW v_job_cost SET (security_invoker = true);

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE node_summaries ENABLE ROW LEVEL SECURITY;
ALTER TABLE gpu_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE timeline ENABLE ROW LEVEL SECURITY;
ALTER TABLE findings ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_gpus ENABLE ROW LEVEL SECURITY;

-- jobs: one's own ("user" is a reserved word: quoted).
DROP POLICY IF EXISTS piqc_reader_own ON jobs;
CREATE POLICY piqc_reader_own ON jobs FOR SELECT TO piqc_reader
    USING ("user" = current_user);
DROP POLICY IF EXISTS piqc_admin_all ON jobs;
CREATE POLICY piqc_admin_all ON jobs FOR SELECT TO piqc_admin
    USING (true);

-- node_summaries: one's own by the sampler's record of the user, or joined
-- to one of one's jobs (the subquery sees only those: jobs' policies apply).
DROP POLICY IF EXISTS piqc_reader_own ON node_summaries;
CREATE POLICY piqc_reader_own ON node_summaries FOR SELECT TO piqc_reader
    USING ("user" = current_user OR job_ref IN (SELECT id FROM jobs));
DROP POLICY IF EXISTS piqc_admin_all ON node_summaries;
CREATE POLICY piqc_admin_all ON node_summaries FOR SELECT TO piqc_admin
    USING (true);

-- gpu_usage and timeline: through their summary. The subquery is itself
-- filtered by node_summaries' policies, so this one policy serves readers
-- and admins alike.
DROP POLICY IF EXISTS piqc_reader_own ON gpu_usage;
CREATE POLICY piqc_reader_own ON gpu_usage FOR SELECT TO piqc_reader
    USING (summary_id IN (SELECT id FROM node_summaries));
DROP POLICY IF EXISTS piqc_reader_own ON timeline;
CREATE POLICY piqc_reader_own ON timeline FOR SELECT TO piqc_reader
    USING (summary_id IN (SELECT id FROM node_summaries));
DROP POLICY IF EXISTS piqc_reader_own ON job_gpus;
CREATE POLICY piqc_reader_own ON job_gpus FOR SELECT TO piqc_reader
    USING (summary_id IN (SELECT id FROM node_summaries));

-- findings: through their job (jobs' policies filter the subquery).
DROP POLICY IF EXISTS piqc_reader_own ON findings;
CREATE POLICY piqc_reader_own ON findings FOR SELECT TO piqc_reader
    USING (job_ref IN (SELECT id FROM jobs));
