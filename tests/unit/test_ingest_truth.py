"""`piqc-slurm ingest` tells the truth (issue 10): the watermark moves only over what was read,
unusable --sacct-file input fails the run, bad options are usage errors, the --help recipe for
a --sacct-file keeps a `|` in a job name, --spool-only needs no Slurm.

Each test runs the real command (`python -m piqc_slurm ingest`) against a real SQLite store in
tmp_path. sacct is a stub first on PATH that prints a recorded fixture (tests/fixtures/sacct/)
and logs its argv; scontrol is a stub that fails (ingest only warns). Expected epochs and their
UTC ISO forms are written by hand (checked with `date -u -d @EPOCH`)."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from piqc_slurm.store import open_engine

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SACCT = REPO / "tests" / "fixtures" / "sacct" / "22.05.8"
SUMMARIES = REPO / "tests" / "fixtures" / "summaries"

B = 1795824000          # 2026-11-28T00:00:00Z: the watermark the tests start from
H = 3600
WEIRD_NAME = "a|b<b>x</b>&'q`../z"   # job 12's name as recorded in weird_name.ingest.txt


class Env:
    """A config, an SQLite store, stub sacct/scontrol in bin/."""

    def __init__(self, tmp_path: Path, fixture: str = "completed.ingest.txt", cluster: str = "piqc"):
        self.tmp = tmp_path
        self.db = tmp_path / "store.db"
        open_engine(f"sqlite:///{self.db}").dispose()       # create it: ingest opens an existing store
        self.config = tmp_path / "piqc.toml"
        self.config.write_text(f'cluster = "{cluster}"\nsyslog = false\nspool_dir = "{tmp_path}/spool"\n'
                               f'shared_spool_dir = "{tmp_path}/shared"\n')
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.fail_on = tmp_path / "fail_on"                # the sacct call number that fails, if any
        (self.bin / "sacct").write_text(
            "#!/bin/sh\n"
            f"d='{tmp_path}'\n"
            'n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$d/count"\n'
            'for a in "$@"; do printf "%s\\n" "$a"; done > "$d/argv.$n"\n'
            'echo "SLURM_TIME_FORMAT=$SLURM_TIME_FORMAT" > "$d/env.$n"\n'
            'if [ "$n" = "$(cat "$d/fail_on" 2>/dev/null)" ]; then\n'
            '  echo "sacct: error: Problem talking to the database: Connection refused" >&2; exit 1; fi\n'
            f"grep -v '^#' '{SACCT / fixture}'\n")
        (self.bin / "scontrol").write_text("#!/bin/sh\necho 'scontrol: error: stubbed out' >&2; exit 1\n")
        for p in self.bin.iterdir():
            p.chmod(0o755)

    def run(self, *args: str, path: str | None = None, stdin: bytes | None = None,
            tz: str = "UTC") -> subprocess.CompletedProcess:
        env = {"PATH": path if path is not None else f"{self.bin}:/usr/bin:/bin", "TZ": tz,
               "PIQC_CONFIG": str(self.config), "HOME": str(self.tmp)}
        r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", f"sqlite:///{self.db}", "ingest", *args],
                           env=env, capture_output=True, input=stdin, cwd=REPO, timeout=120)
        r.stdout, r.stderr = r.stdout.decode(), r.stderr.decode()
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def sql(self, query: str) -> list[tuple]:
        with sqlite3.connect(self.db) as c:
            return c.execute(query).fetchall()

    def watermark(self) -> int | None:
        rows = self.sql("SELECT until FROM watermarks WHERE source = 'sacct'")
        return rows[0][0] if rows else None

    def calls(self) -> list[list[str]]:
        n = int((self.tmp / "count").read_text()) if (self.tmp / "count").exists() else 0
        return [(self.tmp / f"argv.{i}").read_text().splitlines() for i in range(1, n + 1)]

    def start_watermark(self) -> None:
        """A first run over [B - 1 h, B]: no watermark before it, so it becomes B."""
        r = self.run("--since", f"uts{B - H}", "--until", f"uts{B}")
        assert r.returncode == 0, r.stderr
        assert self.watermark() == B
        (self.tmp / "count").unlink()


def window(argv: list[str]) -> tuple[str, str]:
    return argv[argv.index("-S") + 1], argv[argv.index("-E") + 1]


# --- 1. the watermark moves only over what was read -----------------------------------------------

def test_a_window_overlapping_the_watermark_moves_it_to_the_window_end(tmp_path):
    e = Env(tmp_path)
    e.start_watermark()
    r = e.run("--since", f"uts{B - 2 * H}", "--until", f"uts{B + 6 * H}")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert e.watermark() == B + 6 * H
    # a backfill that ends before the watermark never moves it back
    assert e.run("--since", f"uts{B - 30 * H}", "--until", f"uts{B - 28 * H}").returncode == 0
    assert e.watermark() == B + 6 * H


def test_a_window_after_the_watermark_leaves_it_and_names_the_hole(tmp_path):
    e = Env(tmp_path)
    e.start_watermark()
    r = e.run("--since", f"uts{B + H}", "--until", f"uts{B + 6 * H}")
    assert r.returncode == 0, r.stderr
    assert e.watermark() == B
    assert ("piqc-slurm ingest: warning: records between 2026-11-28T00:00:00 and 2026-11-28T01:00:00 were not "
            "read; run `piqc-slurm ingest --since 2026-11-28T00:00:00`") in r.stderr
    # the next default run starts at the old watermark less 6 h: the hole is read
    before = len(e.calls())
    r = e.run()
    assert r.returncode == 0, r.stderr
    assert window(e.calls()[before])[0] == f"uts{B - 6 * H}"
    assert e.watermark() >= int(time.time()) - 60


def test_the_suggested_command_reads_the_hole_and_moves_the_watermark(tmp_path):
    e = Env(tmp_path)
    e.start_watermark()
    e.run("--since", f"uts{B + H}", "--until", f"uts{B + 6 * H}")
    r = e.run("--since", "2026-11-28T00:00:00", "--until", f"uts{B + 6 * H}")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert window(e.calls()[-1]) == (f"uts{B}", f"uts{B + 6 * H}")
    assert e.watermark() == B + 6 * H


def test_a_run_failing_on_slice_3_of_5_moves_the_watermark_over_slices_1_and_2(tmp_path):
    e = Env(tmp_path)
    e.start_watermark()
    e.fail_on.write_text("3\n")
    r = e.run("--since", f"uts{B}", "--until", f"uts{B + 5 * H}", "--slice-hours", "1")
    assert r.returncode == 4
    assert r.stderr.strip().splitlines()[-1] == ("piqc-slurm: sacct failed: sacct: error: Problem talking to "
                                                 "the database: Connection refused")
    assert [window(a) for a in e.calls()] == [(f"uts{B}", f"uts{B + H}"), (f"uts{B + H}", f"uts{B + 2 * H}"),
                                             (f"uts{B + 2 * H}", f"uts{B + 3 * H}")]
    assert e.watermark() == B + 2 * H
    assert e.sql("SELECT job_id_raw FROM jobs") == [(5,)]      # completed.ingest.txt's job, written


def test_a_window_reaching_into_the_future_moves_the_watermark_only_to_when_sacct_was_asked(tmp_path):
    e = Env(tmp_path)
    t0 = int(time.time())
    r = e.run("--since", f"uts{t0 - H}", "--until", "now+2days")
    t1 = int(time.time())
    assert r.returncode == 0, r.stderr
    assert t0 <= e.watermark() <= t1


def test_a_sacct_file_never_moves_the_watermark(tmp_path):
    e = Env(tmp_path)
    assert e.run("--sacct-file", str(SACCT / "completed.ingest.txt")).returncode == 0
    assert e.watermark() is None and e.calls() == []
    e.start_watermark()
    assert e.run("--sacct-file", str(SACCT / "completed.ingest.txt")).returncode == 0
    assert e.watermark() == B


# --- 2. unusable --sacct-file input fails the run --------------------------------------------------

def headerless() -> bytes:
    """weird_name.ingest.txt as sacct -n would print it: the recorded lines without the header."""
    lines = [ln for ln in (SACCT / "weird_name.ingest.txt").read_bytes().split(b"\n") if not ln.startswith(b"#")]
    return b"\n".join(lines[1:])


@pytest.mark.parametrize(("content", "message"), [
    (b"", "piqc-slurm: {f} is empty"),
    (b"\n  \n\n", "piqc-slurm: {f} is empty"),
    (headerless(), "piqc-slurm: {f}: no sacct header line (expected `sacct -P` output with its header, e.g. "
                   "JobID|JobIDRaw|Cluster|User|...|Submit|...)"),
    (b"# Slurm 22.05.8\n# command: sacct -a -P -n\n\n", "piqc-slurm: {f}: no sacct header line (expected "
                                                         "`sacct -P` output with its header, e.g. "
                                                         "JobID|JobIDRaw|Cluster|User|...|Submit|...)"),
    (b"# a comment\n\nhello world\n", "piqc-slurm: {f}: no sacct header line (expected `sacct -P` output with "
                                       "its header, e.g. JobID|JobIDRaw|Cluster|User|...|Submit|...)"),
    (b"JobID|State\n5|COMPLETED\n", "piqc-slurm: {f}:1: the sacct header lacks Submit, needed to identify a "
                                    "job (sacct prints every field it is asked for with -o/--format)"),
    (b"\x89PNG\r\n\x1a\n", "piqc-slurm: {f}: not text: line 1 is not UTF-8 (expected `sacct -P` output)"),
    ("JobID|Submit\n".encode("utf-16"), "piqc-slurm: {f}: binary data (a NUL byte on line 1), not `sacct -P` "
                                        "output"),
    (b"JobID|JobIDRaw|Cluster|Submit\n5|5|piqc\n6|6|piqc|x|y\n",
     "piqc-slurm: {f}: no job record could be read (2 malformed line(s)); the first: {f}:2: expected 4 fields, "
     "found 3: '5|5|piqc'"),
])
def test_an_unusable_sacct_file_is_one_line_and_exit_4(tmp_path, content, message):
    e = Env(tmp_path)
    f = tmp_path / "in.txt"
    f.write_bytes(content)
    r = e.run("--sacct-file", str(f))
    assert (r.returncode, r.stderr) == (4, message.format(f=f) + "\n")
    assert e.sql("SELECT count(*) FROM jobs") == [(0,)]


def test_stdin_is_checked_too(tmp_path):
    r = Env(tmp_path).run("--sacct-file", "-", stdin=b"")
    assert (r.returncode, r.stderr) == (4, "piqc-slurm: - is empty\n")


def test_a_header_alone_is_sacct_finding_no_job_not_an_error(tmp_path):
    e = Env(tmp_path)
    f = tmp_path / "none.txt"
    f.write_text("JobID|JobIDRaw|Cluster|Submit\n")
    r = e.run("--sacct-file", str(f))
    assert r.returncode == 0, r.stderr
    assert "0 job record(s), 0 malformed line(s)" in r.stderr


def test_some_malformed_lines_among_good_ones_are_skipped_or_fail_with_strict(tmp_path):
    e = Env(tmp_path)
    text = (SACCT / "completed.ingest.txt").read_text()
    f = tmp_path / "mixed.txt"
    f.write_text(text + "99999\x1fgarbage\n")
    bad_line = len(text.splitlines()) + 1
    r = e.run("--sacct-file", str(f))
    assert r.returncode == 0, r.stderr
    assert f"piqc-slurm ingest: skipped: {f}:{bad_line}: expected " in r.stderr
    assert "1 job record(s), 1 malformed line(s)" in r.stderr
    r = e.run("--sacct-file", str(f), "--strict")
    assert r.returncode == 4 and r.stderr.startswith(f"piqc-slurm: {f}:{bad_line}: expected "), r.stderr


def test_a_job_name_that_is_not_utf8_keeps_its_job_and_says_so(tmp_path):
    e = Env(tmp_path)
    data = (SACCT / "weird_name.ingest.txt").read_bytes().replace(b"a|b<b>", "\u00e9|b<b>".encode("latin-1"))
    f = tmp_path / "latin1.txt"
    f.write_bytes(data)
    r = e.run("--sacct-file", str(f))
    assert r.returncode == 0, r.stderr
    assert (f"piqc-slurm ingest: warning: {f}: 1 line(s) not UTF-8 (first: line 4); the bytes that are not were "
            "replaced by U+FFFD") in r.stderr
    assert e.sql("SELECT name FROM jobs WHERE job_id_raw = 12") == [("\ufffd" + WEIRD_NAME[1:],)]


# --- 3. an inverted window is a usage error --------------------------------------------------------

@pytest.mark.parametrize(("args", "names"), [
    (("--since", "2026-11-08", "--until", "2026-11-01"), "--since (2026-11-08) must be before --until (2026-11-01)"),
    (("--since", "2026-11-08", "--until", "2026-11-08"), "--since (2026-11-08) must be before --until (2026-11-08)"),
    (("--since", "now+1day"), "--since (now+1day) must be before --until (now)"),
])
def test_an_inverted_window_is_a_usage_error_naming_both_ends(tmp_path, args, names):
    e = Env(tmp_path)
    r = e.run(*args)
    assert r.returncode == 2
    assert f"Error: {names}" in r.stderr
    assert e.calls() == []


def test_an_until_before_the_default_start_is_a_usage_error(tmp_path):
    e = Env(tmp_path)
    e.start_watermark()
    r = e.run("--until", f"uts{B - 7 * H}")
    assert (r.returncode, r.stderr) == (2, "piqc-slurm: --until 2026-11-27T17:00:00 is not after the default window "
                                           "start 2026-11-27T18:00:00 (the last ingest's end less 6 h): give "
                                           "--since as well\n")
    assert e.calls() == [] and e.watermark() == B


# --- 4. an unknown --tz ----------------------------------------------------------------------------

def test_an_unknown_tz_is_one_usage_line(tmp_path):
    e = Env(tmp_path)
    r = e.run("--sacct-file", str(SACCT / "completed.parsable2.txt"), "--tz", "Mars/Olympus")
    assert (r.returncode, r.stderr) == (2, "piqc-slurm: --tz: unknown time zone 'Mars/Olympus'\n")


def test_without_tz_a_files_times_are_read_in_this_hosts_zone(tmp_path):
    # completed.parsable2.txt was printed under TZ=UTC: Submit 2026-11-28T12:14:56 (1795868096, as its
    # .ingest.txt twin says). Read as Europe/Berlin time (CET, UTC+1 in November) it is an hour earlier.
    e = Env(tmp_path)
    r = e.run("--sacct-file", str(SACCT / "completed.parsable2.txt"), tz="Europe/Berlin")
    assert r.returncode == 0, r.stderr
    assert "(times read in zone Europe/Berlin)" in r.stderr
    assert e.sql("SELECT submit FROM jobs WHERE job_id_raw = 5") == [(1795868096 - 3600,)]


def test_the_parser_names_the_tz_field_once():
    from piqc_slurm.errors import ParseError
    from piqc_slurm.slurm.records import parse_sacct

    with pytest.raises(ParseError) as info:
        parse_sacct("JobID|Submit\n", source="f.txt", epoch_times=False, tz="Mars/Olympus")
    assert str(info.value) == "f.txt: field tz: unknown time zone 'Mars/Olympus'"


# --- 5. the --help recipe for a --sacct-file -------------------------------------------------------

def recipe(help_text: str) -> list[str]:
    """The shell lines of the --sacct-file recipe in `ingest --help` (continuations joined)."""
    block = help_text.split("A file for --sacct-file", 1)[1].split("Options:", 1)[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.startswith("    ")]
    out: list[str] = []
    for ln in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1] + ln
        else:
            out.append(ln)
    return out


def test_the_help_recipe_is_the_query_ingest_runs_and_keeps_a_pipe_in_a_job_name(tmp_path):
    e = Env(tmp_path, fixture="weird_name.ingest.txt")
    r = e.run("--help")
    assert r.returncode == 0
    assert "-o ALL" not in r.stdout.replace("`-o ALL` prints many", "")
    lines = recipe(r.stdout)
    assert lines[-1] == "piqc-slurm ingest --sacct-file nov.txt"
    # the recipe, run by bash as a person would paste it, with the stub sacct first on PATH
    made = subprocess.run(["bash", "-c", "\n".join(lines[:-1])], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": f"{e.bin}:/usr/bin:/bin"}, timeout=60)
    assert made.returncode == 0, made.stderr
    # ... and a real ingest run: the same sacct query, window aside, with epoch times asked for both
    assert e.run("--since", f"uts{B}", "--until", f"uts{B + H}").returncode == 0
    by_recipe, by_ingest = e.calls()

    def query(argv: list[str]) -> list[str]:
        return [a for i, a in enumerate(argv) if a not in ("-S", "-E") and argv[i - 1] not in ("-S", "-E")]

    assert query(by_recipe) == query(by_ingest)
    assert "--delimiter=\x1f" in by_recipe and window(by_recipe) == ("2026-11-01", "2026-12-01")
    assert (tmp_path / "env.1").read_text() == (tmp_path / "env.2").read_text() == "SLURM_TIME_FORMAT=%s\n"
    # the file it made (the recorded output of job 12, named a|b<b>x</b>&'q`../z) ingests whole
    (tmp_path / "store.db").unlink()
    open_engine(f"sqlite:///{e.db}").dispose()
    r = e.run("--sacct-file", str(tmp_path / "nov.txt"))
    assert r.returncode == 0 and "0 malformed line(s)" in r.stderr, r.stderr
    assert e.sql("SELECT job_id_raw, name, state FROM jobs") == [(12, WEIRD_NAME, "COMPLETED")]


# --- 6. --spool-only -------------------------------------------------------------------------------

def test_spool_only_replays_summaries_without_slurm_and_leaves_the_watermark(tmp_path):
    e = Env(tmp_path, cluster="")              # no cluster name: asking scontrol would fail
    node = tmp_path / "shared" / "vm"          # the config's shared_spool_dir, one directory per node
    node.mkdir(parents=True)
    for f in SUMMARIES.iterdir():
        shutil.copy(f, node / f.name)
    nobin = tmp_path / "nobin"
    nobin.mkdir()
    r = e.run("--spool-only", path=str(nobin))  # no sacct, no scontrol anywhere on PATH
    assert r.returncode == 0, r.stderr
    assert re.search(r"\b5 summaries taken in\s*$", r.stderr)
    assert e.sql("SELECT count(*) FROM node_summaries") == [(5,)]
    assert e.sql("SELECT count(*) FROM spool_replays") == [(5,)]
    assert e.sql("SELECT count(*) FROM jobs") == [(0,)] and e.watermark() is None
    r = e.run("--spool-only", "--spool", str(tmp_path / "shared"), path=str(nobin))
    assert r.returncode == 0 and re.search(r"\b0 summaries taken in\s*$", r.stderr), r.stderr


def test_spool_only_with_a_sacct_window_or_no_spool_is_a_usage_error(tmp_path):
    e = Env(tmp_path)
    r = e.run("--spool-only", "--since", "now-1h")
    assert r.returncode == 2 and "Error: --spool-only reads no sacct records" in r.stderr
    r = e.run("--spool-only", "--spool", str(tmp_path / "nowhere"))
    assert (r.returncode, r.stderr) == (2, f"piqc-slurm: --spool-only: no spool directory to read "
                                           f"({tmp_path / 'nowhere'}: not found)\n")
    assert e.calls() == []
