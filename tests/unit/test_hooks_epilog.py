"""The Epilog's spool: a summary that cannot be written is logged and counted,
never a failed hook; a spool that is not root-only is refused; after a
delivery, the outbox backlog is retried oldest first within the hook's time.
Real spool directories (tmp_path), real recorded summaries, a real SQLite
store for push."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm import config
from piqc_slurm.hooks import epilog, prolog, run_hook
from piqc_slurm.store.db import open_engine
from piqc_slurm.store.models import NodeSummary

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
NOW = 1795900000.0  # the Epilog's clock in these tests: the job ended then
JOB = "piqc.74.0.vm"  # the key of the job whose Epilog runs: cluster.jobid.restart.node
OUT = f"{JOB}.{int(NOW)}"  # its outbox name (no Prolog record: the run's start is the Epilog's now)


@pytest.fixture(autouse=True)
def _hook_logger():
    """run_hook("epilog") gives the "piqc-slurm" logger a handler on this test's stderr: take it off."""
    log = logging.getLogger("piqc-slurm")
    before = list(log.handlers)
    yield
    log.handlers[:] = before


def setup(tmp_path: Path, **keys) -> tuple[dict, config.Config]:
    """The Epilog's environment and config: spool in tmp_path, no user report, stderr logging."""
    values = {"spool_dir": str(tmp_path / "spool"), "syslog": False, "delivery": "shared-spool",
              "shared_spool_dir": str(tmp_path / "shared"), **{k: v for k, v in keys.items() if "." not in k}}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    epilog_keys = {"user_report": False, "push_jitter": 0.0,
                   **{k.split(".")[1]: v for k, v in keys.items() if k.startswith("epilog.")}}
    lines += ["[epilog]"] + [f"{k} = {json.dumps(v)}" for k, v in epilog_keys.items()]
    sampler_keys = {k.split(".")[1]: v for k, v in keys.items() if k.startswith("sampler.")}
    lines += ["[sampler]"] + [f"{k} = {json.dumps(v)}" for k, v in sampler_keys.items()]
    path = tmp_path / "piqc.toml"
    path.write_text("\n".join(lines) + "\n")
    env = {"SLURM_JOB_ID": "74", "SLURMD_NODENAME": "vm", "SLURM_CLUSTER_NAME": "piqc", "SLURM_JOB_GPUS": "0,1",
           "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_USER": "alice", "PIQC_CONFIG": str(path)}
    return env, config.load(env=env)


def outbox_summary(spool: Path, fixture: str, age_order: int, job_id: int | None = None) -> str:
    """Copy a recorded summary (and timeline) into the outbox under the Epilog's name; its mtime is
    `age_order` hours after a fixed point (smaller: older). The outbox key."""
    d = json.loads((FX / f"{fixture}.summary.json").read_text())
    if job_id is not None:
        d["job_id"] = job_id
    key = f"{d['cluster']}.{d['job_id']}.{d['restart_count']}.{d['node']}.{int(d['started'])}"
    out = spool / "outbox"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{key}.summary.json").write_text(json.dumps(d))
    if (FX / f"{fixture}.timeline.jsonl").exists():
        shutil.copy(FX / f"{fixture}.timeline.jsonl", out / f"{key}.timeline.jsonl")
    t = 1795000000 + age_order * 3600
    os.utime(out / f"{key}.summary.json", (t, t))
    return key


def names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


# ---- the backlog -----------------------------------------------------------------------------------

def test_after_a_delivery_the_oldest_backlog_is_retried_and_a_running_job_is_left(tmp_path):
    env, cfg = setup(tmp_path, **{"epilog.retry_backlog": 2})
    spool = tmp_path / "spool"
    running = outbox_summary(spool, "monitor-off", 0)  # the oldest, but its job runs here again
    (spool / "run" / running.rsplit(".", 1)[0]).mkdir(parents=True)
    oldest = outbox_summary(spool, "4gpu-2idle", 1)
    second = outbox_summary(spool, "no-driver", 2)
    newest = outbox_summary(spool, "gpu-lost", 3)

    what = epilog.run(env, cfg, now=NOW)

    shared = tmp_path / "shared" / "vm"
    assert names(shared) == {f"{OUT}.summary.json", f"{oldest}.summary.json", f"{oldest}.timeline.jsonl",
                             f"{second}.summary.json"}
    assert names(spool / "outbox") == {f"{running}.summary.json", f"{newest}.summary.json"}
    assert "backlog: 2 older summaries delivered" in what


def test_a_failed_retry_stops_the_retries(tmp_path):
    env, cfg = setup(tmp_path, **{"epilog.retry_backlog": 5})
    spool = tmp_path / "spool"
    oldest = outbox_summary(spool, "4gpu-2idle", 1)
    second = outbox_summary(spool, "no-driver", 2)
    # the shared spool cannot take the oldest: a directory holds its name
    (tmp_path / "shared" / "vm" / f"{oldest}.summary.json").mkdir(parents=True)

    what = epilog.run(env, cfg, now=NOW)

    assert f"{OUT}.summary.json" in names(tmp_path / "shared" / "vm")  # this job's own went
    assert {f"{oldest}.summary.json", f"{second}.summary.json"} <= names(spool / "outbox")
    assert "backlog: 0 older summaries delivered, 2 left for later" in what and oldest in what


@pytest.mark.parametrize("keys, env_extra, note", [
    ({"epilog.retry_backlog": 0}, {}, None),
    ({"epilog.retry_backlog": 5}, {"PIQC_TIMEOUT": "3"}, "no time left in this Epilog"),
])
def test_no_retries_when_off_or_out_of_time(tmp_path, keys, env_extra, note):
    env, cfg = setup(tmp_path, **keys)
    env.update(env_extra)
    key = outbox_summary(tmp_path / "spool", "4gpu-2idle", 1)
    what = epilog.run(env, cfg, now=NOW)
    assert f"{key}.summary.json" in names(tmp_path / "spool" / "outbox")
    assert f"{OUT}.summary.json" in names(tmp_path / "shared" / "vm")
    if note:
        assert note in what
    else:
        assert "backlog" not in what


def test_push_retries_into_the_store_and_sets_an_unreadable_one_aside(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    open_engine(url, mode="create").dispose()
    env, cfg = setup(tmp_path, delivery="push", db=url, **{"epilog.retry_backlog": 5})
    spool = tmp_path / "spool"
    bad = outbox_summary(spool, "4gpu-2idle", 0, job_id=900)
    doc = json.loads((spool / "outbox" / f"{bad}.summary.json").read_text())
    (spool / "outbox" / f"{bad}.summary.json").write_text(json.dumps({**doc, "devices": "GPU0,GPU1"}))
    first = outbox_summary(spool, "4gpu-2idle", 1)
    second = outbox_summary(spool, "sampler-killed", 2)

    what = epilog.run(env, cfg, now=NOW)

    engine = open_engine(url, mode="read")
    with Session(engine) as s:
        jobs = sorted(s.execute(select(NodeSummary.job_id_raw)).scalars())
    engine.dispose()
    assert jobs == [74, 134, 136]  # this job, then the two good ones of the backlog
    assert names(spool / "outbox") == {"quarantine"}
    assert {f"{first}.summary.json", f"{first}.timeline.jsonl", f"{second}.summary.json"} <= names(spool / "delivered")
    q = spool / "outbox" / "quarantine"
    assert names(q) == {f"{bad}.summary.json", f"{bad}.timeline.jsonl", f"{bad}.summary.json.reason"}
    assert "devices: expected a list" in (q / f"{bad}.summary.json.reason").read_text()
    assert "backlog: 2 older summaries delivered" in what and "moved to outbox/quarantine/" in what


def test_no_retry_when_this_jobs_own_push_fails(tmp_path):
    env, cfg = setup(tmp_path, delivery="push", db=f"sqlite:///{tmp_path}/none/store.db",
                     **{"epilog.retry_backlog": 5})
    key = outbox_summary(tmp_path / "spool", "4gpu-2idle", 1)
    what = epilog.run(env, cfg, now=NOW)
    assert names(tmp_path / "spool" / "outbox") == {f"{key}.summary.json", f"{key}.timeline.jsonl",
                                                    f"{OUT}.summary.json"}
    assert "delivery failed, stays spooled" in what and "backlog" not in what


def _stored_jobs(url: str) -> list[int]:
    engine = open_engine(url, mode="read")
    try:
        with Session(engine) as s:
            return sorted(s.execute(select(NodeSummary.job_id_raw)).scalars())
    finally:
        engine.dispose()


def test_a_detached_push_lets_the_epilog_return_while_the_store_is_locked_then_delivers(tmp_path):
    """`piqc-slurm epilog` (the command slurmd's wrapper runs) with delivery = push: the store is
    held under an exclusive lock, so a push in the Epilog's own path would block on it (and fail
    after SQLite's busy timeout). The Epilog returns 0 while the lock is held, the summary still in
    the outbox; once the lock goes, the detached child pushes it, moves it to delivered/, and logs
    its own line."""
    import sqlite3
    import sys

    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    open_engine(url, mode="create").dispose()
    env, _ = setup(tmp_path, delivery="push", db=url, **{"epilog.retry_backlog": 0})
    spool = tmp_path / "spool"
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    log = tmp_path / "hook.log"
    try:
        with open(log, "wb") as err:
            r = subprocess.run([sys.executable, "-m", "piqc_slurm", "epilog"], env={**env, "PATH": os.defpath},
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        assert r.returncode == 0
        left = names(spool / "outbox")  # its one summary, not pushed yet
        assert len(left) == 1 and left.pop().startswith(f"{JOB}.") and not (spool / "delivered").exists()
        text = log.read_text()
        assert "epilog job=74: " in text and "push detached (pid " in text
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "detached push" not in log.read_text():
        time.sleep(0.05)
    text = log.read_text()
    assert "epilog job=74: detached push: pushed to the store" in text, text
    assert _stored_jobs(url) == [74]
    assert names(spool / "outbox") == set() and len(names(spool / "delivered")) == 1


def test_with_push_detached_off_the_epilog_pushes_in_its_own_path(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    open_engine(url, mode="create").dispose()
    env, _ = setup(tmp_path, delivery="push", db=url, **{"epilog.push_detached": False})
    log = tmp_path / "hook.log"
    with open(log, "wb") as err:
        import sys

        r = subprocess.run([sys.executable, "-m", "piqc_slurm", "epilog"], env={**env, "PATH": os.defpath},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert r.returncode == 0
    assert _stored_jobs(url) == [74]  # in the store as the command returns
    assert "pushed to the store" in log.read_text() and "detached" not in log.read_text()


# ---- a summary that cannot be spooled ----------------------------------------------------------------

def test_a_full_disk_loses_the_summary_logged_and_counted(tmp_path, monkeypatch, caplog):
    """ENOSPC at the summary's write (os.open refusing its temp file, as a full file system does): the
    Epilog returns, logs `lost summary KEY: [Errno 28] ...`, counts it, leaves no half file."""
    env, cfg = setup(tmp_path)
    run_dir = tmp_path / "spool" / "run" / JOB
    run_dir.mkdir(parents=True)
    (run_dir / "timeline.jsonl").write_bytes((FX / "4gpu-2idle.timeline.jsonl").read_bytes())
    real_open = os.open

    def full_disk(path, flags, mode=0o777, *, dir_fd=None):
        if ".summary.json.tmp" in os.fspath(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", full_disk)
    with caplog.at_level(logging.ERROR, logger="piqc-slurm"):
        what = epilog.run(env, cfg, now=NOW)
    monkeypatch.undo()
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost summary")]
    assert len(lost) == 1 and lost[0].startswith(f"lost summary {OUT}: [Errno 28] No space left on device")
    assert lost[0].endswith("(lost.count now 1)") and lost[0] in what
    assert (tmp_path / "spool" / "lost.count").read_text() == "1\n"
    assert names(tmp_path / "spool" / "outbox") == set()  # no summary, no orphan timeline, no temp file
    assert not run_dir.exists() and names(tmp_path / "shared" / "vm") == set()


def test_an_outbox_that_is_not_a_directory_loses_the_summary_and_the_hook_exits_0(tmp_path, capsys):
    env, _ = setup(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "outbox").write_text("not a directory")  # EEXIST/ENOTDIR, whoever runs the hook (root too)
    assert run_hook("epilog", env) == 0
    assert run_hook("epilog", env) == 0
    err = capsys.readouterr().err
    assert err.count(f"lost summary {JOB}.") >= 2 and "[Errno 17] File exists" in err and "Traceback" not in err
    assert (spool / "lost.count").read_text() == "2\n"


def test_a_counter_that_cannot_be_written_still_lets_the_epilog_finish(tmp_path, caplog):
    env, cfg = setup(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "outbox").write_text("not a directory")
    (spool / "lost.count").mkdir()
    with caplog.at_level(logging.ERROR, logger="piqc-slurm"):
        what = epilog.run(env, cfg, now=NOW)
    assert f"lost summary {OUT}: [Errno 17] File exists" in what and "not counted in lost.count" in what


# ---- a spool that is not root-only -------------------------------------------------------------------

def _refused(tmp_path, capsys, verb: str, env: dict) -> str:
    spool = tmp_path / "spool"
    before = sorted(str(p.relative_to(spool)) for p in spool.rglob("*"))
    assert run_hook(verb, env) == 0
    err = capsys.readouterr().err
    assert sorted(str(p.relative_to(spool)) for p in spool.rglob("*")) == before  # nothing written
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("verb", ["prolog", "epilog"])
def test_a_world_writable_spool_is_refused_and_the_job_runs_unmonitored(tmp_path, capsys, verb):
    env, _ = setup(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    err = _refused(tmp_path, capsys, verb, env)
    assert f"{verb} job=74: failed: SpoolError: {tmp_path / 'spool'} is writable by group or others (mode 777): " \
           "refusing the spool: nothing is read or written there, this job runs unmonitored" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_spool_not_owned_by_root_is_refused(tmp_path, capsys):
    env, _ = setup(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    os.chown(spool, 12345, 12345)
    err = _refused(tmp_path, capsys, "epilog", env)
    assert "owned by uid 12345" in err and "this job runs unmonitored" in err


def test_a_planted_run_dir_is_not_read(tmp_path, capsys):
    """run/<key>/ writable by others (a user could have put a job.json there): the Epilog refuses it
    before reading anything, and writes no summary from it."""
    env, _ = setup(tmp_path)
    run_dir = tmp_path / "spool" / "run" / JOB
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o777)
    (run_dir / "job.json").write_text(json.dumps({"monitor": "on", "job": {}}))
    err = _refused(tmp_path, capsys, "epilog", env)
    assert f"{run_dir} is writable by group or others" in err and "this job runs unmonitored" in err


def test_a_symlinked_spool_is_refused(tmp_path, capsys):
    env, _ = setup(tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "spool").symlink_to(target)
    assert run_hook("epilog", env) == 0
    err = capsys.readouterr().err
    assert "is not a plain directory" in err and "refusing the spool" in err
    assert names(target) == set()


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_an_outbox_on_a_full_or_read_only_file_system(tmp_path, caplog, how):
    """The real thing where this machine allows it (root, tmpfs): a 64 KiB tmpfs over the outbox,
    filled up or remounted read-only, while the job's timeline waits on the spool's own file system."""
    import subprocess

    env, cfg = setup(tmp_path)
    spool = tmp_path / "spool"
    box = spool / "outbox"
    box.mkdir(parents=True, mode=0o700)
    run_dir = spool / "run" / JOB
    run_dir.mkdir(parents=True)
    (run_dir / "timeline.jsonl").write_bytes((FX / "4gpu-2idle.timeline.jsonl").read_bytes())
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(box)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and a tmpfs mount")
    try:
        if how == "full":
            fd = os.open(box / "fill", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with pytest.raises(OSError, match="No space"):
                    while True:
                        os.write(fd, b"\0" * 4096)
            finally:
                os.close(fd)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(box)], check=True)
        with caplog.at_level(logging.ERROR, logger="piqc-slurm"):
            what = epilog.run(env, cfg, now=NOW)
        left = names(box)
    finally:
        subprocess.run(["umount", str(box)], check=True)
    errno_text = "[Errno 28] No space left on device" if how == "full" else "[Errno 30] Read-only file system"
    assert what.startswith(f"lost summary {OUT}: {errno_text}") and what.endswith("(lost.count now 1)")
    assert any(r.getMessage() == what for r in caplog.records)
    assert left == ({"fill"} if how == "full" else set())  # no temp file, no half summary
    assert (spool / "lost.count").read_text() == "1\n" and not run_dir.exists()


# ---- the user report: the SPANK plugin's job info names the file -----------------------------------
NOBODY = 65534
JOBINFO = Path(__file__).resolve().parents[1] / "fixtures" / "reports" / "22.05.8" / "jobinfo"


def plant_jobinfo(spool: Path, recorded: str, job_id: int = 74, uid: int = NOBODY) -> Path:
    """A real jobinfo file the plugin wrote, under this test job's id and uid."""
    lines = (JOBINFO / recorded).read_text().splitlines()
    lines = [f"job_id={job_id}" if ln.startswith("job_id=") else f"uid={uid}" if ln.startswith("uid=") else ln
             for ln in lines]
    d = spool / "jobinfo"
    d.mkdir(parents=True, mode=0o700, exist_ok=True)
    spool.chmod(0o700)
    path = d / str(job_id)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def out_dir():
    """An output directory user nobody owns and can reach (pytest's own tmp is root-only)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="piqc-epilog-report-", dir="/tmp"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d)


def report_job(tmp_path: Path, out: Path, pattern: str | None) -> tuple[dict, config.Config, Path]:
    """A GPU job of user nobody, its output in `out`, report on."""
    env, cfg = setup(tmp_path, **{"epilog.user_report": True})
    env.update({"SLURM_JOB_UID": str(NOBODY), "SLURM_JOB_GID": str(NOBODY), "SLURM_JOB_USER": "nobody",
                "SLURM_JOB_WORK_DIR": str(out)})
    if pattern is not None:
        env["SLURM_JOB_STDOUT"] = str(out / pattern)
    return env, config.load(env=env), out


def user_file(path: Path) -> Path:
    path.write_text("job output\n")
    os.chown(path, NOBODY, NOBODY)
    return path


def test_a_cpu_jobs_job_info_is_removed_too(tmp_path):
    env, cfg = setup(tmp_path)
    env["SLURM_JOB_GPUS"] = ""
    info = plant_jobinfo(tmp_path / "spool", "default")
    assert epilog.run(env, cfg, now=NOW) == "no GPUs: nothing to summarise"
    assert not info.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the report writer drops root to the job's uid")
@pytest.mark.parametrize("recorded, pattern, file", [
    ("array_A_a_3", "x-%A_%a.out", "x-{array}_3.out"),
    ("array_default_1", None, "slurm-{array}_1.out"),
    ("x_odd", "%x.out", "a b|c.out"),
    ("x_newline", "nl-%x.out", "nl-two\nlines.out"),
])
def test_report_reaches_array_and_named_jobs_files(tmp_path, out_dir, recorded, pattern, file):
    env, cfg, out = report_job(tmp_path, out_dir, pattern)
    info = plant_jobinfo(tmp_path / "spool", recorded)
    target = user_file(out / file.format(array=jobinfo_parse(info).array_job_id))
    what = epilog.run(env, cfg, now=NOW)
    assert "report: ok" in what
    text = target.read_text()
    assert text.startswith("job output\n") and "piqc-slurm GPU report: job 74" in text
    assert os.stat(target).st_uid == NOBODY
    assert not info.exists()  # removed once used


def jobinfo_parse(path: Path):
    from piqc_slurm.hooks.jobinfo import parse

    return parse(path.read_bytes())


@pytest.mark.skipif(os.geteuid() != 0, reason="the report writer drops root to the job's uid")
def test_without_job_info_a_plain_pattern_still_gets_its_report(tmp_path, out_dir):
    env, cfg, out = report_job(tmp_path, out_dir, "r-%j-%u.out")
    target = user_file(out / "r-74-nobody.out")
    assert "report: ok" in epilog.run(env, cfg, now=NOW)
    assert "piqc-slurm GPU report: job 74" in target.read_text()


@pytest.mark.parametrize("pattern, why", [
    ("%x.out", "report: output pattern uses %x and the job name is unknown: no jobinfo file"),
    ("x-%A_%a.out", "report: output pattern uses %A and the array ids are unknown: no jobinfo file"),
])
def test_without_job_info_the_hook_log_says_why_in_one_line(tmp_path, out_dir, capsys, pattern, why):
    env, _cfg, _out = report_job(tmp_path, out_dir, pattern)
    assert run_hook("epilog", env) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "epilog job=74" in ln]
    assert len(lines) == 1 and why in lines[0] and "Traceback" not in lines[0], lines


@pytest.mark.skipif(os.geteuid() != 0, reason="the report writer drops root to the job's uid")
def test_a_default_named_array_task_without_job_info_says_why(tmp_path, out_dir):
    """Slurm wrote slurm-<array>_<task>.out; with no job info the Epilog can only guess slurm-74.out."""
    env, cfg, out = report_job(tmp_path, out_dir, None)
    user_file(out / "slurm-70_4.out")
    what = epilog.run(env, cfg, now=NOW)
    assert f"report: no such file: '{out}/slurm-74.out' (the file was named without job info: no jobinfo file" \
        in what


def test_a_planted_job_info_is_refused_and_said(tmp_path, out_dir):
    env, cfg, _out = report_job(tmp_path, out_dir, "%x.out")
    info = plant_jobinfo(tmp_path / "spool", "x_odd", uid=1234)  # not the job's user
    what = epilog.run(env, cfg, now=NOW)
    assert f"report: output pattern uses %x and the job name is unknown: jobinfo {info} refused: it names uid " \
           f"1234, the job runs as {NOBODY}" in what


# ---- a Prolog still in flight (it runs detached from the job's path) -------------------------------

def _detached_prolog_stand_in(job_id: int, seconds: float) -> subprocess.Popen:
    """A root process with the argv the wrapper gives its detached Prolog copy (epilog/piqc-hook.sh)."""
    return subprocess.Popen(["/bin/sh", "-c", f"sleep {seconds}; :", "50-piqc.sh", "--piqc-detached-prolog",
                             str(job_id)])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's processes count as a Prolog in flight")
def test_the_epilog_waits_for_a_prolog_in_flight_and_reads_its_record(tmp_path):
    env, cfg = setup(tmp_path, **{"sampler.enabled": False})
    stand_in = _detached_prolog_stand_in(74, 0.8)

    def late_prolog():  # the Prolog's record lands while its wrapper still runs
        time.sleep(0.4)
        prolog.run({**env, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"}, cfg)
    writer = threading.Thread(target=late_prolog)
    writer.start()
    t0 = time.monotonic()
    try:
        what = epilog.run(env, cfg, now=NOW)
    finally:
        writer.join()
        stand_in.wait()
    assert time.monotonic() - t0 >= 0.7, what
    [path] = (tmp_path / "shared").rglob("*.summary.json")
    doc = json.loads(path.read_text())
    assert doc["monitor"] == "disabled", doc["partial_reason"]  # the Prolog's record, not "no-sampler"
    assert not doc["partial"]


def test_without_a_prolog_in_flight_the_epilog_does_not_wait(tmp_path):
    env, cfg = setup(tmp_path)
    other = _detached_prolog_stand_in(740, 5)  # another job's Prolog: 740 is not 74
    t0 = time.monotonic()
    try:
        epilog.run(env, cfg, now=NOW)
    finally:
        other.kill()
        other.wait()
    assert time.monotonic() - t0 < 2
    [path] = (tmp_path / "shared").rglob("*.summary.json")
    assert json.loads(path.read_text())["monitor"] == "no-sampler"
