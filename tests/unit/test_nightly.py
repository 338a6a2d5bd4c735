"""`piqc-slurm nightly` (piqc_slurm/nightly.py): the lock, the steps' exit codes and
log lines, the no-new-data path, the plan's windows. The real steps run against an
SQLite store in tmp_path with stub sacct/scontrol/sacctmgr first on PATH (the live
test cluster is never asked); expected values are written by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from piqc_slurm import nightly as N
from piqc_slurm.commands import nightly as nightly_cmd

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPLETED = REPO / "tests" / "fixtures" / "sacct" / "22.05.8" / "completed.ingest.txt"
PY = sys.executable


# --- helpers ---------------------------------------------------------------------------------------

def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "piqc.toml"
    cfg.write_text(f'cluster = "piqc"\nsyslog = false\nspool_dir = "{tmp_path}/spool"\nshared_spool_dir = ""\n')
    return cfg


def stub_slurm(tmp_path: Path, monkeypatch, sacct_output: Path | None = None) -> Path:
    """sacct (prints sacct_output, or what real sacct prints for no job: the header line alone),
    scontrol (fails), sacctmgr (no events), first on PATH; each records its argv in bin/calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = bin_dir / "calls.log"
    if sacct_output is None:
        sacct_output = tmp_path / "no-jobs.txt"
        header = next(ln for ln in COMPLETED.read_text().splitlines() if ln.startswith("JobID\x1f"))
        sacct_output.write_text(header + "\n")
    body = {
        "sacct": f"cat '{sacct_output}'",
        "scontrol": "echo 'scontrol: error: stubbed out' >&2; exit 1",
        "sacctmgr": "true",
    }
    for name, cmd in body.items():
        p = bin_dir / name
        p.write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{log}'\n{cmd}\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def invoke(tmp_path: Path, *args: str, db: str | None = None):
    g = click.Group()
    nightly_cmd.register(g)
    url = db or f"sqlite:///{tmp_path}/store.db"
    if db is None:  # as `piqc-slurm db init` at install: nightly's ingest creates no store
        from piqc_slurm.store.db import open_engine

        open_engine(url, mode="create").dispose()
    return CliRunner().invoke(g, ["nightly", *args], obj={"config_path": str(write_config(tmp_path)), "db": url})


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("piqc-slurm nightly: ")]


def py_step(name: str, code: str) -> N.Step:
    return N.Step(name, [PY, "-c", code], N.EXIT_CODES[name])


class Collect(N.Log):
    def __init__(self):
        self.got: list[str] = []
        super().__init__(use_syslog=False, write=self.got.append)


def gone(pid: int, wait: float = 5.0) -> bool:
    """The process exited within `wait` seconds (a zombie nobody reaped counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


OK_LINE = re.compile(r"^piqc-slurm nightly: (\w+) ok in \d+\.\ds$")


# --- the lock --------------------------------------------------------------------------------------

def test_a_second_run_while_another_process_holds_the_lock_exits_75_at_once(tmp_path, monkeypatch):
    lock = tmp_path / "nightly.lock"
    holder = subprocess.Popen(
        [PY, "-c", "import fcntl, os, sys, time\n"
                   f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
                   "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'%d\\n' % os.getpid())\n"
                   "print('ready', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        stub_slurm(tmp_path, monkeypatch)
        t0 = time.monotonic()
        r = invoke(tmp_path, "--lock", str(lock), "--no-digest")
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 75, r.output
    assert took < 5
    assert lines(r.stderr) == [f"piqc-slurm nightly: another nightly run holds {lock} (pid {holder.pid})"]
    assert not (tmp_path / "bin" / "calls.log").exists()  # no step ran


def test_a_second_nightly_run_while_the_first_runs_exits_75_and_the_first_completes(tmp_path):
    lock = str(tmp_path / "nightly.lock")
    first_log, second_log = Collect(), Collect()
    slow = N.Plan([py_step("ingest", "import time; time.sleep(3)")])
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", N.run(slow, lock=lock, log=first_log)))
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not Path(lock).exists():
        time.sleep(0.05)
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = N.run(N.Plan([py_step("ingest", "pass")]), lock=lock, log=second_log)
    assert rc == 75 and time.monotonic() - t0 < 2
    assert second_log.got == [f"piqc-slurm nightly: another nightly run holds {lock} (pid {os.getpid()})"]
    t.join(20)
    assert result["rc"] == 0
    assert OK_LINE.match(first_log.got[0]) and first_log.got[0].startswith("piqc-slurm nightly: ingest ok")
    # released: the next run gets the lock
    assert N.run(N.Plan([py_step("ingest", "pass")]), lock=lock, log=Collect()) == 0


def test_a_symlinked_lock_path_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    lock = tmp_path / "nightly.lock"
    lock.symlink_to(target)
    stub_slurm(tmp_path, monkeypatch)
    r = invoke(tmp_path, "--lock", str(lock), "--no-digest")
    assert r.exit_code == 2
    assert lines(r.stderr) == [f"piqc-slurm nightly: refusing the lock file {lock}: it is a symbolic link"]
    assert target.read_text() == "keep me\n"
    assert not (tmp_path / "bin" / "calls.log").exists()


def test_a_dangling_symlink_is_refused_and_nothing_is_created(tmp_path):
    lock = tmp_path / "nightly.lock"
    lock.symlink_to(tmp_path / "made-by-the-lock")
    with pytest.raises(N.LockError, match="symbolic link"):
        N.acquire_lock(str(lock))
    assert not (tmp_path / "made-by-the-lock").exists()


def test_the_lock_file_is_created_0644_whatever_the_umask_and_holds_the_pid(tmp_path):
    lock = tmp_path / "nightly.lock"
    old = os.umask(0o077)
    try:
        fd = N.acquire_lock(str(lock))
    finally:
        os.umask(old)
    try:
        assert lock.stat().st_mode & 0o777 == 0o644
        assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


# --- steps: exit codes and log lines ------------------------------------------------------------

FAIL = "import sys; sys.stderr.write('piqc-slurm: first words\\npiqc-slurm: last words\\n'); sys.exit(7)"


@pytest.mark.parametrize("failing, code", [("ingest", 10), ("analyze", 11), ("gaps", 12), ("digest", 13)])
def test_the_first_failing_step_stops_the_run_with_its_code(tmp_path, failing, code):
    marker = tmp_path / "ran"
    names = ["ingest", "analyze", "gaps", "digest"]
    steps = []
    for name in names:
        body = FAIL if name == failing else f"open({str(marker)!r}, 'a').write({name!r} + '\\n')"
        steps.append(py_step(name, body))
    log = Collect()
    assert N.run(N.Plan(steps), lock=str(tmp_path / "l"), log=log) == code
    before = names[: names.index(failing)]
    assert [OK_LINE.match(x).group(1) for x in log.got[:-1]] == before
    assert log.got[-1] == f"piqc-slurm nightly: {failing} failed (exit 7): piqc-slurm: last words"
    ran = marker.read_text().split() if marker.exists() else []
    assert ran == before  # nothing after the failing step ran


def test_all_steps_ok_is_exit_0_with_a_line_each_and_a_closing_line(tmp_path):
    log = Collect()
    plan = N.Plan([py_step(n, "print('table on stdout')") for n in ("ingest", "analyze", "gaps")])
    assert N.run(plan, lock=str(tmp_path / "l"), log=log) == 0
    assert [OK_LINE.match(x).group(1) for x in log.got[:3]] == ["ingest", "analyze", "gaps"]
    assert re.fullmatch(r"piqc-slurm nightly: all steps ok \(ingest, analyze, gaps\) in \d+\.\ds", log.got[3])


def test_a_step_that_runs_too_long_is_stopped_with_its_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    body = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "sys.stderr.write('piqc-slurm analyze: working\\n'); sys.stderr.flush(); time.sleep(120)\n")
    log = Collect()
    t0 = time.monotonic()
    rc = N.run(N.Plan([py_step("analyze", body)]), lock=str(tmp_path / "l"), timeout=2, log=log)
    assert rc == 11 and time.monotonic() - t0 < 15
    assert log.got == ["piqc-slurm nightly: analyze failed (timed out after 2s): piqc-slurm analyze: working"]
    gc = int(pidfile.read_text())
    if not gone(gc):  # the grandchild got SIGTERM with the group
        os.kill(gc, 9)
        pytest.fail("the step's child outlived the timeout")


def test_sigterm_stops_the_running_step_and_exits_143(tmp_path):
    lock, pidfile = tmp_path / "l", tmp_path / "step.pid"
    step = ("import os, time\n"
            f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
            "time.sleep(60)\n")
    script = ("import sys\nfrom piqc_slurm import nightly as N\n"
              f"plan = N.Plan([N.Step('analyze', [sys.executable, '-c', {step!r}], 11)])\n"
              f"sys.exit(N.run(plan, lock={str(lock)!r}, log=N.Log(use_syslog=False)))\n")
    proc = subprocess.Popen([PY, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text()):
        time.sleep(0.05)
    step_pid = int(pidfile.read_text())
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert lines(err) == ["piqc-slurm nightly: terminated (SIGTERM) during analyze"]
    if not gone(step_pid):
        os.kill(step_pid, 9)
        pytest.fail("the step outlived its nightly run")


def test_a_step_whose_digest_dir_cannot_be_made_fails_as_digest(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    plan = N.plan([PY, "-c", "pass", "--"], digest_dir=str(blocker / "digests"), now=1796192100)
    digest = plan.steps[-1]
    log = Collect()
    assert N.run(N.Plan([digest]), lock=str(tmp_path / "l"), log=log) == 13
    assert log.got == [f"piqc-slurm nightly: digest failed (not started): {blocker / 'digests'}: Not a directory"]


def test_a_broken_store_fails_ingest_with_exit_10(tmp_path, monkeypatch):
    (tmp_path / "not-a-dir").write_text("")
    stub_slurm(tmp_path, monkeypatch)
    r = invoke(tmp_path, "--lock", str(tmp_path / "l"), "--no-digest",
               db=f"sqlite:///{tmp_path}/not-a-dir/store.db")
    assert r.exit_code == 10, r.output
    got = lines(r.stderr)
    assert len(got) == 1
    assert re.fullmatch(r"piqc-slurm nightly: ingest failed \(exit 3\): piqc-slurm: .*store.*", got[0]), got


# --- ingest's counts and no new data -------------------------------------------------------------

def test_ingest_counts_read_its_closing_line():
    text = ("piqc-slurm ingest: sacct slice 1/1 2026-12-01T06:15:00 .. 2026-12-02T06:15:00: 0 job record(s)\n"
            "piqc-slurm ingest: 12 job record(s), 1 malformed line(s), 3 summaries taken in\n")
    assert N.ingest_counts(text) == (12, 1, 3)
    assert N.ingest_window_start(text) == "2026-12-01T06:15:00"
    assert N.ingest_counts("piqc-slurm ingest: 0 job record(s), 0 malformed line(s), 0 summaries taken in\n") \
        == (0, 0, 0)
    assert N.ingest_counts("something else\n") is None  # unknown: the later steps run


def test_no_new_data_says_since_when_and_exits_0_without_the_later_steps(tmp_path, monkeypatch, utc):
    calls = stub_slurm(tmp_path, monkeypatch)  # sacct prints its header, no job
    digests = tmp_path / "digests"
    r = invoke(tmp_path, "--lock", str(tmp_path / "l"), "--digest-dir", str(digests),
               "-S", "2026-11-30T06:15", "-E", "2026-12-02T06:15")
    assert r.exit_code == 0, r.output
    got = lines(r.stderr)
    assert len(got) == 2 and OK_LINE.match(got[0]).group(1) == "ingest"
    assert got[1] == ("piqc-slurm nightly: no new data since 2026-11-30T06:15:00 (ingest read no job record and "
                      "took in no summary); skipped: analyze, gaps, digest")
    sacct_calls = [c for c in calls.read_text().splitlines() if c.startswith("sacct ")]
    assert len(sacct_calls) == 2  # two 24 h slices
    assert "-S uts1796019300 " in sacct_calls[0] and sacct_calls[1].endswith("-E uts1796192100")
    assert not any(c.startswith("sacctmgr") for c in calls.read_text().splitlines())  # gaps did not run
    assert not digests.exists()


def test_no_new_data_on_a_first_incremental_run_names_the_window_start(tmp_path, monkeypatch, utc):
    stub_slurm(tmp_path, monkeypatch)
    r = invoke(tmp_path, "--lock", str(tmp_path / "l"), "--no-digest")
    assert r.exit_code == 0, r.output
    got = lines(r.stderr)
    assert re.fullmatch(r"piqc-slurm nightly: no new data since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \(ingest read no "
                        r"job record and took in no summary\); skipped: analyze, gaps", got[-1]), got


def test_new_jobs_run_analyze_and_gaps(tmp_path, monkeypatch, utc):
    stub_slurm(tmp_path, monkeypatch, sacct_output=COMPLETED)  # one job, ended 2026-11-28T12:14:56Z
    r = invoke(tmp_path, "--lock", str(tmp_path / "l"), "--no-digest", "-S", "2026-11-28", "-E", "2026-11-29")
    assert r.exit_code == 0, r.output
    got = lines(r.stderr)
    assert [OK_LINE.match(x).group(1) for x in got[:3]] == ["ingest", "analyze", "gaps"], got
    assert re.fullmatch(r"piqc-slurm nightly: all steps ok \(ingest, analyze, gaps\) in \d+\.\ds", got[3])
    # the steps' own lines are passed on (not with -q)
    assert "piqc-slurm ingest: 1 job record(s), 0 malformed line(s), 0 summaries taken in" in r.stderr
    assert "piqc-slurm analyze: 1 jobs" in r.stderr


def test_all_four_steps_write_the_digest_named_after_its_last_day(tmp_path, monkeypatch, utc):
    stub_slurm(tmp_path, monkeypatch, sacct_output=COMPLETED)
    digests = tmp_path / "digests"
    r = invoke(tmp_path, "--lock", str(tmp_path / "l"), "--digest-dir", str(digests), "-q",
               "-S", "2026-11-28", "-E", "2026-11-29")
    assert r.exit_code == 0, r.output
    got = lines(r.stderr)
    assert [OK_LINE.match(x).group(1) for x in got[:4]] == ["ingest", "analyze", "gaps", "digest"], got
    assert got[4].endswith(f"; digest {digests}/digest-2026-11-28.html")
    assert not [ln for ln in r.stderr.splitlines() if not ln.startswith("piqc-slurm nightly: ")]  # -q
    assert (digests / "digest-2026-11-28.html").read_text().lstrip().lower().startswith("<!doctype html")


# --- the plan --------------------------------------------------------------------------------------

PRE = ["python", "-m", "piqc_slurm", "--config", "/etc/piqc/piqc.toml"]


def test_the_default_plan(utc):
    p = N.plan(PRE, digest_dir="/var/lib/piqc/digests", now=1796192100)  # 2026-12-02T06:15:00Z
    assert [s.name for s in p.steps] == ["ingest", "analyze", "gaps", "digest"]
    assert [s.code for s in p.steps] == [10, 11, 12, 13]
    assert p.steps[0].argv == PRE + ["ingest"]
    assert p.steps[1].argv == PRE + ["analyze", "-S", "uts1796019300", "-E", "uts1796192100"]
    assert p.steps[2].argv == PRE + ["gaps", "-S", "uts1796019300", "-E", "uts1796192100", "-P", "-n"]
    assert p.steps[3].argv == PRE + ["digest", "-S", "uts1796083200", "-E", "uts1796169600",
                                     "-o", "/var/lib/piqc/digests/digest-2026-12-01.html"]
    assert p.digest_file == "/var/lib/piqc/digests/digest-2026-12-01.html"


def test_a_given_window_goes_to_every_step(utc):
    p = N.plan(PRE, since=1795737600, until=1795910400, digest_dir="/d")
    assert p.steps[0].argv == PRE + ["ingest", "--since", "uts1795737600", "--until", "uts1795910400"]
    assert p.steps[1].argv[-4:] == ["-S", "uts1795737600", "-E", "uts1795910400"]
    assert p.steps[3].argv[-6:] == ["-S", "uts1795737600", "-E", "uts1795910400", "-o", "/d/digest-2026-11-28.html"]
    with pytest.raises(ValueError):
        N.plan(PRE, since=1795910400, until=1795737600)


def test_mail_to_goes_to_the_digest(utc):
    p = N.plan(PRE, digest_dir="/d", now=1796192100, mail_to=("a@example.org", "b@example.org"))
    assert p.steps[3].argv[-2:] == ["--mail-to=a@example.org", "--mail-to=b@example.org"]


def test_no_digest_leaves_the_step_out():
    assert [s.name for s in N.plan(PRE, digest_dir=None, now=1796192100).steps] == ["ingest", "analyze", "gaps"]


def test_yesterday_is_a_local_day_across_a_dst_change(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        # 2026-11-02 06:15 EST; DST ended 2026-11-01 02:00: yesterday had 25 hours
        assert N.yesterday(1793618100) == (1793505600, 1793595600)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_command_prefix_passes_config_and_db():
    assert N.command_prefix("/c.toml", "sqlite:////x.db", python="/py") == \
        ["/py", "-m", "piqc_slurm", "--config", "/c.toml", "--db", "sqlite:////x.db"]
    assert N.command_prefix(None, None, python="/py") == ["/py", "-m", "piqc_slurm"]
