"""The job info the SPANK plugin writes for the Epilog (spank/piqc.c record_jobinfo) and its
reader (hooks/jobinfo.py): real files the plugin wrote on the test cluster, the plugin's own C
code run through a harness that stands in for slurmstepd, and the reader's refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from piqc_slurm.hooks import jobinfo
from piqc_slurm.hooks.jobinfo import MISSING, NO_VAL, JobInfo, JobInfoError, discard, parse, read
from piqc_slurm.spoolreplay import prune

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "fixtures" / "reports" / "22.05.8"
CASES = {c["case"]: c for c in json.loads((RECORDED / "stdout-patterns.json").read_text())["cases"]}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks and chown need root")


# ---- real files the plugin wrote -----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in (RECORDED / "jobinfo").iterdir()))
def test_recorded_files_parse_to_what_the_job_itself_saw(name):
    """Each file next to the job's own view (its environment, the name given to sbatch)."""
    case = CASES[name]
    info = parse((RECORDED / "jobinfo" / name).read_bytes())
    assert info.job_id == case["job_id"]
    if case["array_task_id"] is None:
        assert (info.array_job_id, info.array_task_id) == (0, NO_VAL)
    else:
        assert (info.array_job_id, info.array_task_id) == (case["array_job_id"], case["array_task_id"])
    assert info.job_name == case["job_name"]


def test_recorded_names_that_would_break_a_line_format():
    assert parse((RECORDED / "jobinfo" / "x_newline").read_bytes()).job_name == "two\nlines"
    assert parse((RECORDED / "jobinfo" / "x_odd").read_bytes()).job_name == "a b|c"
    assert parse((RECORDED / "jobinfo" / "x_dotdot").read_bytes()).job_name == "../up"
    assert parse((RECORDED / "jobinfo" / "x_markup").read_bytes()).job_name == '<b>&"x"\'y'


GOOD = (RECORDED / "jobinfo" / "array_A_a_2").read_bytes()
ID, ARRAY, UID = CASES["array_A_a_2"]["job_id"], CASES["array_A_a_2"]["array_job_id"], parse(GOOD).uid


@pytest.mark.parametrize("data, why", [
    (GOOD.replace(b"piqc-jobinfo/1", b"piqc-jobinfo/2"), "unknown format 'piqc-jobinfo/2'"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"colour=blue\n", "unexpected line 'colour=blue'"),
    (GOOD + b"job_id=1\n", "job_id given twice"),
    (GOOD.replace(b"uid=", b"user="), "unexpected line"),
    (b"piqc-jobinfo/1\njob_id=1\n", "no uid, array_job_id, array_task_id"),
    (GOOD.replace(b"job_id=", b"job_id=4294967296\nx="), "unexpected line 'x="),
    (GOOD.replace(b"uid=1001", b"uid=4294967296"), "uid is not a uint32"),
    (GOOD.replace(b"uid=1001", b"uid=-1"), "uid is not a uint32"),
    (GOOD.replace(b"uid=1001", b"uid=\xd9\xa3"), "not ASCII"),
    (GOOD.replace(b"job_name=66", b"job_name=6"), "not lower-case hex"),
    (GOOD.replace(b"job_name=66", b"job_name=6F"), "not lower-case hex"),
    (GOOD + b"#" * 4096, "larger than 4096 bytes"),
])
def test_anything_but_what_the_plugin_writes_is_refused(data, why):
    with pytest.raises(JobInfoError, match=why.replace("(", r"\(")):
        parse(data)


def test_no_name_recorded():
    info = parse(b"piqc-jobinfo/1\njob_id=5\nuid=7\narray_job_id=0\narray_task_id=4294967294\n")
    assert info == JobInfo(5, 7, 0, NO_VAL, None)


# ---- the reader: only root's own file, for this job ------------------------------------------------

def spool_with(tmp_path: Path, job_id: int, data: bytes = GOOD) -> Path:
    spool = tmp_path / "spool"
    (spool / "jobinfo").mkdir(parents=True, mode=0o700)
    spool.chmod(0o700)
    path = spool / "jobinfo" / str(job_id)
    path.write_bytes(data)
    path.chmod(0o600)
    return spool


def test_read_and_discard(tmp_path):
    spool = spool_with(tmp_path, ID)
    info, why = read(spool, ID, UID)
    assert (info.array_job_id, info.array_task_id, info.job_name, why) == (ARRAY, 2, "fx-array", "")
    assert discard(spool, ID) == ""
    assert not (spool / "jobinfo" / str(ID)).exists()
    assert read(spool, ID, UID) == (None, MISSING)
    assert discard(spool, ID) == ""  # already gone: nothing to say
    assert read(tmp_path / "nowhere", ID, UID) == (None, MISSING)


def test_another_jobs_or_users_file_is_not_taken(tmp_path):
    spool = spool_with(tmp_path, ID)
    d = spool / "jobinfo"
    os.symlink(str(ID), d / "999")
    assert read(spool, 999, UID) == (None, f"jobinfo {d}/999 is a symlink (not followed)")
    (d / "999").unlink()
    shutil.copy(d / str(ID), d / "999")
    assert read(spool, 999, UID)[1] == f"jobinfo {d}/999 refused: it names job {ID}"
    assert read(spool, ID, UID + 1)[1] == f"jobinfo {d}/{ID} refused: it names uid {UID}, the job runs as {UID + 1}"
    assert read(spool, ID, None)[0] is not None  # the job's uid unknown: the file's own checks only


def test_a_writable_or_odd_file_or_dir_is_refused(tmp_path):
    spool = spool_with(tmp_path, ID)
    f = spool / "jobinfo" / str(ID)
    f.chmod(0o622)
    assert "refused: owned by uid" in read(spool, ID, UID)[1] and "mode 622" in read(spool, ID, UID)[1]
    f.unlink()
    os.mkfifo(f)  # O_NONBLOCK: opening it does not hang the Epilog
    assert read(spool, ID, UID)[1].endswith("is not a regular file")
    f.unlink()
    f.write_bytes(GOOD + b"x" * 5000)
    f.chmod(0o600)
    assert "bytes (at most 4096)" in read(spool, ID, UID)[1]
    (spool / "jobinfo").chmod(0o777)
    why = read(spool, ID, UID)[1]
    assert why.startswith("jobinfo refused: ") and "writable by group or others" in why
    assert discard(spool, ID) == "" and f.exists()  # nothing removed from a dir others could have filled


@root_only
def test_a_file_or_dir_not_roots_is_refused(tmp_path):
    spool = spool_with(tmp_path, ID)
    os.chown(spool / "jobinfo" / str(ID), 1001, 1001)
    assert "refused: owned by uid 1001" in read(spool, ID, UID)[1]
    os.chown(spool / "jobinfo" / str(ID), 0, 0)
    os.chown(spool / "jobinfo", 1001, 1001)
    assert "owned by uid 1001, not by us" in read(spool, ID, UID)[1]


def test_spool_prune_removes_stale_job_info(tmp_path):
    """A batch job whose Epilog never ran (hooks not wired, node crash) leaves its file: `spool prune`
    removes it past the retention, with no store needed."""
    spool = spool_with(tmp_path, 188)
    (spool / "jobinfo" / "189").write_bytes(GOOD)
    now = 1800000000
    os.utime(spool / "jobinfo" / "188", (now - 40 * 86400,) * 2)  # against a 30-day retention
    os.utime(spool / "jobinfo" / "189", (now - 2 * 86400,) * 2)

    def no_store():
        raise AssertionError("job info needs no store")

    res = prune(spool_dir=spool, shared_spool_dir=None, older_than=30 * 86400, open_store=no_store, now=now)
    assert res.removed == [str(spool / "jobinfo" / "188")]
    assert sorted(p.name for p in (spool / "jobinfo").iterdir()) == ["189"]


# ---- the plugin's C code, run as slurmstepd would run it -----------------------------------------

@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    """spank/piqc.c linked with spank/jobinfo_harness.c (Slurm's API answered from argv)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc or not Path("/usr/include/slurm/spank.h").is_file():
        pytest.skip("needs a C compiler and slurm/spank.h (libslurm-dev)")
    out = tmp_path_factory.mktemp("harness") / "harness"
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-I/usr/include", "-o", str(out),
                    str(REPO / "spank" / "jobinfo_harness.c"), str(REPO / "spank" / "piqc.c")], check=True)
    return out


def stepd(harness: Path, words: list[str], *ids: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(harness), *words, "--", *ids], capture_output=True, timeout=10)


@root_only
@pytest.mark.parametrize("name", ["a b|c\n../<script>alert(1)</script>", "", "x" * 1024, "\xe9t\xe9"])
def test_plugin_writes_what_the_reader_takes(harness, tmp_path, name):
    spool = tmp_path / "spool"
    r = stepd(harness, [f"spool={spool}", "default_interval=1"], "batch", "154", "1001", "151", "3", name)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(spool / "jobinfo")) == ["154"]  # no temp file left
    st = os.stat(spool / "jobinfo" / "154")
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600) and os.stat(spool / "jobinfo").st_mode & 0o777 == 0o700
    info, why = read(spool, 154, 1001)
    assert why == "" and info == JobInfo(154, 1001, 151, 3, name)


@root_only
def test_plugin_outside_an_array_and_without_a_name(harness, tmp_path):
    spool = tmp_path / "spool"
    r = stepd(harness, [f"spool={spool}"], "batch", "12", "1001", "0", str(NO_VAL))
    assert r.returncode == 0 and b"no SLURM_JOB_NAME" in r.stderr
    assert read(spool, 12, 1001)[0] == JobInfo(12, 1001, 0, NO_VAL, None)


@root_only
def test_plugin_skips_a_too_long_name_but_still_writes_the_ids(harness, tmp_path):
    spool = tmp_path / "spool"
    r = stepd(harness, [f"spool={spool}"], "batch", "12", "1001", "10", "2", "y" * 1025)
    assert r.returncode == 0 and b"job name longer than 1024 bytes: not recorded" in r.stderr
    assert read(spool, 12, 1001)[0] == JobInfo(12, 1001, 10, 2, None)
    assert os.stat(spool / "jobinfo" / "12").st_size <= jobinfo.MAX_BYTES


@root_only
def test_plugin_replaces_a_requeued_jobs_file_and_a_crashed_temp_file(harness, tmp_path):
    spool = tmp_path / "spool"
    stepd(harness, [f"spool={spool}"], "batch", "12", "1001", "0", str(NO_VAL), "first")
    r = stepd(harness, [f"spool={spool}"], "batch", "12", "1001", "0", str(NO_VAL), "second")
    assert r.returncode == 0
    assert read(spool, 12, 1001)[0].job_name == "second"


@root_only
def test_plugin_writes_only_for_the_batch_step_and_only_with_spool(harness, tmp_path):
    spool = tmp_path / "spool"
    for step in ("extern", "0", "7"):
        assert stepd(harness, [f"spool={spool}"], step, "12", "1001", "0", str(NO_VAL), "n").returncode == 0
    assert not spool.exists()
    r = stepd(harness, ["default_interval=1"], "batch", "12", "1001", "0", str(NO_VAL), "n")
    assert r.returncode == 0 and r.stderr == b""
    r = stepd(harness, ["spool=relative/dir"], "batch", "12", "1001", "0", str(NO_VAL), "n")
    assert r.returncode == 0
    assert b"plugstack.conf: bad spool=relative/dir (not an absolute path): no job info is recorded" in r.stderr
    assert not Path("relative").exists()


@root_only
@pytest.mark.parametrize("plant", ["spool-symlink", "jobinfo-symlink", "jobinfo-not-root", "jobinfo-0777",
                                   "spool-not-root"])
def test_plugin_never_writes_through_a_planted_path(harness, tmp_path, plant):
    """Every refusal is logged and the step goes on (exit 0); nothing lands in the planted place."""
    target = tmp_path / "target"
    target.mkdir(mode=0o777)
    spool = tmp_path / "spool"
    if plant == "spool-symlink":
        spool.symlink_to(target)
    else:
        spool.mkdir(mode=0o700)
        if plant == "spool-not-root":
            os.chown(spool, 1001, 1001)
        elif plant == "jobinfo-symlink":
            (spool / "jobinfo").symlink_to(target)
        else:
            (spool / "jobinfo").mkdir(mode=0o700)
            if plant == "jobinfo-not-root":
                os.chown(spool / "jobinfo", 1001, 1001)
            else:
                (spool / "jobinfo").chmod(0o777)
    r = stepd(harness, [f"spool={spool}"], "batch", "12", "1001", "0", str(NO_VAL), "n")
    assert r.returncode == 0
    assert b"no job info for the report" in r.stderr, r.stderr
    assert os.listdir(target) == []
    if (spool / "jobinfo").is_dir() and not (spool / "jobinfo").is_symlink():
        assert os.listdir(spool / "jobinfo") == []


# ---- doctor: the plugin's spool= is the hooks' spool_dir -----------------------------------------

@pytest.mark.parametrize("words, status, says", [
    ("spool=/var/spool/piqc", "OK", "job info in /var/spool/piqc/jobinfo"),
    ("spool=/var/spool/piqc/", "OK", "job info in"),
    ("", "WARN", "piqc.so has no spool=: array tasks and %x output files get no report"),
    ("spool=/tmp/other", "WARN", "piqc.so spool=/tmp/other but spool_dir is /var/spool/piqc"),
])
def test_doctor_compares_spool_with_the_config(tmp_path, words, status, says):
    from piqc_slurm.doctor import check_spank

    so = tmp_path / "piqc.so"
    so.write_bytes(b"")
    (tmp_path / "slurm.conf").write_text("ClusterName=x\n")
    (tmp_path / "plugstack.conf").write_text(f"optional {so} default_interval=1 {words}\n")
    c = check_spank(str(tmp_path / "slurm.conf"), "/var/spool/piqc")
    assert (c.status, says in c.what) == (status, True), c
    if status == "WARN":
        assert "spool=/var/spool/piqc" in c.fix
    assert check_spank(str(tmp_path / "slurm.conf")).status == "OK"  # no spool_dir given: not judged


@root_only
def test_plugin_spool_takes_the_node_name_for_percent_n(harness, tmp_path):
    """spool=DIR/%n/spool: each slurmd of a host running several has its own (slurmstepd puts its node
    name in its own environment); a name that is not a plain node name writes nothing."""
    (tmp_path / "node2").mkdir(mode=0o755)
    words = [f"spool={tmp_path}/%n/spool"]
    env = {**os.environ, "SLURMD_NODENAME": "node2"}
    r = subprocess.run([str(harness), *words, "--", "batch", "77", "1001", "0", str(NO_VAL), "j"],
                       capture_output=True, timeout=10, env=env)
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "node2" / "spool", 77, 1001)[0] == JobInfo(77, 1001, 0, NO_VAL, "j")
    for bad in ("../evil", ""):
        env = {**os.environ, "SLURMD_NODENAME": bad}
        r = subprocess.run([str(harness), *words, "--", "batch", "78", "1001", "0", str(NO_VAL), "j"],
                           capture_output=True, timeout=10, env=env)
        assert r.returncode == 0 and b"no job info for the report" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node2"]
