"""usage/efficiency.py: seff's CPU, memory and time-limit figures.

Checked against REAL seff (Slurm 22.05.8's contribs/seff/seff run on the test cluster):
tests/fixtures/steps/22.05.8/seff_*.txt (jobs 8-14) and tests/fixtures/seff/22.05.8/seff_*.txt
(several tasks per step with --mem and --mem-per-cpu, a running job, a pending one), each
against the sacct text recorded with it (store.sacct.txt) as `piqc-slurm ingest` stores it.
seff's own text formatting (time2str, kbytes2str) is checked against seff's Perl subs, run by
perl; the rounding rules by hand."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_query_sacct_fixtures import read_case

from piqc_slurm.errors import ParseError
from piqc_slurm.ingest import ingest
from piqc_slurm.query.jobids import parse_jobs
from piqc_slurm.query.store import Reader
from piqc_slurm.report.seff import load_job
from piqc_slurm.store import open_engine
from piqc_slurm.usage import efficiency as eff
from piqc_slurm.usage.efficiency import StepUse

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDED = [FIXTURES / "steps" / "22.05.8", FIXTURES / "seff" / "22.05.8"]
CASES = sorted(p for d in RECORDED for p in d.glob("seff_*.txt"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('seff')}/piqc.db"
    e = open_engine(url, mode="create")
    for d in RECORDED:
        res = ingest(e, cluster="piqc", sacct_file=str(d / "store.sacct.txt"), file_tz="UTC")
        assert res.errors == []
    yield e
    e.dispose()


def real_seff(path: Path) -> tuple[dict, dict[str, str]]:
    """A recorded seff run: its meta (argv: [script, JOBID]) and its lines by label."""
    meta, out = read_case(path)
    lines = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    return meta, lines


def stored(engine, jobid: str):
    reader = Reader(str(engine.url))   # the SQLite file open_engine made
    try:
        view = load_job(reader, parse_jobs([jobid])[0])
    finally:
        reader.close()
    assert view is not None, jobid
    return view


def test_every_recorded_case_is_here():
    assert len(CASES) == 11, CASES  # 6 from tests/fixtures/steps, 5 from tests/fixtures/seff


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_figures_equal_real_seff(case, engine):
    meta, real = real_seff(case)
    view = stored(engine, meta["argv"][-1])   # 1234, 1234_5 or 1234.batch
    job = view.job
    e = eff.of_job(job, now=meta["now"], only_steps=view.steps)
    assert real["Job ID"] == str(job["job_id_raw"])
    if e.cores == 1:
        assert real["Cores"] == "1"
    else:
        assert (real["Nodes"], real["Cores per node"]) == (str(e.nodes), str(e.cores_per_node))
    if real["State"] == "PENDING":
        assert "CPU Utilized" not in real
        return
    assert real["CPU Utilized"] == eff.seff_time(e.cpu_used_s)
    cwt = eff.seff_time(e.core_walltime_s)
    assert real["CPU Efficiency"] == f"{eff.seff_pct(e.cpu_eff_pct)} of {cwt} core-walltime"
    assert real["Job Wall-clock time"] == eff.seff_time(e.elapsed_s)
    estimated = real["Memory Utilized"].endswith(" (estimated maximum)")
    assert estimated == e.mem_estimated
    assert real["Memory Utilized"].removesuffix(" (estimated maximum)") == eff.seff_kbytes(e.mem_used_kib)
    m = re.fullmatch(r"([\d.]+%) of (.+?)(?: \((.+)/(node|core)\))?", real["Memory Efficiency"])
    assert m, real["Memory Efficiency"]
    assert m[1] == eff.seff_pct(e.mem_eff_pct)
    assert m[2] == eff.seff_kbytes(e.mem_request_kib)
    if m[3] is not None:
        assert (m[3], m[4]) == (eff.seff_kbytes(e.mem_request_each_kib), "core" if e.mem_per == "cpu" else "node")


def test_the_recorded_cases_cover_seff_s_branches(engine):
    """The fixtures hold each form of seff's memory lines (else the test above proves less)."""
    texts = {p.stem: real_seff(p)[1] for p in CASES}
    assert texts["seff_pernode"]["Memory Efficiency"].endswith("(300.00 MB/node)")
    assert texts["seff_percpu"]["Memory Efficiency"].endswith("(150.00 MB/core)")
    assert texts["seff_running"]["State"] == "RUNNING"
    assert texts["seff_cpu"]["Cores per node"] == "2"
    assert texts["seff_pending"]["State"] == "PENDING"
    assert texts["seff_pernode_batch"]["Memory Utilized"] != texts["seff_pernode"]["Memory Utilized"]


# --- seff's formatting: its Perl subs, run by perl ---------------------------------------------
# time2str and kbytes2str verbatim from Slurm 22.05.8's contribs/seff/seff.
PERL = r'''
use POSIX qw/pow/;
sub time2str {
    my $time = shift;
    my $days = int($time / 86400);
    $time -= ($days * 86400);
    my $hours = int($time / 3600);
    $time -= ($hours * 3600);
    my $minutes = int($time / 60);
    my $seconds = $time % 60;

    $days = $days < 1 ? '' : "$days-";
    $time = $days . sprintf("%02s:%02s:%02s", $hours, $minutes, $seconds);
    return $time;
}
sub kbytes2str {
    my $kbytes = shift;
    if ($kbytes == 0) {
        return sprintf("%.2f %sB", 0.0, 'M');
    }
    my $mul = 1024;

    my $exp = int(log($kbytes) / log($mul));
    my @pre = qw/ K M G T P E /;
    my $pre = $pre[$exp];

    return sprintf("%.2f %sB", ($kbytes / pow($mul, $exp)), $pre ? $pre : "");
}
while (my $line = <STDIN>) {
    chomp $line;
    my ($kind, $v) = split / /, $line;
    print(($kind eq "t" ? time2str($v) : kbytes2str($v)), "\n");
}
'''


@pytest.mark.skipif(shutil.which("perl") is None, reason="needs perl (seff is a Perl script)")
def test_formats_equal_seff_s_perl():
    rnd = random.Random(11)
    times = [0, 1, 59, 60, 61, 3599, 3600, 3661, 86399, 86400, 90061, 10 * 86400 + 5, 400 * 86400 + 3599]
    times += [rnd.randrange(0, 10**8) for _ in range(300)]
    kib = [0.5, 1, 1.5, 800, 1023, 1024, 1025, 3340, 98406.4, 1048575, 1048576, 1048577, 1024.0**3, 1024.0**3 * 5.5,
           1024.0**4 * 3, 1024.0**5 * 2, 1024.0**6 * 7]
    kib += [rnd.uniform(1, 10**9) for _ in range(300)] + [float(rnd.randrange(1, 10**12)) for _ in range(300)]
    lines = [f"t {t}" for t in times] + [f"k {k!r}" for k in kib]
    out = subprocess.run(["perl", "-e", PERL], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout.splitlines()
    ours = [eff.seff_time(t) for t in times] + [eff.seff_kbytes(k) for k in kib]
    bad = [(line, p, o) for line, p, o in zip(lines, out, ours, strict=True) if p != o]
    assert not bad, bad[:10]
    assert eff.seff_kbytes(0) == "0.00 MB"


# --- the rules, by hand ------------------------------------------------------------------------
@pytest.mark.parametrize("text, millis, exact", [
    ("00:02.825", 2825, True), ("59:59.999", 3599999, True), ("00:00:00", 0, False),
    ("01:02:03", 3723000, False), ("1-02:03:04", 93784000, False), ("", 0, False), ("00:00.5", 500, True),
])
def test_cpu_millis(text, millis, exact):
    assert eff.cpu_millis(text) == (millis, exact)


def test_cpu_millis_refuses_garbage():
    with pytest.raises(ParseError):
        eff.cpu_millis("00:01.x")


@pytest.mark.parametrize("job, steps, want", [
    ("00:02.825", [], 3),                       # seff: 2 s + int(0.825 + 0.5)
    ("00:02.499", [], 2), ("00:02.500", [], 3),  # the half second rounds up
    ("00:00.000", [], 0), ("", ["00:01.200", "00:00.300"], 2),        # no job line: its steps, 1.5 s
    # one hour on, sacct cuts the job line's fraction: its steps' milliseconds (3600.5 s) are summed
    ("01:00:00", ["30:00.600", "29:59.900"], 3601),
    ("01:00:00", [], 3600),
    ("01:00:00", ["00:10.000"], 3600),          # steps that do not add up to the job line: the job line
])
def test_cpu_used_seconds(job, steps, want):
    assert eff.cpu_used_seconds(job, [StepUse(str(i), total_cpu=t) for i, t in enumerate(steps)]) == want


@pytest.mark.parametrize("usage, want", [
    ("cpu=00:00:00,energy=0,fs/disk=0,mem=3340K,pages=0,vmem=76644K", 3340 * 1024.0),
    ("mem=2.50G", 2.5 * 1024**3), ("mem=1024", 1024.0), ("mem=3M", 3 * 1024.0**2), ("mem=0", 0.0),
    ("mem=NONE", 0.0),                          # INFINITE64: seff counts 0
    ("cpu=00:00:01,vmem=1K", None), ("", None),
])
def test_tres_mem_bytes(usage, want):
    assert eff.tres_mem_bytes(usage) == want


def test_tres_mem_bytes_refuses_garbage():
    with pytest.raises(ParseError, match="not a memory size"):
        eff.tres_mem_bytes("mem=12Q")


def test_memory_peak_is_seff_s_first_strict_maximum_times_its_tasks():
    steps = [StepUse("batch", tres_usage_in_max="mem=100K", ntasks="1"),
             StepUse("0", tres_usage_in_max="mem=200K", ntasks="2"),
             StepUse("1", tres_usage_in_max="mem=200K", ntasks="1"),   # ties do not replace step 0
             StepUse("2", tres_usage_in_max="", ntasks="4")]           # reported nothing
    assert eff.mem_peak(steps) == (400.0, 2)
    assert eff.mem_peak([StepUse("batch")]) == (None, 0)
    assert eff.mem_peak([StepUse("batch", tres_usage_in_max="mem=0", ntasks="1")]) == (0.0, 0)  # as seff: 0 x 0


def test_memory_request():
    assert eff.mem_request_kib(400, "100M") == 400 * 1024        # the allocation first
    assert eff.mem_request_kib(None, "100M") == 100 * 1024
    assert eff.mem_request_kib(None, "1.50G") == 1536 * 1024
    assert eff.mem_request_kib(None, "4000Mn") == 4000 * 1024    # sacct before 21.08
    assert eff.mem_request_kib(None, "") is None


@pytest.mark.parametrize("line, want", [
    ("sbatch --mem=4G job.sh", "node"), ("sbatch --mem 4G job.sh", "node"),
    ("sbatch --mem-per-cpu=2G --wrap 'x --mem=1'", "cpu"),     # the wrapped command is not sbatch's
    ("sbatch --mem=1G --mem-per-cpu=100M job.sh", "cpu"),      # the last one wins
    ("sbatch -n2 job.sh", None), ("sbatch --mem-per-gpu=10G job.sh", None), ("", None),
    ("sbatch --wrap 'unbalanced", None),
])
def test_mem_basis(line, want):
    assert eff.mem_basis(line) == want


def test_percentages_and_the_time_limit():
    assert eff.percent(3, 14) == pytest.approx(21.428571, abs=1e-6)
    assert eff.percent(5, 0) == 0.0                  # seff: no core-walltime, 0 %
    assert eff.time_share(7, 600) == pytest.approx(7 / 6)
    assert eff.time_share(7, None) is None and eff.time_share(7, 0) is None
    assert math.isnan(eff.cpu_share(None, 10, 2)) and eff.cpu_share(5.0, 10, 2) == 0.25


def test_a_running_job_counts_until_now():
    assert eff.running_elapsed(100, None, 3, now=160) == 60
    assert eff.running_elapsed(100, 130, 30, now=160) == 30
    assert eff.running_elapsed(None, None, 0, now=160) == 0


def test_one_step_only(engine):
    """seff 9.1: the job's wall-clock time, that step's CPU time and memory (real seff passes
    the id to slurmdbd as a step list: the record it gets holds that step alone, as
    seff_pernode_batch.txt shows)."""
    job = stored(engine, "9").job
    e = eff.of_job(job, only_steps=["1"])
    # step 9.1 of store.sacct.txt: TotalCPU 00:02.194, TRESUsageInMax mem=3212K, NTasks 1
    assert (e.cpu_used_s, e.mem_used_kib, e.mem_tasks, e.elapsed_s) == (2, 3212.0, 1, 4)
