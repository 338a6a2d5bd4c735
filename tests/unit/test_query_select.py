"""Which jobs `piqc-slurm sacct` lists and in which order: slurmdbd 22.05's
time-window and state rules, duplicates, sacct's sort, and the access rules
(PrivateData=jobs), on small hand-made stores."""

from __future__ import annotations

import io
import time

import pytest

from piqc_slurm.query.access import Caller, is_admin
from piqc_slurm.query.command import parse_args
from piqc_slurm.query.run import Settings, run
from piqc_slurm.query.select import default_window
from piqc_slurm.store import open_engine
from piqc_slurm.store.jobs import upsert_jobs

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("utc")]

ROOT = Caller(0, "root")
NOW = 1795900000          # 2026-11-28T21:46:40Z
MIDNIGHT = 1795824000     # 2026-11-28T00:00:00Z


def job(raw: int, **kw) -> dict:
    submit = kw.pop("submit", 1000)
    row = dict(cluster="c1", job_id_raw=raw, submit=submit, job_id=str(raw), name=f"j{raw}", user="alice",
               uid=1001, account="acct", partition="gpu", state="COMPLETED", exit_code="0:0", eligible=submit,
               start=submit, end=submit + 10, elapsed=10, alloc_cpus=1, alloc_nodes=1, alloc_gpus=0, nodelist="n1")
    row.update(kw)
    return row


@pytest.fixture
def store(tmp_path):
    def make(*rows: dict) -> str:
        url = f"sqlite:///{tmp_path}/s{len(list(tmp_path.iterdir()))}.db"
        engine = open_engine(url)
        with engine.begin() as conn:
            upsert_jobs(conn, rows)
        engine.dispose()
        return url
    return make


def listed(url: str, *argv: str, caller: Caller = ROOT, settings: Settings | None = None, now: int = NOW,
           fields: str = "jobid") -> list[str]:
    buf = io.BytesIO()
    run(parse_args(["-P", "-n", "-o", fields, *argv]), url=url, settings=settings or Settings(), caller=caller,
        out=buf, env={}, now=now)
    return buf.getvalue().decode().splitlines()


# --- defaults -------------------------------------------------------------------------
def test_default_windows_are_sacct_s():
    d = dict(now=NOW, midnight=MIDNIGHT)
    assert default_window(start=None, end=None, jobs=False, states=False, **d) == (MIDNIGHT, NOW)
    assert default_window(start=None, end=None, jobs=True, states=False, **d) == (0, NOW)
    assert default_window(start=None, end=None, jobs=False, states=True, **d) == (NOW, NOW)
    assert default_window(start=500, end=None, jobs=False, states=True, **d) == (500, 500)
    assert default_window(start=None, end=None, jobs=True, states=True, **d) == (0, NOW)
    assert default_window(start=500, end=None, jobs=True, states=True, **d) == (500, 500)
    assert default_window(start=None, end=900, jobs=False, states=False, **d) == (MIDNIGHT, 900)


def test_without_s_the_window_starts_at_local_midnight(store, monkeypatch):
    url = store(job(1, submit=MIDNIGHT - 100, end=MIDNIGHT - 1), job(2, submit=MIDNIGHT - 100, end=MIDNIGHT),
                job(3, submit=MIDNIGHT + 5, end=MIDNIGHT + 6 * 3600))
    assert listed(url) == ["2", "3"]
    monkeypatch.setenv("TZ", "America/New_York")          # midnight there is 05:00Z
    time.tzset()
    assert listed(url) == ["3"]


# --- the time-window rule (no -s) --------------------------------------------------------
def test_window_rule_eligible_before_e_and_not_ended_before_s(store):
    url = store(
        job(1, submit=400, eligible=500, end=999),                 # ended before S
        job(2, submit=400, eligible=500, end=1000),                # ended exactly at S: in
        job(3, submit=1900, eligible=1999, start=1999, end=5000),  # eligible just before E
        job(4, submit=1900, eligible=2000, start=2000, end=5000),  # eligible exactly at E: out
        job(5, submit=1400, eligible=1500, start=1500, end=None, state="RUNNING"),   # running: in
        job(6, submit=1400, eligible=None, start=None, end=None, state="PENDING"),   # held: never eligible
        job(7, submit=800, eligible=900, start=2500, end=3000),    # Start plays no part
        job(8, submit=1500, eligible=1600, start=None, end=None, state="PENDING"),   # pending, eligible
    )
    assert listed(url, "-S", "uts1000", "-E", "uts2000") == ["2", "7", "5", "8", "3"]
    # pending and running jobs are in every later window; the held one only with -j
    assert listed(url, "-S", "uts1000000", "-E", "uts1000100") == ["5", "8"]
    assert listed(url, "-j", "6") == ["6"]
    assert "6" not in listed(url, "-S", "uts1000000")


def test_with_jobs_the_rule_is_on_submit(store):
    url = store(job(1, submit=1000, eligible=None, start=None, end=1500, state="CANCELLED"),
                job(2, submit=3000, end=3100))
    assert listed(url, "-j", "1,2") == ["1", "2"]
    assert listed(url, "-j", "1,2", "-E", "uts2000") == ["1"]            # submit < E
    assert listed(url, "-j", "1,2", "-E", "uts1000") == []
    assert listed(url, "-j", "1,2", "-S", "uts1600") == ["2"]            # not ended before S
    assert listed(url, "-j", "1,2", "-S", "uts1500") == ["1", "2"]


def test_jobs_match_raw_ids_arrays_and_het_leaders(store):
    url = store(job(10, job_id="10_3", array_job_id=10, array_task_id=3),
                job(14, job_id="10_1", array_job_id=10, array_task_id=1),
                job(15, job_id="10_2", array_job_id=10, array_task_id=2),
                job(20, job_id="20+0", het_job_id=20, het_job_offset=0),
                job(21, job_id="20+1", het_job_id=20, het_job_offset=1),
                job(30))
    assert listed(url, "-j", "10") == ["10_1", "10_2", "10_3"]
    assert listed(url, "-j", "14") == ["10_1"]
    assert listed(url, "-j", "10_2,30") == ["30", "10_2"]     # same submit: plain jobs first
    assert listed(url, "-j", "10_[2-3]") == ["10_2", "10_3"]
    assert listed(url, "-j", "20") == ["20+0", "20+1"]
    assert listed(url, "-j", "20+1") == ["20+1"]
    assert listed(url, "-X", "-j", "30.batch") == ["30"]  # sacct -X: the step's allocation line
    assert listed(url, "-j", "30.batch") == []            # without -X only that step (none stored here)


# --- states ------------------------------------------------------------------------------
def test_state_rules(store):
    url = store(
        job(1, submit=100, start=200, end=1500, state="COMPLETED"),
        job(2, submit=100, start=200, end=2000, state="COMPLETED"),     # end == E: in (BETWEEN)
        job(3, submit=100, start=200, end=999, state="FAILED"),         # ended before S
        job(4, submit=100, start=500, end=None, state="RUNNING"),
        job(5, submit=100, start=1800, end=2500, state="COMPLETED"),    # ran in the window, ended after
        job(6, submit=100, eligible=1200, start=None, end=None, state="PENDING"),
        job(7, submit=100, eligible=150, start=None, end=1100, state="CANCELLED", state_by=0),
        job(8, submit=100, eligible=None, start=None, end=1100, state="CANCELLED"),
        job(9, submit=100, start=300, end=1600, state="OUT_OF_MEMORY", exit_code="0:125"),
    )
    w = ["-S", "uts1000", "-E", "uts2000"]
    assert listed(url, "-s", "CD", *w) == ["1", "2"]
    assert listed(url, "-s", "cd,f,oom", *w) == ["1", "2", "9"]
    assert listed(url, "-s", "R", *w) == ["1", "2", "4", "5", "9"]
    assert listed(url, "-s", "PD", *w) == ["5", "6", "7"]
    assert listed(url, "-s", "CA", *w) == ["7", "8"]
    assert listed(url, "-s", "CA", *w, fields="state") == ["CANCELLED by 0", "CANCELLED"]
    # -s without -S: the instant now; with -S but no -E: the instant -S
    assert listed(url, "-s", "R") == ["4"]
    assert listed(url, "-s", "CD") == []
    assert listed(url, "-s", "CD", "-S", "uts1500") == ["1"]
    # -s with -j: from the epoch
    assert listed(url, "-s", "CD,F", "-j", "1,3,4") == ["1", "3"]


# --- duplicates, revoked, order ------------------------------------------------------------
def test_newest_matching_record_of_a_job_id_unless_duplicates(store):
    url = store(job(5, submit=100, start=110, end=200, state="REQUEUED", exit_code="0:0"),
                job(5, submit=300, start=310, end=400, state="COMPLETED"),
                job(6, submit=100, end=150, state="REVOKED"),
                job(7, submit=100, end=150, state="RESIZING"), job(7, submit=120, end=160))
    w = ["-S", "uts1", "-E", "uts1000"]
    assert listed(url, *w, fields="jobid,state") == ["7|RESIZING", "7|COMPLETED", "5|COMPLETED"]
    assert listed(url, "-D", *w, fields="jobid,state") == ["5|REQUEUED", "6|REVOKED", "7|RESIZING",
                                                            "7|COMPLETED", "5|COMPLETED"]
    # the newest record that MATCHES: a window before the requeue shows the first one
    assert listed(url, "-S", "uts1", "-E", "uts250", fields="jobid,state") == ["5|REQUEUED", "7|RESIZING",
                                                                              "7|COMPLETED"]


def test_order_is_submit_then_array_then_task_then_raw_id(store):
    url = store(job(9, submit=50), job(14, submit=50, job_id="10_1", array_job_id=10, array_task_id=1),
                job(10, submit=50, job_id="10_3", array_job_id=10, array_task_id=3),
                job(11, submit=50), job(3, submit=60), job(100, submit=40))
    assert listed(url, "-S", "uts1", "-E", "uts1000") == ["100", "9", "11", "10_1", "10_3", "3"]


# --- other filters -------------------------------------------------------------------------
def test_accounts_partitions_and_clusters(store):
    url = store(job(1, account="research", partition="gpu"), job(2, account="other", partition="GPU"),
                job(3, cluster="c2", account="research"))
    w = ["-S", "uts1", "-E", "uts5000"]
    assert listed(url, "-A", "RESEARCH", *w) == ["1", "3"]
    assert listed(url, "-r", "gpu", *w) == ["1", "2", "3"]
    assert listed(url, *w, settings=Settings(cluster="c1")) == ["1", "2"]
    assert listed(url, "-M", "c2", *w, settings=Settings(cluster="c1")) == ["3"]
    assert listed(url, "-M", "all", *w, settings=Settings(cluster="c1")) == ["1", "2", "3"]
    assert listed(url, "-L", *w, settings=Settings(cluster="c1")) == ["1", "2", "3"]


def test_running_jobs_elapsed_runs_until_now(store):
    url = store(job(1, submit=NOW - 4000, start=NOW - 3700, end=None, state="RUNNING", elapsed=5))
    assert listed(url, "-j", "1", fields="elapsed,end,elapsedraw") == ["01:01:40|Unknown|3700"]


# --- access ----------------------------------------------------------------------------------
def test_admins():
    assert is_admin(ROOT, [], [])
    assert not is_admin(Caller(1002, "bob", frozenset({"bob"})), ["root"], [])
    assert is_admin(Caller(1002, "bob"), ["bob"], [])
    assert is_admin(Caller(1002, "bob", frozenset({"bob", "hpcadm"})), [], ["hpcadm"])


def test_non_admins_see_only_their_own_jobs(store):
    url = store(job(1, user="alice"), job(2, user="bob", uid=1002), job(3, user="carol", uid=1003))
    w = ["-S", "uts1", "-E", "uts5000"]
    bob = Caller(1002, "bob", frozenset({"bob"}))
    assert listed(url, *w, caller=bob) == ["2"]
    assert listed(url, "-a", *w, caller=bob) == ["2"]
    assert listed(url, "-u", "alice", *w, caller=bob) == []
    assert listed(url, "-u", "alice,bob", *w, caller=bob) == ["2"]
    assert listed(url, "-j", "1,2,3", caller=bob) == ["2"]
    assert listed(url, "--json-fields", "-j", "1", caller=bob) == ['{"jobs": []}']


def test_admins_see_everyone_when_asked(store):
    url = store(job(1, user="alice"), job(2, user="bob", uid=1002), job(3, user="carol", uid=64321))
    w = ["-S", "uts1", "-E", "uts5000"]
    adm = Caller(1002, "bob", frozenset({"bob", "hpcadm"}))
    by_group = Settings(admin_users=["root"], admin_groups=["hpcadm"])
    assert listed(url, *w, caller=adm, settings=by_group) == ["2"]          # as sacct: own jobs by default
    assert listed(url, "-a", *w, caller=adm, settings=by_group) == ["1", "2", "3"]
    assert listed(url, "-u", "carol", *w, caller=adm, settings=by_group) == ["3"]
    assert listed(url, "-j", "1,3", caller=adm, settings=by_group) == ["1", "3"]
    assert listed(url, *w) == ["1", "2", "3"]                                # root: everyone
    assert listed(url, "-u", "64321", *w) == ["3"]                           # a uid without a local name


def test_empty_store_prints_the_header_only(store):
    url = store()
    buf = io.BytesIO()
    run(parse_args([]), url=url, settings=Settings(), caller=ROOT, out=buf, env={}, now=NOW)
    assert buf.getvalue() == (b"JobID           JobName  Partition    Account  AllocCPUS      State ExitCode \n"
                              b"------------ ---------- ---------- ---------- ---------- ---------- -------- \n")
