"""-o parsing, cell rendering and time formatting, as sacct 22.05.8 does them.

The expected strings come from real sacct runs on the test cluster
(tests/fixtures/query/22.05.8/, e.g. widths_table.txt, samefield_widths.txt,
prefixes_p_delim.txt, strftime_table.txt) and from src/common/print_fields.c."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piqc_slurm.errors import UsageError
from piqc_slurm.query import fields as F
from piqc_slurm.query.render import PARSABLE, PARSABLE2, TABLE, Renderer, secs2time_str
from piqc_slurm.query.timefmt import NO_VAL, TimeFormatter

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("utc")]

T = 1795868098  # 2026-11-28T12:14:58Z


def names(spec: str) -> list[tuple[str, int]]:
    return [(c.field.name, c.width) for c in F.parse_format([spec])]


# --- -o parsing ------------------------------------------------------------------------
def test_default_format_and_widths_are_sacct_s():
    assert names(F.DEFAULT_FORMAT) == [("JobID", -12), ("JobName", 10), ("Partition", 10), ("Account", 10),
                                       ("AllocCPUS", 10), ("State", 10), ("ExitCode", 8)]


def test_prefixes_resolve_in_sacct_table_order():
    # real sacct: jobidr,acc,st,exitc,nodel,user,part -> these headers (prefixes_p_delim.txt)
    assert [n for n, _ in names("jobidr,acc,st,exitc,nodel,user,part")] == [
        "JobIDRaw", "Account", "Start", "ExitCode", "NodeList", "User", "Partition"]
    assert [n for n, _ in names("JOBN,jobid,STATE,gpuu,co,allocg")] == [
        "JobName", "JobID", "State", "GPUUtilAvg", "Comment", "AllocGPUs"]


def test_any_prefix_of_all_means_every_field():
    every = [f.name for f in F.FIELDS]
    assert [n for n, _ in names("a")] == every
    assert [n for n, _ in names("ALL%7")] == every and {w for _, w in names("all%7")} == {7}


def test_width_is_atoi_and_the_last_one_given_for_a_field_wins():
    assert names("JobName%30,JobID%-5,State%0,End%x") == [("JobName", 30), ("JobID", -5), ("State", 0),
                                                          ("End", 0)]
    assert names("jobid%5,jobid%20") == [("JobID", 20), ("JobID", 20)]   # samefield_widths.txt
    with pytest.raises(UsageError):     # sacct drops leading blanks only: "jobid " is no field
        names(" jobid , state")


def test_leading_blanks_are_dropped_and_several_o_add_up():
    assert [c.field.name for c in F.parse_format([" jobid", "state,", ",exitcode"])] == [
        "JobID", "State", "ExitCode"]


def test_unknown_fields_are_refused_clearly_and_every_sacct_field_is_kept():
    with pytest.raises(UsageError, match='Invalid field requested: "nosuch"'):
        F.parse_format(["jobid,nosuch"])
    # sacct's table order: AdminComment before our AdviceGPUs; MaxRSS (width 10) kept verbatim
    assert [(c.field.name, c.width) for c in F.parse_format(["ad,maxrss"])] == [("AdminComment", 15), ("MaxRSS", 10)]
    assert {f.name for f in F.FIELDS if f.sacct} == set(F.SACCT_FIELD_ORDER)


def test_c_atoi():
    assert [F.c_atoi(s) for s in ("30", "-30", " 7x", "+4", "x", "", "-")] == [30, -30, 7, 4, 0, 0, 0]


def test_helpformat_lists_every_field_with_a_meaning():
    text = F.helpformat()
    for f in F.FIELDS:
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [f.name])
        assert len(line.split(None, 1)[1]) > 10
    for name in F.SHARED_FIELDS + F.ADDED_FIELDS:
        assert name in F.BY_NAME


# --- cells --------------------------------------------------------------------------
def cells(spec: str, values: list, mode: str = TABLE, delim: str | None = None, env=None) -> bytes:
    r = Renderer(F.parse_format([spec]), mode, delim, TimeFormatter(env=env or {}, now=T))
    return r.line(values)


def test_table_strings_truncate_with_plus_numbers_and_durations_overflow():
    # widths_table.txt: JobName%30,JobID%-5,State%5,Start%10,End%-25,AllocCPUS%3,Elapsed%3,NodeList%2
    got = cells("JobName%30,JobID%-5,State%5,Start%10,End%-25,AllocCPUS%3,Elapsed%3,NodeList%2",
                ["fx-held", "8", "CANCELLED by 0", NO_VAL, T, 0, 0, "None assigned"])
    assert got == (b"                       fx-held 8     CANC+       None 2026-11-28T12:14:58       "
                   b"  0 00:00:00 N+ \n")


def test_header_and_dashes():
    r = Renderer(F.parse_format(["jobid%5,jobid%20,state%0,jobn"]), TABLE, None, TimeFormatter(env={}, now=T))
    assert r.header() == (b"               JobID                JobID     JobName \n"
                          b"-------------------- --------------------  ---------- \n")


def test_width_zero_prints_nothing_but_the_blank():
    assert cells("state%0,uid%0", ["CANCELLED by 0", 1001]) == b" 1001 \n"


def test_parsable_forms_and_delimiters():
    vals = ["12", None, 7]
    assert cells("jobid,jobname,uid", vals, PARSABLE2) == b"12||7\n"
    assert cells("jobid,jobname,uid", vals, PARSABLE) == b"12||7|\n"
    assert cells("jobid,jobname,uid", vals, PARSABLE, ";;") == b"12;;;;7;;\n"
    assert cells("uid", [None], TABLE) == b"       \n"        # 6 blanks and the separator


def test_dates_are_cut_to_the_width_even_when_parsable():
    # widths_P.txt: Start%5 -> '2026-' / 'None'; End%4 -> '2026'
    assert cells("Start%5,End%4,Elapsed%2", [T, T, 0], PARSABLE2) == b"2026-|2026|00:00:00\n"
    assert cells("Start%5,End", [NO_VAL, 0], PARSABLE2) == b"None|Unknown\n"
    assert cells("Start%5,Start", [NO_VAL, 0], PARSABLE2) == b"None|Unkno\n"     # one width per field
    assert cells("Start%3", [0], PARSABLE2) == b"Unk\n"


def test_byte_widths_cut_multibyte_names_where_sacct_does():
    got = cells("JobName%5", ["h\u00e9llo!"])     # 7 bytes: 'h', 2-byte e-acute, 'llo!'
    assert got == b"h\xc3\xa9l+ \n"


def test_secs2time_str():
    assert [secs2time_str(s) for s in (0, 59, 3600, 86399, 86400, 93784, -1)] == [
        "00:00:00", "00:00:59", "01:00:00", "23:59:59", "1-00:00:00", "1-02:03:04", "INVALID"]


@given(st.integers(min_value=0, max_value=10**7))
def test_secs2time_str_round_trips_through_the_sacct_parser(s):
    from piqc_slurm.slurm.parse import parse_elapsed

    assert parse_elapsed(secs2time_str(s)) == s


# --- time formats -----------------------------------------------------------------------
def fmt(env: dict, t: int = T, size: int = 20, now: int = T) -> bytes:
    return TimeFormatter(env=env, now=now).text(t, size)


def test_standard_epoch_and_strftime_formats():
    assert fmt({}) == b"2026-11-28T12:14:58"
    assert fmt({"SLURM_TIME_FORMAT": "standard"}) == b"2026-11-28T12:14:58"
    assert fmt({"SLURM_TIME_FORMAT": "%s"}) == b"1795868098"
    assert fmt({"SLURM_TIME_FORMAT": "%a %d %b %Y %H:%M:%S"}) == b"Sat 28 Nov 2026 12:"   # strftime_P.txt
    assert fmt({"SLURM_TIME_FORMAT": "%p"}) == b"PM"


def test_unset_and_never_times():
    assert fmt({}, 0) == b"Unknown" and fmt({}, NO_VAL) == b"None"
    assert fmt({"SLURM_TIME_FORMAT": "%s"}, 0) == b"Unknown"


def test_results_that_do_not_fit_become_hashes():
    assert fmt({"SLURM_TIME_FORMAT": "%c%c%c%c%c%c%c%c%c%c%c"}, size=20) == b"#" * 19


def test_invalid_formats_fall_back_with_one_warning():
    seen: list[str] = []
    f = TimeFormatter(env={"SLURM_TIME_FORMAT": "abc"}, now=T, warn=seen.append)
    assert f.text(T, 20) == b"2026-11-28T12:14:58" and f.text(T, 20) == b"2026-11-28T12:14:58"
    assert seen == ["piqc-slurm sacct: error: invalid SLURM_TIME_FORMAT = 'abc'"]
    too_long = "%Y" * 16
    assert TimeFormatter(env={"SLURM_TIME_FORMAT": too_long}, now=T, warn=seen.append).text(T, 20) == \
        b"2026-11-28T12:14:58"


@pytest.mark.parametrize("delta,expected", [
    (0, b"12:14:58"), (-86400, b"Ystday 12:14"), (86400, b"Tomorr 12:14"), (3 * 86400, b"Tue 12:14"),
    (-3 * 86400, b"25 Nov 12:14"), (-30 * 86400, b"29 Oct 12:14"), (-400 * 86400, b"24 Oct 2025"),
])
def test_relative_format(delta, expected):
    assert fmt({"SLURM_TIME_FORMAT": "relative"}, T + delta) == expected


def test_iso_utc_for_json():
    f = TimeFormatter(env={}, now=T)
    assert f.iso_utc(T) == "2026-11-28T12:14:58Z" and f.iso_utc(0) is None and f.iso_utc(NO_VAL) is None
