"""sacct output -> job records (piqc_slurm.slurm.records), on the recorded
fixtures (tests/fixtures/sacct/22.05.8, both forms: `-P` with local times and
the ingest form with epoch times and \\x1f), on more output recorded inline
below, and on generated and fuzzed files."""

from __future__ import annotations

import random
from pathlib import Path

import hostlist
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from piqc_slurm.errors import ParseError
from piqc_slurm.slurm.fields import INGEST_FIELDS
from piqc_slurm.slurm.parse import JOB_STATES, format_elapsed, format_time, format_tres
from piqc_slurm.slurm.records import JOB_COLUMNS, JobRecord, ParseResult, parse_sacct

pytestmark = pytest.mark.unit

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "sacct" / "22.05.8"
CASES = ["array", "cancelled_pending", "cancelled_running", "completed", "cpu_busy", "exclusive", "failed_exit3",
         "multistep", "timeout", "weird_name"]
WEIRD = "a|b<b>x</b>&'q`../z"


def load(case: str, form: str, **kw) -> ParseResult:
    path = FIX / f"{case}.{form}.txt"
    return parse_sacct(path.read_text(), source=path.name, epoch_times=(form == "ingest"), **kw)


def only(case: str, form: str) -> JobRecord:
    r = load(case, form)
    assert r.errors == []
    assert len(r.records) == 1
    return r.records[0]


def test_fixture_files_are_all_covered():
    assert sorted({p.name.split(".")[0] for p in FIX.glob("*.txt")}) == CASES


def test_ingest_fields_match_the_recorded_command():
    # Cases recorded before TotalCPU joined the ingest fields (2026-11-28) carry the list without it;
    # cpu_busy (2026-12-01) the list with it; tests/fixtures/steps (2026-12-02) the current one, every
    # sacct field. The parser takes any field order and subset, so all stay valid input.
    before_total_cpu = ["JobID", "JobIDRaw", "Cluster", "User", "UID", "Account", "Partition", "QOS", "State",
                        "ExitCode", "DerivedExitCode", "Submit", "Eligible", "Start", "End", "Elapsed", "ElapsedRaw",
                        "Timelimit", "AllocCPUS", "AllocNodes", "AllocTRES", "ReqTRES", "NodeList", "Reservation",
                        "WorkDir", "JobName", "Comment"]
    with_total_cpu = [*before_total_cpu[:19], "TotalCPU", *before_total_cpu[19:]]
    seen_current = False
    for path in [*FIX.glob("*.ingest.txt"), FIX.parent.parent / "steps" / "22.05.8" / "store.sacct.txt"]:
        command = next(line for line in path.read_text().splitlines() if line.startswith("# command:"))
        fmt = next(a for a in command.split() if a.startswith("--format="))
        seen_current |= fmt == "--format=" + ",".join(INGEST_FIELDS)
        assert fmt in ("--format=" + ",".join(INGEST_FIELDS), "--format=" + ",".join(before_total_cpu),
                       "--format=" + ",".join(with_total_cpu)), path.name
        assert "SLURM_TIME_FORMAT=%s" in command and "-D" in command.split()
    assert seen_current


def test_record_fields_are_the_store_columns():
    from piqc_slurm.store.models import Job

    # restarts comes from the summaries (SLURM_JOB_RESTART_COUNT): sacct 22.05 prints no restart count
    assert set(JOB_COLUMNS) == {c.name for c in Job.__table__.columns} - {"id", "updated_at", "restarts"}
    rec = only("completed", "ingest")
    assert set(rec.to_row()) == set(JOB_COLUMNS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("form", ["ingest", "parsable2"])
def test_every_fixture_parses_cleanly(case, form):
    r = load(case, form)
    assert r.errors == []
    assert r.records
    for rec in r.records:
        if rec.start is not None:
            assert rec.steps
        for s in rec.steps:
            assert s.job_id.startswith(rec.job_id + ".")


@pytest.mark.parametrize("case", CASES)
def test_both_forms_agree(case):
    """The `-P` ISO form (captured with TZ=UTC) and the epoch form say the same."""
    a, b = load(case, "ingest").records, load(case, "parsable2").records
    keys = ("job_id", "job_id_raw", "name", "user", "account", "partition", "state", "state_by", "exit_code",
            "submit", "start", "end", "elapsed", "nodes", "nodelist", "array_job_id", "array_task_id")
    assert [[getattr(r, k) for k in keys] for r in a] == [[getattr(r, k) for k in keys] for r in b]
    assert [[(s.step, s.state, s.exit_code, s.start, s.end) for s in r.steps] for r in a] == \
        [[(s.step, s.state, s.exit_code, s.start, s.end) for s in r.steps] for r in b]


def test_completed():
    r = only("completed", "ingest")
    assert r.to_row() == {
        "cluster": "piqc", "job_id_raw": 5, "submit": 1795868096, "job_id": "5", "array_job_id": None,
        "array_task_id": None, "het_job_id": None, "het_job_offset": None, "name": "fx-completed",
        "user": "piqcuser", "uid": 1001, "account": "research", "partition": "gpu", "qos": "normal",
        "state": "COMPLETED", "state_by": None, "exit_code": "0:0", "derived_exit_code": "0:0",
        "eligible": 1795868096, "start": 1795868096, "end": 1795868096, "elapsed": 0, "timelimit": None,
        "alloc_cpus": 1, "alloc_nodes": 1, "alloc_mem_mib": 100, "alloc_gpus": 1, "gpu_type": "h100",
        "alloc_tres": "billing=1,cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1", "nodelist": "vm",
        "work_dir": "/home/piqcuser", "comment": "", "exit_signal": 0, "total_cpu_s": None,
        "req_gpus": 1,
        # the recorded line's fields the typed columns do not reproduce, as printed
        "extra": {"Timelimit": "UNLIMITED", "ReqTRES": "billing=1,cpu=1,gres/gpu=1,mem=100M,node=1"},
        # the steps, as the recorded .batch/.extern lines differ from the job line
        "steps": [{"step": "batch", "submit": 1795868096, "eligible": 1795868096, "start": 1795868096,
                   "end": 1795868096,
                   "v": {"JobName": "batch", "AllocTRES": "cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1",
                         "User": "", "UID": "", "Partition": "", "QOS": "", "DerivedExitCode": "",
                         "Timelimit": "", "ReqTRES": "", "WorkDir": ""}},
                  {"step": "extern", "submit": 1795868096, "eligible": 1795868096, "start": 1795868096,
                   "end": 1795868096,
                   "v": {"JobName": "extern",  # its AllocTRES is the job line's: not repeated
                         "User": "", "UID": "", "Partition": "", "QOS": "", "DerivedExitCode": "",
                         "Timelimit": "", "ReqTRES": "", "WorkDir": ""}}]}
    assert r.nodes == ["vm"]
    assert [(s.step, s.name, s.state, s.exit_code) for s in r.steps] == [
        ("batch", "batch", "COMPLETED", "0:0"), ("extern", "extern", "COMPLETED", "0:0")]
    assert r.exit_signal == 0


def test_cpu_busy_total_cpu():
    # recorded: TotalCPU 00:01.988 on the job line, 00:01.986 on .batch, Elapsed 00:00:02
    r = only("cpu_busy", "ingest")
    assert r.total_cpu_s == pytest.approx(1.988) and r.elapsed == 2 and r.alloc_cpus == 1


def test_no_eligible_column_means_eligible_is_submit():
    text = (FIX / "completed.parsable2.txt").read_text()
    assert "Eligible" not in text
    r = parse_sacct(text, source="p2", epoch_times=False, tz="UTC").records[0]
    assert r.eligible == r.submit is not None


def test_failed_exit3():
    r = only("failed_exit3", "ingest")
    assert (r.state, r.exit_code, r.derived_exit_code) == ("FAILED", "3:0", "0:0")
    assert r.batch.exit_code == "3:0" and r.step("extern").state == "COMPLETED"


def test_cancelled_running():
    r = only("cancelled_running", "ingest")
    assert (r.state, r.state_by, r.exit_code) == ("CANCELLED", 0, "0:0")
    assert (r.batch.state, r.batch.exit_code, r.batch.signal) == ("CANCELLED", "0:15", 15)
    assert r.exit_signal == 15
    assert (r.alloc_gpus, r.gpu_type, r.start, r.end, r.elapsed) == (2, "h100", 1795868096, 1795868097, 1)


@pytest.mark.parametrize("form", ["ingest", "parsable2"])
def test_cancelled_pending(form):
    r = only("cancelled_pending", form)
    assert (r.state, r.state_by) == ("CANCELLED", 0)
    assert r.start is None and r.end == 1795868098
    assert r.nodes == [] and r.nodelist == ""
    assert r.steps == [] and r.exit_signal == 0
    if form == "ingest":
        assert r.eligible is None                      # Unknown: never eligible (held)
        assert r.timelimit is None                     # Partition_Limit
        assert (r.alloc_tres, r.alloc_gpus, r.alloc_mem_mib, r.alloc_nodes, r.alloc_cpus) == ("", 0, None, 0, 1)


def test_timeout():
    r = only("timeout", "ingest")
    assert (r.state, r.exit_code, r.exit_signal) == ("TIMEOUT", "0:0", 15)
    assert (r.batch.state, r.batch.exit_code) == ("CANCELLED", "0:15")
    assert r.timelimit == 60 and r.elapsed == 107 == r.end - r.start


def test_array_out_of_order():
    r = load("array", "ingest")
    assert r.errors == []
    got = [(x.job_id, x.job_id_raw, x.array_job_id, x.array_task_id, len(x.steps)) for x in r.records]
    assert got == [("10_1", 14, 10, 1, 2), ("10_2", 15, 10, 2, 2), ("10_3", 10, 10, 3, 2)]
    assert all(s.job_id.startswith(x.job_id + ".") for x in r.records for s in x.steps)


def test_multistep():
    r = only("multistep", "ingest")
    assert [s.step for s in r.steps] == ["batch", "extern", "0", "1", "2"]
    assert [s.name for s in r.steps[2:]] == ["true", "true", "false"]
    assert r.step("1").alloc_tres == "cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1"
    assert (r.state, r.exit_code, r.derived_exit_code) == ("FAILED", "1:0", "1:0")
    assert (r.step("2").state, r.step("2").exit_code) == ("FAILED", "1:0")


def test_exclusive_gets_all_gpus_from_alloc_tres():
    r = only("exclusive", "ingest")
    assert (r.alloc_gpus, r.gpu_type, r.alloc_cpus, r.alloc_mem_mib) == (8, "h100", 64, 6400)


@pytest.mark.parametrize("form", ["ingest", "parsable2"])
def test_weird_name(form):
    r = only("weird_name", form)
    assert r.name == WEIRD
    assert (r.user, r.state, r.start) == ("piqcuser", "COMPLETED", 1795868099)
    assert [s.name for s in r.steps] == ["batch", "extern"]


# --- more output recorded on the test cluster (Slurm 22.05.8, TZ=UTC, 2026-11-28) ----------
# sbatch -J $'a\nb' / -J $'x\x1fy' / -J 'p|q' --comment='c|d' / -J $'t\tu'  (Comment is not
# stored without AccountingStoreFlags=job_comment: it prints empty). Commands:
#   sacct -a -P -j 145,146,147,148 --format=JobID,JobIDRaw,State,Submit,JobName,Comment
NAMES_P2 = ("JobID|JobIDRaw|State|Submit|JobName|Comment\n"
            "145|145|COMPLETED|2026-11-28T12:30:19|a\nb|\n"
            "145.batch|145.batch|COMPLETED|2026-11-28T12:30:20|batch|\n"
            "145.extern|145.extern|COMPLETED|2026-11-28T12:30:20|extern|\n"
            "146|146|COMPLETED|2026-11-28T12:30:19|x\x1fy|\n"
            "146.batch|146.batch|COMPLETED|2026-11-28T12:30:20|batch|\n"
            "146.extern|146.extern|COMPLETED|2026-11-28T12:30:20|extern|\n"
            "147|147|COMPLETED|2026-11-28T12:30:19|p|q|\n"
            "147.batch|147.batch|COMPLETED|2026-11-28T12:30:20|batch|\n"
            "147.extern|147.extern|COMPLETED|2026-11-28T12:30:20|extern|\n"
            "148|148|COMPLETED|2026-11-28T12:30:19|t\tu|\n"
            "148.batch|148.batch|COMPLETED|2026-11-28T12:30:20|batch|\n"
            "148.extern|148.extern|COMPLETED|2026-11-28T12:30:20|extern|\n")
#   SLURM_TIME_FORMAT=%s sacct -a -P -D --delimiter=$'\x1f' -X -j 145,146,147,148 --format=(same)
NAMES_US = ("JobID\x1fJobIDRaw\x1fState\x1fSubmit\x1fJobName\x1fComment\n"
            "145\x1f145\x1fCOMPLETED\x1f1795869019\x1fa\nb\x1f\n"
            "146\x1f146\x1fCOMPLETED\x1f1795869019\x1fx\x1fy\x1f\n"
            "147\x1f147\x1fCOMPLETED\x1f1795869019\x1fp|q\x1f\n"
            "148\x1f148\x1fCOMPLETED\x1f1795869019\x1ft\tu\x1f\n")
#   sacct -a -p -X -j 145,146,147,148 --format=(same)     (-p: a trailing delimiter on every line)
NAMES_P1 = ("JobID|JobIDRaw|State|Submit|JobName|Comment|\n"
            "145|145|COMPLETED|2026-11-28T12:30:19|a\nb||\n"
            "146|146|COMPLETED|2026-11-28T12:30:19|x\x1fy||\n"
            "147|147|COMPLETED|2026-11-28T12:30:19|p|q||\n"
            "148|148|COMPLETED|2026-11-28T12:30:19|t\tu||\n")
# A held array, a het job (both cancelled pending) and a job requeued once while
# running (scontrol requeue), then cancelled pending:
#   SLURM_TIME_FORMAT=%s sacct -a -P -D --delimiter=$'\x1f' -j 150,151,153 --format=JobID,JobIDRaw,State,
#     ExitCode,DerivedExitCode,Submit,Eligible,Start,End,Elapsed,Timelimit,AllocTRES,NodeList,JobName
REQUEUE_HET_ARRAY = """\
JobID␟JobIDRaw␟State␟ExitCode␟DerivedExitCode␟Submit␟Eligible␟Start␟End␟Elapsed␟Timelimit␟AllocTRES␟NodeList␟JobName
151+0␟151␟CANCELLED by 0␟0:0␟0:0␟1795869039␟1795869039␟None␟1795869076␟00:00:00␟Partition_Limit␟␟None assigned␟pr-het
151+1␟152␟CANCELLED by 0␟0:0␟0:0␟1795869039␟1795869039␟None␟1795869076␟00:00:00␟Partition_Limit␟␟None assigned␟pr-het
153␟153␟REQUEUED␟0:0␟0:0␟1795869039␟1795869039␟1795869079␟1795869083␟00:00:04␟365-00:00:00␟billing=1,cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1␟vm␟pr-requeue
153.batch␟153.batch␟CANCELLED␟0:15␟␟1795869079␟1795869079␟1795869079␟1795869084␟00:00:05␟␟cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1␟vm␟batch
153.extern␟153.extern␟COMPLETED␟0:0␟␟1795869079␟1795869079␟1795869079␟1795869083␟00:00:04␟␟billing=1,cpu=1,gres/gpu:h100=1,gres/gpu=1,mem=100M,node=1␟vm␟extern
150_[1-5%2]␟150␟CANCELLED by 0␟0:0␟0:0␟1795869039␟Unknown␟None␟1795869126␟00:00:00␟Partition_Limit␟␟None assigned␟pr-arrheld
153␟153␟CANCELLED by 0␟0:0␟0:0␟1795869085␟1795869206␟None␟1795869126␟00:00:00␟Partition_Limit␟␟None assigned␟pr-requeue
""".replace("␟", "\x1f")  # noqa: E501

EXPECTED_NAMES = {"145": "a\nb", "146": "x\x1fy", "147": "p|q", "148": "t\tu"}


@pytest.mark.parametrize("text,epoch", [(NAMES_P2, False), (NAMES_US, True), (NAMES_P1, False)])
def test_recorded_odd_names_in_every_form(text, epoch):
    r = parse_sacct(text, source="inline", epoch_times=epoch)
    assert r.errors == []
    assert {x.job_id: x.name for x in r.records} == EXPECTED_NAMES
    assert all(x.comment == "" and x.submit == 1795869019 for x in r.records)
    if text is NAMES_P2:
        assert all([s.step for s in x.steps] == ["batch", "extern"] for x in r.records)


def test_recorded_requeue_het_and_pending_array():
    r = parse_sacct(REQUEUE_HET_ARRAY, source="inline", epoch_times=True)
    assert r.errors == []
    got = [(x.job_id, x.job_id_raw, x.submit, x.state, x.het_job_id, x.het_job_offset, x.array_job_id,
            x.array_task_id, len(x.steps)) for x in r.records]
    assert got == [
        ("151+0", 151, 1795869039, "CANCELLED", 151, 0, None, None, 0),
        ("151+1", 152, 1795869039, "CANCELLED", 151, 1, None, None, 0),
        ("153", 153, 1795869039, "REQUEUED", None, None, None, None, 2),
        ("150_[1-5%2]", 150, 1795869039, "CANCELLED", None, None, 150, None, 0),
        ("153", 153, 1795869085, "CANCELLED", None, None, None, None, 0),
    ]
    first = r.records[2]
    assert first.timelimit == 365 * 86400 and first.exit_signal == 15
    assert r.records[4].eligible == 1795869206 and r.records[4].start is None


# --- header, delimiter, order --------------------------------------------------------------
def _table(text: str, delim: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    return lines[0].split(delim), [ln.split(delim) for ln in lines[1:]]


def _typed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("extra", "steps")}


@pytest.mark.parametrize("case", [c for c in CASES if c != "weird_name"])
@pytest.mark.parametrize("seed", range(3))
def test_any_field_order_and_extra_fields(case, seed):
    text = (FIX / f"{case}.ingest.txt").read_text()
    header, rows = _table(text, "\x1f")
    order = list(range(len(header)))
    random.Random(seed).shuffle(order)
    header2 = [header[i] for i in order] + ["MaxRSS", "NewFieldOfSlurm99"]
    rows2 = [[row[i] for i in order] + ["12K", "whatever"] for row in rows]
    for delim in ("\x1f", "|"):
        out = "\n".join(delim.join(x) for x in [header2, *rows2]) + "\n"
        r = parse_sacct(out, source="shuffled", epoch_times=True)
        assert r.errors == []
        base = load(case, "ingest").records
        assert [_typed(x.to_row()) for x in r.records] == [_typed(x.to_row()) for x in base]
        # the verbatim fields gain the added one; a field sacct 22.05.8 does not have is dropped
        assert [x.extra for x in r.records] == [{**x.extra, "MaxRSS": "12K"} for x in base]


def test_header_names_are_case_insensitive_and_delimiter_may_be_given():
    text = (FIX / "completed.parsable2.txt").read_text()
    lines = text.splitlines()
    lines[2] = lines[2].upper()
    r = parse_sacct("\n".join(lines), source="x", epoch_times=False, delimiter="|")
    assert r.errors == [] and r.records[0].name == "fx-completed"


def test_crlf_and_bom():
    text = (FIX / "timeout.ingest.txt").read_text()
    r = parse_sacct("\ufeff" + text.replace("\n", "\r\n"), source="x", epoch_times=True)
    assert r.errors == [] and r.records[0].to_row() == only("timeout", "ingest").to_row()


@pytest.mark.parametrize("text,message", [
    ("", "no sacct header"),
    ("# only a comment\n", "no sacct header"),
    ("5|5|fx|COMPLETED\n", "not a sacct header"),
    ("JobName|State\nx|RUNNING\n", "lacks JobID, Submit"),
    ("JobID|State\n5|RUNNING\n", "lacks Submit"),
])
def test_bad_or_missing_header(text, message):
    r = parse_sacct(text, source="f.txt", epoch_times=False)
    assert r.records == [] and len(r.errors) == 1 and message in str(r.errors[0])
    with pytest.raises(ParseError, match=message):
        parse_sacct(text, source="f.txt", epoch_times=False, strict=True)


def test_time_zone_for_iso_files():
    text = (FIX / "completed.parsable2.txt").read_text()
    utc = parse_sacct(text, source="x", epoch_times=False).records[0]
    ny = parse_sacct(text, source="x", epoch_times=False, tz="America/New_York").records[0]
    assert ny.submit - utc.submit == 5 * 3600
    with pytest.raises(ParseError, match="time zone"):
        parse_sacct(text, source="x", epoch_times=False, tz="No/Such_Zone")


def test_cluster_default_when_output_has_no_cluster_field():
    r = parse_sacct((FIX / "completed.parsable2.txt").read_text(), source="x", epoch_times=False, cluster="c1")
    assert r.records[0].cluster == "c1"
    assert only("completed", "ingest").cluster == "piqc"


# --- bad lines -----------------------------------------------------------------------------
def test_malformed_line_is_an_error_entry_and_is_skipped():
    text = (FIX / "multistep.ingest.txt").read_text().replace("FAILED\x1f1:0\x1f1:0", "FAILED\x1f1:x\x1f1:0", 1)
    text += "\n".join([
        "20\x1f20\x1fpiqc\x1fu\x1f1\x1fa\x1fp\x1fq\x1fNOT A STATE\x1f0:0",   # short: 10 fields of 27
    ]) + "\n"
    r = parse_sacct(text, source="multistep.ingest.txt", epoch_times=True)
    assert r.records == []
    e1, *rest = r.errors
    assert (e1.source, e1.line, e1.field, e1.value) == ("multistep.ingest.txt", 4, "ExitCode", "1:x")
    assert "'1:x'" in str(e1) and str(e1).startswith("multistep.ingest.txt:4: field ExitCode:")
    # its steps lose their job, and the short line is reported with its line number
    assert [e.line for e in rest] == [5, 6, 7, 8, 9, 10]
    assert "without its job's allocation line" in str(rest[0])
    assert "expected 27 fields, found 10" in str(rest[-1])
    with pytest.raises(ParseError) as exc:
        parse_sacct(text, source="multistep.ingest.txt", epoch_times=True, strict=True)
    assert exc.value.line == 4 and exc.value.field == "ExitCode"


def test_good_lines_survive_bad_neighbours():
    good = (FIX / "completed.ingest.txt").read_text()
    bad_line = "garbage\x1f" * 26 + "x\n"
    r = parse_sacct(good + bad_line + "\n".join(good.splitlines()[3:]) + "\n", source="x", epoch_times=True)
    assert [x.job_id for x in r.records] == ["5", "5"]
    assert len(r.errors) == 1 and r.errors[0].line == 7 and r.errors[0].field == "JobID"


def test_array_task_without_jobidraw_is_an_error():
    text = "JobID|Submit|State\n10_1|2026-11-28T12:14:58|COMPLETED\n11|2026-11-28T12:14:58|COMPLETED\n"
    r = parse_sacct(text, source="x", epoch_times=False)
    assert [x.job_id_raw for x in r.records] == [11]
    assert "needs the JobIDRaw field" in str(r.errors[0])


def test_missing_submit_is_an_error():
    r = parse_sacct("JobID|Submit\n5|Unknown\n", source="x", epoch_times=False)
    assert r.records == [] and r.errors[0].field == "Submit"


def test_steps_fill_what_the_job_line_left_empty():
    text = "JobID|Submit|State|ExitCode\n5|1795868096||\n5.batch|1795868096|CANCELLED|0:15\n"
    rec = parse_sacct(text, source="x", epoch_times=True).records[0]
    assert (rec.state, rec.exit_code) == ("CANCELLED", "0:15")


def test_delimiters_in_two_free_text_fields_resolved_by_the_fields_between():
    text = "JobID|JobName|Submit|Comment\n5|a|b|1795868096|c|d\n6|plain|1795868096|e|f|g\n"
    r = parse_sacct(text, source="x", epoch_times=True)
    assert r.errors == []
    assert [(x.name, x.comment) for x in r.records] == [("a|b", "c|d"), ("plain", "e|f|g")]


def test_ambiguous_delimiters_without_jobname_are_an_error():
    r = parse_sacct("JobID|Submit|WorkDir|Comment\n5|1795868096|/a|b|c\n", source="x", epoch_times=True)
    assert r.records == [] and "cannot tell which of WorkDir, Comment" in str(r.errors[0])
    r = parse_sacct("JobID|Submit|State\n5|1795868096|COMPLETED|x\n", source="x", epoch_times=True)
    assert "no free-text field" in str(r.errors[0])


def test_newline_in_a_last_free_text_field():
    text = "JobID|Submit|JobName\n5|1795868096|two\nlines\n6|1795868096|x\n7\n"
    r = parse_sacct(text, source="x", epoch_times=True)
    assert [(x.job_id, x.name) for x in r.records] == [("5", "two\nlines"), ("6", "x")]
    # a lone `7` parses as a JobID: a truncated record, not a continuation of x
    assert len(r.errors) == 1 and r.errors[0].line == 5


# --- generated files: render records, parse them back ---------------------------------------
NAME_ANY = st.text(st.one_of(st.sampled_from("|\x1f|\x1f\t#=,:. "),
                             st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",))), max_size=20)
NAME_NEWLINES = st.lists(st.from_regex(r"[a-z ]{1,6}", fullmatch=True), min_size=1, max_size=4).map("\n".join)
FIELDS_GEN = ["JobID", "JobIDRaw", "State", "ExitCode", "Submit", "Start", "End", "Elapsed", "AllocTRES",
              "NodeList", "User", "JobName"]


@st.composite
def sacct_files(draw, names, inject_delimiter=False, newlines=False):
    delim = draw(st.sampled_from(["|", "\x1f"]))
    epoch = draw(st.booleans())
    trailing = draw(st.booleans())
    fields = list(FIELDS_GEN)
    with_comment = draw(st.booleans())
    if with_comment:
        fields.append("Comment")
    fields = draw(st.permutations(fields))
    # free text both first and last: a line without delimiter could end one record or start the next
    assume(not (newlines and {fields[0], fields[-1]} == {"JobName", "Comment"}))
    ids = draw(st.lists(st.integers(1, 10**7), min_size=1, max_size=5, unique=True))
    jobs, lines = [], [delim.join(fields) + (delim if trailing else "")]
    for jid in ids:
        t0 = draw(st.integers(10**6, 4 * 10**9))
        start = draw(st.one_of(st.none(), st.integers(t0, t0 + 10**6)))
        end = None if start is None else draw(st.one_of(st.none(), st.integers(start, start + 10**6)))
        state = draw(st.sampled_from(sorted(JOB_STATES)))
        by = draw(st.one_of(st.none(), st.integers(0, 10**6))) if state == "CANCELLED" else None
        rc, sig = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        elapsed = draw(st.integers(0, 10**7))
        tres = draw(st.dictionaries(st.sampled_from(["cpu", "mem", "node", "gres/gpu", "gres/gpu:h100"]),
                                    st.integers(0, 64).map(str), max_size=5))
        nodes = draw(st.lists(st.from_regex(r"[a-z]{1,3}[0-9]{0,2}", fullmatch=True), max_size=4, unique=True))
        name = draw(names)
        if inject_delimiter:
            for _ in range(draw(st.integers(0, 3))):     # make sure the delimiter itself turns up
                k = draw(st.integers(0, len(name)))
                name = name[:k] + delim + name[k:]
        comment = draw(st.from_regex(r"[a-z0-9 ]{0,8}", fullmatch=True)) if with_comment else ""
        user = draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))

        def t(x):
            return "Unknown" if x is None else format_time(x, epoch=epoch)

        nodelist = hostlist.collect_hostlist(nodes) if nodes else "None assigned"
        job = {"JobID": str(jid), "JobIDRaw": str(jid), "State": state + (f" by {by}" if by is not None else ""),
               "ExitCode": f"{rc}:{sig}", "Submit": t(t0), "Start": "None" if start is None else t(start),
               "End": t(end), "Elapsed": format_elapsed(elapsed), "AllocTRES": format_tres(tres),
               "NodeList": nodelist, "User": user, "JobName": name, "Comment": comment}
        step = dict(job, JobID=f"{jid}.batch", JobIDRaw=f"{jid}.batch", State="CANCELLED", ExitCode="0:15",
                    User="", JobName="batch", Comment="")
        for row in (job, step):
            lines.append(delim.join(row[f] for f in fields) + (delim if trailing else ""))
        jobs.append({"job_id": str(jid), "job_id_raw": jid, "name": name, "comment": comment, "user": user,
                     "state": state, "state_by": by, "exit_code": f"{rc}:{sig}", "submit": t0, "start": start,
                     "end": end, "elapsed": elapsed, "nodes": sorted(nodes), "alloc_tres": format_tres(tres)})
    return "\n".join(lines) + "\n", epoch, jobs


def _check_generated(generated):
    text, epoch, jobs = generated
    r = parse_sacct(text, source="gen", epoch_times=epoch)
    assert r.errors == [], (text, r.errors)
    got = []
    for x in r.records:
        row = dict(x.to_row(), nodes=sorted(x.nodes))
        got.append({k: row[k] for k in jobs[0]})
    assert got == jobs
    for x in r.records:
        assert [s.step for s in x.steps] == ["batch"]
        assert x.exit_signal == (int(x.exit_code.split(":")[1]) or 15)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(sacct_files(NAME_ANY, inject_delimiter=True))
def test_generated_files_with_delimiters_in_names(generated):
    _check_generated(generated)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(sacct_files(NAME_NEWLINES, newlines=True))
def test_generated_files_with_newlines_in_names(generated):
    _check_generated(generated)


# --- fuzzed files: records and errors, never another exception --------------------------------
FIXTURE_TEXTS = {p.name: p.read_text() for p in sorted(FIX.glob("*.txt"))}


def _mutate(text: str, ops: list[tuple[str, int, str]]) -> str:
    lines = text.split("\n")
    for op, pos, junk in ops:
        if not lines:
            lines = [junk]
            continue
        i = pos % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "truncate":
            lines[i] = lines[i][: pos % (len(lines[i]) + 1)]
        elif op == "insert":
            lines.insert(i, junk)
        elif op == "field":
            for d in ("\x1f", "|"):
                parts = lines[i].split(d)
                if len(parts) > 1:
                    parts[pos % len(parts)] = junk
                    lines[i] = d.join(parts)
                    break
        elif op == "drop_field":
            for d in ("\x1f", "|"):
                parts = lines[i].split(d)
                if len(parts) > 1:
                    del parts[pos % len(parts)]
                    lines[i] = d.join(parts)
                    break
        elif op == "add_field":
            lines[i] = lines[i] + random.Random(pos).choice(["\x1f", "|"]) + junk
        elif op == "swap":
            j = (pos // 7) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


JUNK = st.one_of(st.text(max_size=30), st.sampled_from(
    ["None", "Unknown", "CANCELLED by", "1-25:00:00", "n[1-", "gres/gpu=x", "999999999999999999999", "\x1f", "|",
     "10_[1-3%2]", "12.batch", "", "\n", "#", "mem=1.5.0G", "uts0", "٣"]))
OPS = st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "truncate", "insert", "field", "drop_field",
                                          "add_field", "swap"]), st.integers(0, 10**6), JUNK), max_size=8)


def _parse_both_ways(text: str, epoch: bool, tz=None) -> ParseResult:
    r = parse_sacct(text, source="fuzz", epoch_times=epoch, tz=tz)
    assert isinstance(r, ParseResult)
    for e in r.errors:
        assert isinstance(e, ParseError) and e.source == "fuzz"
        assert "internal error" not in str(e), str(e)
    for rec in r.records:
        assert isinstance(rec, JobRecord) and rec.job_id and isinstance(rec.submit, int)
    try:
        strict = parse_sacct(text, source="fuzz", epoch_times=epoch, tz=tz, strict=True)
    except ParseError:
        assert r.errors
    else:
        assert r.errors == [] and len(strict.records) == len(r.records)
    return r


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FIXTURE_TEXTS)), OPS)
def test_fuzzed_fixtures(name, ops):
    _parse_both_ways(_mutate(FIXTURE_TEXTS[name], ops), epoch=name.endswith(".ingest.txt"))


@settings(max_examples=200)
@given(st.sampled_from(sorted(FIXTURE_TEXTS)), st.booleans(), st.text(max_size=400))
def test_random_text_after_a_real_header(name, epoch, body):
    header = "\n".join(FIXTURE_TEXTS[name].split("\n")[:3])
    _parse_both_ways(header + "\n" + body, epoch=epoch, tz="Europe/Berlin")


@settings(max_examples=200)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes(data, epoch):
    _parse_both_ways(data.decode("utf-8", errors="replace"), epoch=epoch)
    _parse_both_ways(data.decode("latin-1"), epoch=epoch)


@settings(max_examples=200)
@given(st.lists(st.lists(st.one_of(JUNK, st.sampled_from(["5", "5.batch", "1795868096", "COMPLETED", "0:0",
                                                                 "vm", "gres/gpu=1", "00:00:01"])),
                         max_size=8), max_size=8), st.sampled_from(["|", "\x1f"]))
def test_random_fields_under_real_field_names(rows, delim):
    header = delim.join(["JobID", "JobIDRaw", "Submit", "State", "ExitCode", "NodeList", "AllocTRES",
                         "Elapsed"])
    text = header + "\n" + "\n".join(delim.join(r) for r in rows) + "\n"
    _parse_both_ways(text, epoch=True)


@pytest.mark.parametrize("header,line,field,message", [
    ("JobID|JobIDRaw|Submit", "5|5.batch|1795868096", "JobIDRaw", "not a raw job id"),
    ("JobID|Submit|UID", "5|1795868096|99999999999", "UID", "uid out of range"),
    ("JobID|Submit|AllocTRES", "5|1795868096|cpu=1,gres/gpu=2M", "AllocTRES", "not a count"),
    ("JobID|Submit|AllocTRES", "5|1795868096|mem=lots", "AllocTRES", "not a memory size"),
    ("JobID|Submit|NodeList", "5|1795868096|n[1-", "NodeList", "bad node list"),
    ("JobID|Submit|Timelimit", "5|1795868096|forever", "Timelimit", "not a duration"),
    ("JobID|Submit|State", "5|1795868096|CANCELLED by 4294967296", "State", "uid out of range"),
    ("JobID|Submit|", "5|1795868096", None, "trailing '|'"),
    ("JobID|Submit|", "5|1795868096|x", None, "trailing '|'"),
])
def test_field_errors_name_field_and_value(header, line, field, message):
    r = parse_sacct(f"{header}\n{line}\n", source="f", epoch_times=True)
    assert r.records == [] and len(r.errors) == 1
    e = r.errors[0]
    assert message in str(e) and e.field == field and e.line == 2 and e.source == "f"
