"""`piqc-slurm nightly`: ingest, analyze, gaps and digest in a row, under a lock.

Each step is the real command run as a subprocess (`sys.executable -m
piqc_slurm [--config C] [--db U] STEP ...`, an argv list, never a shell), so a
step behaves exactly as it does by hand, and one step's crash or memory
cannot take the others down. The run:

- takes an exclusive, non-blocking flock(2) on the lock file (created 0644,
  opened with O_NOFOLLOW; a symbolic link is refused). If another run holds
  it: "another nightly run holds LOCK (pid N)", exit 75 (EX_TEMPFAIL). The
  lock's descriptor is handed to every step, so the lock stays held while a
  step still runs even if this process dies;
- runs the steps in order, each under a timeout (its whole process group is
  terminated, then killed), and logs one line per step to stderr and to
  syslog (facility daemon, tag piqc-slurm; no syslog copy when stderr is
  already the systemd journal, see JOURNAL_STREAM):
  `piqc-slurm nightly: STEP ok in X.Xs` or
  `piqc-slurm nightly: STEP failed (exit N): <its last stderr line>`;
- stops at the first failure with that step's exit code (EXIT_CODES);
- when ingest read no job record (nor a malformed line) and took in no summary, says
  "no new data since <time>" and exits 0 without the later steps;
- on SIGTERM stops the running step's process group and exits 143.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2        # bad options, bad config, an unusable lock path (as every piqc-slurm command)
EXIT_LOCKED = 75      # EX_TEMPFAIL: another nightly run holds the lock
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped from outside, the running step with it
EXIT_CODES = {"ingest": 10, "analyze": 11, "gaps": 12, "digest": 13}

DEFAULT_LOCK = "/run/lock/piqc-nightly.lock"
DEFAULT_DIGEST_DIR = "/var/lib/piqc/digests"
STEP_TIMEOUT = 3600   # seconds per step
KILL_GRACE = 10       # seconds between SIGTERM and SIGKILL of a step that ran out of time
WINDOW = 48 * 3600    # analyze and gaps: the last 48 hours (analyze's own default)
PREFIX = "piqc-slurm nightly: "

# ingest's closing line (commands/ingest.py) and its first slice line (ingest.py).
_INGEST_SUMMARY = re.compile(r"^piqc-slurm ingest: (\d+) job record\(s\), (\d+) malformed line\(s\), "
                             r"(\d+) summaries taken in\s*$")
_INGEST_SLICE = re.compile(r"^piqc-slurm ingest: sacct slice 1/\d+ (\S+) \.\. ")


@dataclass
class Step:
    name: str
    argv: list[str]
    code: int                                    # this process's exit code if the step fails
    before: Callable[[], None] | None = None     # run first (e.g. create the digest directory); OSError = failed


@dataclass
class Plan:
    steps: list[Step]
    since_text: str | None = None                # the -S given, for "no new data since ..."
    digest_file: str | None = None


@dataclass
class StepResult:
    rc: int
    seconds: float
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    error: str = ""                              # could not be started


class LockHeld(Exception):
    def __init__(self, path: str, pid: int | None):
        super().__init__(path)
        self.path, self.pid = path, pid


class LockError(Exception):
    """The lock file cannot be used (a symbolic link, not a regular file, cannot be created)."""


# --- the plan ------------------------------------------------------------------------------------

def local_midnight(t: float) -> int:
    """00:00 local time of the day holding `t` (mktime: the zone's rules for that day, DST included)."""
    lt = time.localtime(t)
    return int(time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1)))


def yesterday(now: float) -> tuple[int, int]:
    """[00:00 yesterday, 00:00 today), local time."""
    today = local_midnight(now)
    return local_midnight(today - 12 * 3600), today


def command_prefix(config_path: str | None, db: str | None, python: str | None = None) -> list[str]:
    argv = [python or sys.executable, "-m", "piqc_slurm"]
    if config_path:
        argv += ["--config", config_path]
    if db:
        argv += ["--db", db]
    return argv


def plan(prefix: Sequence[str], *, since: int | None = None, until: int | None = None,
         digest_dir: str | None = DEFAULT_DIGEST_DIR, now: float | None = None,
         since_text: str | None = None, mail_to: Sequence[str] = ()) -> Plan:
    """The steps. Without -S/-E: ingest its own incremental window (since its last run),
    analyze and gaps the last 48 hours, digest yesterday. With either: every step that
    window (-S default: 48 h before -E; -E default: now). digest_dir None: no digest;
    mail_to: digest --mail-to, each address."""
    now = time.time() if now is None else now
    custom = since is not None or until is not None
    e = int(until if until is not None else now)
    s = int(since if since is not None else e - WINDOW)
    if s >= e:
        raise ValueError("the window is empty: -S must be before -E")
    pre = list(prefix)
    ingest_args: list[str] = []
    if since is not None:
        ingest_args += ["--since", f"uts{since}"]
    if until is not None:
        ingest_args += ["--until", f"uts{until}"]
    window = ["-S", f"uts{s}", "-E", f"uts{e}"]
    steps = [
        Step("ingest", pre + ["ingest", *ingest_args], EXIT_CODES["ingest"]),
        Step("analyze", pre + ["analyze", *window], EXIT_CODES["analyze"]),
        Step("gaps", pre + ["gaps", *window, "-P", "-n"], EXIT_CODES["gaps"]),
    ]
    out = Plan(steps, since_text=since_text)
    if digest_dir is not None:
        ds, de = (s, e) if custom else yesterday(now)
        day = time.strftime("%Y-%m-%d", time.localtime(de - 1))  # the last day the digest covers
        path = str(Path(digest_dir) / f"digest-{day}.html")
        mail = [f"--mail-to={addr}" for addr in mail_to]  # one token: an address is never read as an option
        steps.append(Step("digest", pre + ["digest", "-S", f"uts{ds}", "-E", f"uts{de}", "-o", path, *mail],
                          EXIT_CODES["digest"], before=lambda: _make_dir(digest_dir)))
        out.digest_file = path
    return out


def _make_dir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


# --- the lock ------------------------------------------------------------------------------------

def acquire_lock(path: str) -> int:
    """An open descriptor holding an exclusive flock on `path`; our pid written in it.
    LockHeld if another process holds it; LockError if the path cannot be used."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    created = False
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
    except FileExistsError:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise LockError(_lock_problem(path, exc)) from None
    except OSError as exc:
        raise LockError(_lock_problem(path, exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LockError(f"refusing the lock file {path}: not a regular file")
        if created:
            os.fchmod(fd, 0o644)  # whatever the umask
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(path, _holder(fd)) from None
            raise LockError(f"cannot lock {path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_problem(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"refusing the lock file {path}: it is a symbolic link"
    return f"cannot open the lock file {path}: {exc.strerror}"


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --- one step ------------------------------------------------------------------------------------

def run_step(step: Step, timeout: float, env: Mapping[str, str] | None = None,
             pass_fds: Sequence[int] = ()) -> StepResult:
    """Run one step in its own process group; stdout and stderr captured."""
    t0 = time.monotonic()
    if step.before is not None:
        try:
            step.before()
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return StepResult(1, time.monotonic() - t0, error=f"{where}{exc.strerror or exc}")
    try:
        proc = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                                env=None if env is None else dict(env), pass_fds=tuple(pass_fds))
    except OSError as exc:
        return StepResult(127, time.monotonic() - t0, error=f"cannot start {step.argv[0]}: {exc.strerror}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _stop(proc)
        return StepResult(proc.returncode, time.monotonic() - t0, out or "", err or "", timed_out=True)
    except BaseException:  # ^C, SIGTERM turned into an exception: take the step down with us
        _stop(proc)
        raise
    return StepResult(proc.returncode, time.monotonic() - t0, out or "", err or "")


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return "", ""


def last_line(*texts: str, limit: int = 300) -> str:
    """The last non-blank line of the first text that has one, made one printable line."""
    for text in texts:
        for line in reversed(text.splitlines()):
            line = "".join(ch if ch.isprintable() else "?" for ch in line).strip()
            if line:
                return line if len(line) <= limit else line[: limit - 3] + "..."
    return "no output"


def ingest_counts(stderr: str) -> tuple[int, int, int] | None:
    """(job records, malformed lines, summaries taken in) from ingest's closing line; None if it
    is not there (then the later steps run)."""
    for line in reversed(stderr.splitlines()):
        m = _INGEST_SUMMARY.match(line.strip())
        if m:
            return int(m.group(1)), int(m.group(2)), int(m.group(3))
    return None


def ingest_window_start(stderr: str) -> str | None:
    """The start of the window ingest read (its first slice line), as it printed it."""
    for line in stderr.splitlines():
        m = _INGEST_SLICE.match(line.strip())
        if m:
            return m.group(1)
    return None


# --- logging -------------------------------------------------------------------------------------

def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """systemd sets JOURNAL_STREAM=DEV:INODE when stderr is the journal: a syslog copy would be a duplicate."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class Log:
    """One line per event to stderr and, where allowed and useful, to syslog."""

    def __init__(self, use_syslog: bool = True, write: Callable[[str], None] | None = None):
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._sys = None
        if use_syslog and not stderr_is_journal():
            from piqc_slurm.logsetup import HookLog

            hook = HookLog(use_syslog=True)
            self._sys = hook if hook.syslog is not None else None  # no socket: stderr alone

    def _line(self, level: str, msg: str) -> None:
        self.write(PREFIX + msg)
        if self._sys is not None:
            getattr(self._sys, level)("%s", PREFIX + msg)

    def info(self, msg: str) -> None:
        self._line("info", msg)

    def warning(self, msg: str) -> None:
        self._line("warning", msg)

    def error(self, msg: str) -> None:
        self._line("error", msg)


# --- the run -------------------------------------------------------------------------------------

def run(the_plan: Plan, *, lock: str = DEFAULT_LOCK, timeout: float = STEP_TIMEOUT, log: Log | None = None,
        env: Mapping[str, str] | None = None, echo: Callable[[str], None] | None = None) -> int:
    """Run the plan under the lock; the exit code. echo: where the steps' own stderr goes
    (None: dropped)."""
    log = log or Log()
    try:
        fd = acquire_lock(lock)
    except LockHeld as held:
        log.warning(f"another nightly run holds {held.path} (pid {held.pid if held.pid else '?'})")
        return EXIT_LOCKED
    except LockError as exc:
        log.error(str(exc))
        return EXIT_USAGE
    t0 = time.monotonic()
    old_term = _catch_sigterm()  # _UNSET off the main thread
    step = None
    try:
        for i, step in enumerate(the_plan.steps):
            res = run_step(step, timeout, env=env, pass_fds=(fd,))
            if echo is not None and res.stderr.strip():
                echo(res.stderr.rstrip("\n"))
            if res.error:
                log.error(f"{step.name} failed (not started): {res.error}")
                return step.code
            if res.timed_out:
                log.error(f"{step.name} failed (timed out after {timeout:g}s): {last_line(res.stderr, res.stdout)}")
                return step.code
            if res.rc != 0:
                log.error(f"{step.name} failed (exit {res.rc}): {last_line(res.stderr, res.stdout)}")
                return step.code
            log.info(f"{step.name} ok in {res.seconds:.1f}s")
            if step.name == "ingest" and ingest_counts(res.stderr) == (0, 0, 0):
                since = ingest_window_start(res.stderr) or the_plan.since_text or "the last run"
                rest = ", ".join(s.name for s in the_plan.steps[i + 1:]) or "nothing"
                log.info(f"no new data since {since} (ingest read no job record and took in no summary); "
                         f"skipped: {rest}")
                return EXIT_OK
        done = ", ".join(s.name for s in the_plan.steps)
        where = f"; digest {the_plan.digest_file}" if the_plan.digest_file else ""
        log.info(f"all steps ok ({done}) in {time.monotonic() - t0:.1f}s{where}")
        return EXIT_OK
    except Terminated:  # the running step's process group was stopped on the way out (run_step)
        log.error(f"terminated (SIGTERM) during {step.name if step else 'start'}")
        return EXIT_TERMINATED
    finally:
        if old_term is not _UNSET:
            signal.signal(signal.SIGTERM, old_term)
        os.close(fd)


_UNSET = object()


class Terminated(BaseException):
    """SIGTERM arrived (systemctl stop, kill): raised so the running step is stopped too."""


def _catch_sigterm():
    """Turn SIGTERM into Terminated while the steps run (main thread only); the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _UNSET

    def handler(_signum, _frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


__all__ = ["EXIT_CODES", "EXIT_LOCKED", "EXIT_OK", "EXIT_USAGE", "Log", "LockError", "LockHeld", "Plan", "Step",
           "acquire_lock", "command_prefix", "ingest_counts", "plan", "run", "run_step"]
