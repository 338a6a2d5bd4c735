"""Parsing of `piqc-slurm sacct` arguments: -s states, -j job ids, flag order."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from piqc_slurm.errors import UsageError
from piqc_slurm.query.command import add_sacct_command, parse_args
from piqc_slurm.query.jobids import JobSel, parse_jobs
from piqc_slurm.query.states import STATES, canonical_state, parse_states

pytestmark = pytest.mark.unit


# --- states -----------------------------------------------------------------------------
@pytest.mark.parametrize("short,long", [
    ("CA", "CANCELLED"), ("CD", "COMPLETED"), ("F", "FAILED"), ("NF", "NODE_FAIL"), ("OOM", "OUT_OF_MEMORY"),
    ("PD", "PENDING"), ("PR", "PREEMPTED"), ("R", "RUNNING"), ("RQ", "REQUEUED"), ("S", "SUSPENDED"),
    ("TO", "TIMEOUT"), ("BF", "BOOT_FAIL"), ("DL", "DEADLINE"), ("RS", "RESIZING"), ("RV", "REVOKED"),
    ("CG", "COMPLETING"), ("SE", "SPECIAL_EXIT"),
])
def test_short_and_long_state_names_any_case(short, long):
    assert canonical_state(short) == long
    assert canonical_state(short.lower()) == long
    assert canonical_state(long.lower()) == long


def test_every_listed_state_resolves_to_itself():
    for long, short in STATES:
        assert canonical_state(long) == long and canonical_state(short) == long


def test_state_lists_are_split_deduplicated_and_ordered():
    assert parse_states(["cd,F", "ca", "completed"]) == ["COMPLETED", "FAILED", "CANCELLED"]
    assert parse_states(["'CD,F'"]) == ["COMPLETED", "FAILED"]
    assert parse_states(["CD,"]) == ["COMPLETED"]


def test_unknown_state_is_refused_like_sacct():
    with pytest.raises(UsageError, match="unrecognized job state value 'xx'"):
        parse_states(["CD,xx"])


# --- job ids ----------------------------------------------------------------------------
def test_job_ids_array_tasks_het_components_and_steps():
    assert parse_jobs(["1234,1234_5", "99+1", "7.batch,8.0,1234"]) == [
        JobSel(1234), JobSel(1234, task=5), JobSel(99, het=1), JobSel(7, step="batch"), JobSel(8, step="0")]
    # sacct reads a step number with atoi(): 8.01x is step 1
    assert parse_jobs(["8.01x,8.extern"]) == [JobSel(8, step="1"), JobSel(8, step="extern")]
    with pytest.raises(UsageError, match="Bad step specified: 8.x"):
        parse_jobs(["8.x"])


def test_array_ranges_are_an_extension():
    assert parse_jobs(["10_[1-3,7],11"]) == [JobSel(10, task=1), JobSel(10, task=2), JobSel(10, task=3),
                                            JobSel(10, task=7), JobSel(11)]


@pytest.mark.parametrize("bad,msg", [("x12", "Bad job/step"), ("12_x", "Bad job array element"),
                                     ("12+x", "Bad hetjob offset"), ("12_[3-1]", "Bad job array element"),
                                     ("99999999999", "out of range")])
def test_bad_job_ids(bad, msg):
    with pytest.raises(UsageError, match=msg):
        parse_jobs([bad])


# --- flags --------------------------------------------------------------------------------
def test_later_of_a_and_u_wins_as_in_sacct():
    assert parse_args(["-a", "-u", "bob"]).allusers is False
    assert parse_args(["-u", "bob", "-a"]).allusers is True
    assert parse_args(["-u", "-1"]).allusers is True and parse_args(["-u", "-1"]).users == []
    assert parse_args(["-u", "-1", "-u", "bob"]).allusers is False


def test_later_of_p_and_big_p_wins():
    o = parse_args(["-p", "-P"])
    assert (o.parsable, o.parsable2) == (False, True)
    o = parse_args(["-P", "-p", "--delimiter", "::"])
    assert (o.parsable, o.parsable2, o.delimiter) == (True, False, "::")


def test_repeated_and_long_forms():
    o = parse_args(["--jobs=1,2", "-j", "3", "--user", "a", "--uid", "b", "--format", "jobid", "-o", "state",
                    "--state=CD", "-s", "F", "--starttime", "now-1day", "--endtime", "now", "-X", "-n",
                    "--accounts", "x", "--partition", "gpu", "-D", "-M", "c1", "--json"])
    assert o.jobs == ["1,2", "3"] and o.users == ["a", "b"] and o.formats == ["jobid", "state"]
    assert o.states == ["CD", "F"] and o.starttime == "now-1day" and o.endtime == "now"
    assert o.noheader and o.duplicates and o.json and o.accounts == ["x"] and o.partitions == ["gpu"]
    assert o.clusters == ["c1"]


def group_with_sacct(store_url: str = "sqlite:////nonexistent/x.db"):
    from piqc_slurm import config

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        pass

    add_sacct_command(cli, lambda ctx: config.load(None, store_url, env={}), lambda ctx, cfg: cfg["db"])
    return cli


def test_help_and_helpformat_need_no_store():
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "-h"])
    assert r.exit_code == 0 and "--parsable2" in r.output and "--helpformat" in r.output
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "-e"])
    assert r.exit_code == 0 and "GPUUtilAvg" in r.output and "NodeList" in r.output


def test_errors_are_piqc_errors_for_the_cli_to_map():
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "-s", "nope"])
    assert isinstance(r.exception, UsageError)
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "-j", "1"])
    assert "no store at /nonexistent/x.db" in str(r.exception)
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "-S", "2026-11-28", "-E", "2026-11-01", "-P"])
    assert "requested is after end time" in str(r.exception)
    r = CliRunner().invoke(group_with_sacct(), ["sacct", "stray"])
    assert r.exit_code == 2
