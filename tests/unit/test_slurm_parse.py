"""sacct value parsers (piqc_slurm.slurm.parse): values seen in the recorded
fixtures (tests/fixtures/sacct/22.05.8), the man page's vocabulary, round
trips, and arbitrary text that must give a value or a ParseError."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import hostlist
import pytest
from hypothesis import given
from hypothesis import strategies as st

from piqc_slurm.errors import ParseError
from piqc_slurm.slurm.parse import (
    JOB_STATES,
    JobIdParts,
    expand_nodelist,
    format_elapsed,
    format_jobid,
    format_time,
    format_tres,
    gpus_from_tres,
    mem_mib,
    parse_elapsed,
    parse_exit_code,
    parse_int,
    parse_jobid,
    parse_state,
    parse_time,
    parse_tres,
    resolve_tz,
)

pytestmark = pytest.mark.unit

# Text that looks like sacct values often enough to reach deep into each parser.
VALUE_CHARS = st.sampled_from(list("0123456789:-_.[]%+,=/ TZabcdefghmnGKMPNUonelIVAD|\x1f\n٣\u00a0") +
                              ["by", "batch", "None", "Unknown", "gres/gpu", "UNLIMITED"])
value_text = st.one_of(st.text(), st.lists(VALUE_CHARS, max_size=30).map("".join))


def _value_or_parse_error(fn, s):
    try:
        fn(s)
    except ParseError as e:
        assert str(e)


# --- states -------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("CANCELLED by 123", ("CANCELLED", 123)),
    ("CANCELLED by 0", ("CANCELLED", 0)),
    ("CANCELLED", ("CANCELLED", None)),
    ("OUT_OF_MEMORY", ("OUT_OF_MEMORY", None)),
    ("REQUEUE_FED", ("REQUEUE_FED", None)),
    ("REQUEUE_HOLD", ("REQUEUE_HOLD", None)),
])
def test_parse_state(text, expected):
    assert parse_state(text) == expected


@pytest.mark.parametrize("state", sorted(JOB_STATES))
def test_every_known_state(state):
    assert parse_state(state) == (state, None)


@pytest.mark.parametrize("bad", ["", "completed", "CANCELLED by", "CANCELLED by -1", "CANCELLED+",
                                 "CANCELLED by 99999999999", " RUNNING", "RUNNING\n", "R UNNING"])
def test_parse_state_rejects(bad):
    with pytest.raises(ParseError, match="job state"):
        parse_state(bad)


def test_unknown_but_well_formed_state_is_kept():
    # a newer Slurm's new state must not make the job disappear
    assert parse_state("SOME_NEW_STATE") == ("SOME_NEW_STATE", None)


# --- exit codes ---------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [("3:0", (3, 0)), ("0:15", (0, 15)), ("0:125", (0, 125)),
                                           ("255:0", (255, 0)), ("1:0", (1, 0))])
def test_parse_exit_code(text, expected):
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("bad", ["", "3", "3:", ":0", "256:0", "-1:0", "3:0:0", "a:b", "٣:0", "3:0\n"])
def test_parse_exit_code_rejects(bad):
    with pytest.raises(ParseError) as e:
        parse_exit_code(bad)
    assert repr(bad) in str(e.value)


# --- times --------------------------------------------------------------------------
def test_parse_time_epoch_and_sentinels():
    assert parse_time("1795868096", epoch=True) == 1795868096
    for s in ("", "Unknown", "None"):
        assert parse_time(s, epoch=True) is None
        assert parse_time(s, epoch=False) is None


def test_parse_time_iso_in_a_zone():
    # completed.parsable2.txt was captured with TZ=UTC: 12:14:56 is 1795868096
    assert parse_time("2026-11-28T12:14:56", epoch=False) == 1795868096
    assert parse_time("2026-11-28T12:14:56", epoch=False, tz="UTC") == 1795868096
    assert parse_time("2026-11-28T07:14:56", epoch=False, tz="America/New_York") == 1795868096
    assert parse_time("2026-11-28T07:14:56", epoch=False, tz=ZoneInfo("America/New_York")) == 1795868096
    assert parse_time("2026-11-28T12:14:56Z", epoch=False, tz="Asia/Kolkata") == 1795868096
    assert parse_time("2026-11-28T17:44:56+05:30", epoch=False) == 1795868096


def test_parse_time_dst_rules():
    berlin = "Europe/Berlin"
    # 2026-10-25 02:30 happens twice in Berlin: the first (CEST, UTC+2) is taken
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    assert parse_time("2026-10-25T02:30:00", epoch=False, tz=berlin) == first
    # 2026-03-29 02:30 does not exist there: read with the offset before the gap (UTC+1)
    assert parse_time("2026-03-29T02:30:00", epoch=False, tz=berlin) == \
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("bad,epoch", [
    ("1795868096", False), ("2026-11-28T12:14:56", True), ("2026-02-30T00:00:00", False),
    ("2026-11-28 12:14:56", False), ("-5", True), ("12e3", True), ("2026-11-28T25:00:00", False),
    ("2026-11-28T12:14:56+24:00", False), ("0000-01-01T00:00:00", False), ("١٧٩٥٨٦٨٠٩٦", True),
])
def test_parse_time_rejects(bad, epoch):
    with pytest.raises(ParseError) as e:
        parse_time(bad, epoch=epoch)
    assert repr(bad) in str(e.value)


def test_bad_zone_name_is_a_parse_error():
    with pytest.raises(ParseError, match="time zone"):
        resolve_tz("Mars/Olympus_Mons")


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_epoch_time_round_trip(t):
    assert parse_time(format_time(t, epoch=True), epoch=True) == t


@given(st.integers(min_value=0, max_value=253402300799))  # up to 9999-12-31T23:59:59Z
def test_iso_time_round_trip_utc(t):
    assert parse_time(format_time(t, epoch=False), epoch=False) == t


@given(st.integers(min_value=0, max_value=4102444800),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]))
def test_iso_time_round_trip_local(t, zone):
    shown = format_time(t, epoch=False, tz=zone)
    back = parse_time(shown, epoch=False, tz=zone)
    # exact except in a fall-back hour, where the earlier instant is taken
    assert back == t or (back < t and format_time(back, epoch=False, tz=zone) == shown)


# --- durations ----------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("00:00:00", 0), ("00:01:47", 107), ("00:01:00", 60), ("1-02:03:04", 93784),
    ("365-00:00:00", 365 * 86400), ("03:04", 184), ("00:04.123", 4), ("12:34:56.789", 45296),
    ("UNLIMITED", None), ("Partition_Limit", None), ("INVALID", None), ("", None),
])
def test_parse_elapsed(text, expected):
    assert parse_elapsed(text) == expected


@pytest.mark.parametrize("bad", ["1", "00:60:00", "00:00:60", "1-24:00:00", "1-02:03", "-1:00:00", "aa:bb",
                                 "00:00:00\n", "1--02:03:04", "00:00:00.", "unlimited"])
def test_parse_elapsed_rejects(bad):
    with pytest.raises(ParseError) as e:
        parse_elapsed(bad)
    assert repr(bad) in str(e.value)


@given(st.integers(min_value=0, max_value=999_999 * 86400 + 86399))
def test_elapsed_round_trip(seconds):
    assert parse_elapsed(format_elapsed(seconds)) == seconds


@given(st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_cpu_time_form(m, s, ms):
    assert parse_elapsed(f"{m:02d}:{s:02d}.{ms:03d}") == m * 60 + s


# --- memory -------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("100M", 100), ("1.50G", 1536), ("62.50G", 64000), ("16000M", 16000), ("6400M", 6400),
    ("1T", 1024 * 1024), ("2P", 2 * 1024**3), ("512K", 1), ("511K", 0), ("1024K", 1), ("100", 100),
    ("0M", 0), ("0.5M", 1),
])
def test_mem_mib(text, expected):
    assert mem_mib(text) == expected


@pytest.mark.parametrize("bad", ["", "M", "1.5.0G", "-1M", "1E", "1g", "1 G", "1.G", "1Mn", "٣M"])
def test_mem_mib_rejects(bad):
    with pytest.raises(ParseError) as e:
        mem_mib(bad)
    assert repr(bad) in str(e.value)


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["", "M", "G", "T", "P"]))
def test_mem_round_trip_whole(n, unit):
    factor = {"": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[unit]
    assert mem_mib(f"{n}{unit}") == n * factor


@given(st.integers(min_value=0, max_value=10**9))
def test_mem_round_trip_two_decimals(hundredths):
    # sacct prints e.g. 1.50G: hundredths of a GiB, rounded to whole MiB
    text = f"{hundredths // 100}.{hundredths % 100:02d}G"
    assert abs(mem_mib(text) - hundredths * 1024 / 100) <= 0.5


# --- TRES ---------------------------------------------------------------------------
def test_parse_tres_recorded():
    d = parse_tres("billing=1,cpu=1,gres/gpu:h100=2,gres/gpu=2,mem=100M,node=1")
    assert d == {"billing": "1", "cpu": "1", "gres/gpu:h100": "2", "gres/gpu": "2", "mem": "100M", "node": "1"}
    assert gpus_from_tres(d) == (2, "h100")
    assert mem_mib(d["mem"]) == 100
    assert parse_tres("") == {}


def test_gpus_from_tres_cases():
    assert gpus_from_tres(parse_tres("billing=64,cpu=64,gres/gpu:h100=8,gres/gpu=8,mem=6400M,node=1")) == (8, "h100")
    assert gpus_from_tres(parse_tres("cpu=1,mem=100M,node=1")) == (0, None)
    assert gpus_from_tres(parse_tres("gres/gpu=2")) == (2, None)
    assert gpus_from_tres(parse_tres("gres/gpu:a10g=1,gres/gpu:h100=1,gres/gpu=2")) == (2, None)
    assert gpus_from_tres(parse_tres("gres/gpu:a100=3")) == (3, "a100")
    assert gpus_from_tres(parse_tres("gres/gpu:1g.10gb=1,gres/gpu=1")) == (1, "1g.10gb")
    with pytest.raises(ParseError):
        gpus_from_tres(parse_tres("gres/gpu=2M"))


@pytest.mark.parametrize("bad", ["cpu", "cpu=", "=1", "cpu=1,", ",cpu=1", "cpu=1,cpu=2", "cpu=1 ", "a=b=c",
                                 "cpu=1;mem=2"])
def test_parse_tres_rejects(bad):
    with pytest.raises(ParseError) as e:
        parse_tres(bad)
    assert repr(bad) in str(e.value)


TRES_KEY = st.one_of(st.sampled_from(["billing", "cpu", "mem", "node", "energy", "gres/gpu", "fs/disk"]),
                     st.from_regex(r"gres/gpu:[a-z0-9_.\-]{1,12}", fullmatch=True))
TRES_VAL = st.one_of(st.integers(0, 10**9).map(str),
                     st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**6), st.sampled_from("KMGTP")))


@given(st.dictionaries(TRES_KEY, TRES_VAL, max_size=8))
def test_tres_round_trip(d):
    assert parse_tres(format_tres(d)) == d


# --- job ids ------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("1234", JobIdParts(1234, None, None, None, None)),
    ("1234_5", JobIdParts(1234, 5, None, None, None)),
    ("1234_[1-3]", JobIdParts(1234, None, "1-3", None, None)),
    ("1234_[1-3%2]", JobIdParts(1234, None, "1-3%2", None, None)),
    ("150_[1-5%2]", JobIdParts(150, None, "1-5%2", None, None)),
    ("1234_[1,3,5-7:2]", JobIdParts(1234, None, "1,3,5-7:2", None, None)),
    ("1234+0", JobIdParts(1234, None, None, 0, None)),
    ("1234+1.batch", JobIdParts(1234, None, None, 1, "batch")),
    ("1234.batch", JobIdParts(1234, None, None, None, "batch")),
    ("1234.extern", JobIdParts(1234, None, None, None, "extern")),
    ("1234.interactive", JobIdParts(1234, None, None, None, "interactive")),
    ("1234.0", JobIdParts(1234, None, None, None, "0")),
    ("1234.0+1", JobIdParts(1234, None, None, None, "0+1")),
    ("1234_5.batch", JobIdParts(1234, 5, None, None, "batch")),
    ("10_1.extern", JobIdParts(10, 1, None, None, "extern")),
])
def test_parse_jobid(text, expected):
    assert parse_jobid(text) == expected
    assert format_jobid(expected) == text


@pytest.mark.parametrize("bad", ["", "abc", "1234_", "1234_[]", "1234_[a]", "1234+", "1234.", "1234..0",
                                 "1234.0.1", "1234_5+0", "4294967296", "-1", "1234 ", "1234\n", "١٢٣٤",
                                 "1234_[1-3", "1234.batch.extern"])
def test_parse_jobid_rejects(bad):
    with pytest.raises(ParseError) as e:
        parse_jobid(bad)
    assert repr(bad) in str(e.value)


U32 = st.integers(0, 0xFFFFFFFF)
STEP = st.one_of(st.none(), st.sampled_from(["batch", "extern", "interactive"]), st.integers(0, 10**6).map(str),
                 st.builds(lambda a, b: f"{a}+{b}", st.integers(0, 99), st.integers(0, 9)))
JOBID_PARTS = st.one_of(
    st.builds(JobIdParts, U32, st.none(), st.none(), st.none(), STEP),
    st.builds(JobIdParts, U32, U32, st.none(), st.none(), STEP),
    st.builds(JobIdParts, U32, st.none(), st.from_regex(r"[0-9]+(-[0-9]+)?(,[0-9]+)*(%[0-9]+)?", fullmatch=True),
              st.none(), st.none()),
    st.builds(JobIdParts, U32, st.none(), st.none(), st.integers(0, 99999), STEP),
)


@given(JOBID_PARTS)
def test_jobid_round_trip(parts):
    assert parse_jobid(format_jobid(parts)) == parts


# --- node lists ---------------------------------------------------------------------
def test_expand_nodelist():
    assert expand_nodelist("vm") == ["vm"]
    assert expand_nodelist("None assigned") == []
    assert expand_nodelist("") == []
    assert expand_nodelist("gpu[01-03],vm") == ["gpu01", "gpu02", "gpu03", "vm"]
    for bad in ("gpu[01-", "gpu[3-1]", "a b", "n[1-9999999]"):
        with pytest.raises(ParseError) as e:
            expand_nodelist(bad)
        assert repr(bad) in str(e.value)


@given(st.lists(st.from_regex(r"[a-z]{1,4}[0-9]{0,3}", fullmatch=True), min_size=1, max_size=20))
def test_nodelist_round_trip(names):
    assert sorted(expand_nodelist(hostlist.collect_hostlist(names))) == sorted(set(names))


# --- every parser on arbitrary text --------------------------------------------------
PARSERS = {
    "state": parse_state, "exit_code": parse_exit_code, "elapsed": parse_elapsed, "mem": mem_mib,
    "tres": parse_tres, "jobid": parse_jobid, "nodelist": expand_nodelist, "int": parse_int,
    "time_epoch": lambda s: parse_time(s, epoch=True),
    "time_iso": lambda s: parse_time(s, epoch=False, tz="Europe/Berlin"),
    "gpus": lambda s: gpus_from_tres(parse_tres(s)),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(s=value_text)
def test_parsers_return_or_raise_parse_error_only(name, s):
    _value_or_parse_error(PARSERS[name], s)
