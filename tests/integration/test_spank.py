"""The piqc SPANK plugin (spank/piqc.so) on the real test cluster.

Needs the cluster of docker-slurm/cluster.sh running with a plugstack.conf that
names spank/piqc.so (`cluster.sh up` writes that line once the plugin is
built); the whole module is skipped otherwise.  Jobs are submitted as the
cluster's unprivileged user when the tests run as root.

What the slurmd Prolog sees (SPANK_PIQC_GPU_MONITOR) is checked by the node
agent's tests; here the batch script reads the same value under the name the
job itself gets, SLURM_SPANK_PIQC_GPU_MONITOR (seen on Slurm 22.05.8: the
Prolog got SPANK_PIQC_GPU_MONITOR=5 and the batch script
SLURM_SPANK_PIQC_GPU_MONITOR=5 for --gpu-monitor=5).
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "docker-slurm" / "cluster.sh"
PLUGIN = REPO / "spank" / "piqc.so"
TEST_USER = os.environ.get("TEST_USER", "piqcuser")
JOB_DEADLINE_S = 180.0
CMD_TIMEOUT_S = 120.0
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

_EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def parse_env_exports(text: str, base: dict[str, str]) -> dict[str, str]:
    """Turn `cluster.sh env` output (`export NAME=value` lines) into an environment.

    Values may refer to earlier names or to `base` (`PATH=/x/bin:$PATH`); they are
    expanded in order, as the shell would for these unquoted words.
    """
    env = dict(base)
    for line in text.splitlines():
        m = _EXPORT.match(line.strip())
        if not m:
            continue
        name, value = m.groups()
        env[name] = _VAR.sub(lambda v: env.get(v.group(1) or v.group(2), ""), value)
    return env


def cluster_env() -> dict[str, str] | None:
    """The environment to act on the test cluster exactly as its hooks do; None if it has none."""
    try:
        out = subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    env = parse_env_exports(out.stdout, dict(os.environ))
    return env if "SLURM_CONF" in env else None


def plugstack_path(slurm_conf: Path) -> Path:
    """PlugStackConfig from slurm.conf, else plugstack.conf next to it (Slurm's own rule)."""
    try:
        for line in slurm_conf.read_text().splitlines():
            key, _, value = line.split("#", 1)[0].strip().partition("=")
            if key.strip().lower() == "plugstackconfig" and value.strip():
                return Path(value.strip())
    except OSError:
        pass
    return slurm_conf.parent / "plugstack.conf"


def plugin_args(plugstack: Path) -> dict[str, str] | None:
    """The key=value words after spank/piqc.so on its plugstack.conf line; None if no line names it."""
    try:
        lines = plugstack.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] in ("optional", "required") and Path(words[1]) == PLUGIN:
            return dict(w.split("=", 1) for w in words[2:] if "=" in w)
    return None


def fmt_seconds(secs: float) -> str:
    """Seconds as the plugin writes them: milliseconds, trailing zeros dropped ("5", "0.5")."""
    ms = int(secs * 1000 + 0.5)
    whole, frac = divmod(ms, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


# Filled by _plugin_loaded once the session's `cluster` fixture has brought the
# cluster up (read at import time they would describe whatever cluster ran before).
ENV: dict[str, str] = {}
PLUGSTACK = Path("/nonexistent")
ARGS: dict[str, str] = {}
MIN_INTERVAL = DEFAULT_INTERVAL = 1.0
ALLOW_OPT_OUT = True


@pytest.fixture(scope="module", autouse=True)
def _plugin_loaded(cluster) -> None:
    global ENV, PLUGSTACK, ARGS, MIN_INTERVAL, DEFAULT_INTERVAL, ALLOW_OPT_OUT
    env = cluster_env()
    if env is None:
        pytest.skip("no test cluster: `docker-slurm/cluster.sh env` failed (run `cluster.sh up`)")
    ENV = env
    PLUGSTACK = plugstack_path(Path(ENV["SLURM_CONF"]))
    args = plugin_args(PLUGSTACK)
    if args is None:
        pytest.skip(f"spank/piqc.so is not loaded: {PLUGSTACK} does not name {PLUGIN} "
                    "(build it with `make -C spank`, then `cluster.sh up`)")
    if not PLUGIN.is_file():
        pytest.skip(f"{PLUGSTACK} names {PLUGIN} but it is not built (`make -C spank`)")
    ARGS = args
    # The cluster's own plugin arguments (plugin defaults where absent): what jobs should see.
    MIN_INTERVAL = float(ARGS.get("min_interval", "1"))
    DEFAULT_INTERVAL = max(float(ARGS.get("default_interval", "1")), MIN_INTERVAL)
    ALLOW_OPT_OUT = ARGS.get("allow_opt_out", "1") != "0"


def _as_user() -> list[str]:
    """Prefix that runs a client command as the unprivileged test user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        return []
    return ["runuser", "-u", TEST_USER, "--"]


def slurm(*argv: str, conf: str | None = None, cwd: str = "/tmp",
          timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command against the test cluster, as the test user.

    `conf` names another slurm.conf for this command only (the daemons keep theirs).
    """
    assert ENV is not None
    env_args = ["env", f"SLURM_CONF={conf or ENV['SLURM_CONF']}", f"PATH={ENV.get('PATH', '/usr/bin:/bin')}"]
    return subprocess.run([*_as_user(), *env_args, *argv], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout, check=False)


def job_state(job_id: str) -> str:
    """The allocation's state from sacct ("" until it is recorded), first word only ("CANCELLED by 0")."""
    out = slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State")
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0].split()[0] if lines else ""


def wait_for_job(job_id: str, deadline_s: float = JOB_DEADLINE_S) -> str:
    """Poll sacct until the job reaches a terminal state; cancel it and fail at the deadline."""
    end = time.monotonic() + deadline_s
    delay = 0.1
    while time.monotonic() < end:
        state = job_state(job_id)
        if state in TERMINAL_STATES:
            return state
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    slurm("scancel", job_id)
    pytest.fail(f"job {job_id} not finished after {deadline_s:.0f}s (last state {job_state(job_id)!r})")


@pytest.fixture(scope="module")
def outdir() -> Iterator[Path]:
    """A directory the test user can write job output into (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="piqc-spank-test-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def submit(outdir: Path, *opts: str, script: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """Submit a batch job as the test user; (sbatch's result, job id or None)."""
    out = slurm("sbatch", "--parsable", "--job-name=piqc-spank-test", "--time=2", "--gres=gpu:1",
                f"--output={outdir}/%j.out", *opts, "--wrap", script)
    job_id = out.stdout.strip().split(";")[0] if out.returncode == 0 else None
    return out, job_id


SHOW_VALUE = 'printf "%s\\n" "${SLURM_SPANK_PIQC_GPU_MONITOR-unset}"'


def job_value(outdir: Path, job_id: str) -> str:
    """First line of the job's output: what SHOW_VALUE printed.

    Only the first line: piqc-slurm's Epilog may append a GPU report to the file.
    """
    lines = (outdir / f"{job_id}.out").read_text().splitlines()
    return lines[0].strip() if lines else ""


# --- the option is offered ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sbatch", "srun", "salloc"])
def test_help_lists_the_option(command: str) -> None:
    out = slurm(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Options provided by plugins" in out.stdout
    assert "--gpu-monitor=off|on|SECONDS" in out.stdout


# --- bad values are refused at submission -----------------------------------------------------

BAD_VALUES = [
    ("bogus", "not a number of seconds"),
    ("0", "must be greater than 0"),
    ("-1", "must be greater than 0"),
    ("0.000", "must be greater than 0"),
    ("nan", "not a number of seconds"),
    ("1e3", "not a number of seconds"),
    ("1.2.3", "not a number of seconds"),
    ("86401", "must be at most 86400 seconds"),
    ("9" * 40, "value too long"),
    ("", "a value is required"),
]


@pytest.mark.parametrize(("value", "reason"), BAD_VALUES, ids=[v[:12] or "empty" for v, _ in BAD_VALUES])
def test_sbatch_refuses_bad_value(outdir: Path, value: str, reason: str) -> None:
    out, job_id = submit(outdir, f"--gpu-monitor={value}", script="true")
    assert out.returncode != 0, f"accepted --gpu-monitor={value!r} as job {job_id}"
    assert job_id is None
    assert f"piqc: --gpu-monitor={value[:32]}: {reason}" in out.stderr
    assert "use off, on, or a positive number of seconds" in out.stderr
    assert f"Invalid --gpu-monitor argument: {value}" in out.stderr


@pytest.mark.parametrize("command", [["srun"], ["salloc"]])
@pytest.mark.parametrize("value", ["bogus", "0", "-1"])
def test_srun_and_salloc_refuse_bad_value(command: list[str], value: str) -> None:
    out = slurm(*command, f"--gpu-monitor={value}", "--time=1", "true")
    assert out.returncode != 0
    assert f"piqc: --gpu-monitor={value}:" in out.stderr
    assert f"Invalid --gpu-monitor argument: {value}" in out.stderr


@pytest.fixture(scope="module")
def strict_site(outdir: Path) -> str:
    """A client-side slurm.conf whose plugstack.conf loads piqc.so with a strict site policy.

    Only sbatch --test-only reads it: no job is made and the cluster's daemons are untouched.
    Two bad words check that a broken plugstack line is logged and never stops submission.
    """
    assert ENV is not None
    conf_dir = outdir / "strict-site"
    conf_dir.mkdir(mode=0o755)
    plugstack = conf_dir / "plugstack.conf"
    plugstack.write_text(f"optional {PLUGIN} default_interval=3 min_interval=2 allow_opt_out=0 "
                         "min_interval=zero colour=blue\n")
    text = Path(ENV["SLURM_CONF"]).read_text()
    text = re.sub(r"(?im)^\s*PlugStackConfig\s*=.*$", "", text) + f"\nPlugStackConfig={plugstack}\n"
    conf = conf_dir / "slurm.conf"
    conf.write_text(text)
    for f in (plugstack, conf):
        f.chmod(0o644)
    return str(conf)


def test_strict_site_refuses_opt_out(strict_site: str) -> None:
    out = slurm("sbatch", "--test-only", "--gpu-monitor=off", "--wrap", "true", conf=strict_site)
    assert out.returncode != 0
    assert "piqc: --gpu-monitor=off refused: this site requires GPU monitoring" in out.stderr
    assert "Invalid --gpu-monitor argument: off" in out.stderr


@pytest.mark.parametrize(("value", "note"), [("0.5", True), ("on", False), ("5", False)])
def test_strict_site_accepts_and_clamps(strict_site: str, value: str, note: bool) -> None:
    out = slurm("sbatch", "--test-only", f"--gpu-monitor={value}", "--wrap", "true", conf=strict_site)
    assert out.returncode == 0, out.stderr
    assert ("raised to the site minimum of 2 seconds" in out.stderr) == note, out.stderr
    assert "plugstack.conf: bad min_interval=zero" in out.stderr
    assert "plugstack.conf: ignoring unknown argument 'colour=blue'" in out.stderr


# --- good values are accepted and reach the job -----------------------------------------------

def expected(value: str) -> str:
    """What the job should see for --gpu-monitor=value under this plugstack.conf."""
    low = value.lower()
    if low == "nowatch" or low.endswith(",nowatch"):   # "nowatch" alone is "on,nowatch"
        head = "on" if low == "nowatch" else value[:-len(",nowatch")]
        return head if head.lower() == "off" else f"{expected(head)},nowatch"
    if low == "off":
        return "off"
    secs = DEFAULT_INTERVAL if low == "on" else float(value)
    return fmt_seconds(max(secs, MIN_INTERVAL))


GOOD_VALUES = ["5", "on", "ON", "2.25", "0.5", "10.", "nowatch", "5,nowatch", "on,NOWATCH", "0.5,nowatch"] + (
    ["off", "Off"] if ALLOW_OPT_OUT else [])


@pytest.mark.parametrize("value", GOOD_VALUES)
def test_sbatch_value_reaches_job(outdir: Path, value: str) -> None:
    out, job_id = submit(outdir, f"--gpu-monitor={value}", script=SHOW_VALUE)
    assert out.returncode == 0 and job_id, out.stderr
    head = value.lower().removesuffix(",nowatch")
    clamped = head not in ("on", "off", "nowatch") and float(head) < MIN_INTERVAL
    assert ("raised to the site minimum" in out.stderr) == clamped, out.stderr
    assert "error" not in out.stderr.lower(), out.stderr
    assert wait_for_job(job_id) == "COMPLETED"
    assert job_value(outdir, job_id) == expected(value)


def test_no_option_sets_nothing(outdir: Path) -> None:
    """Without the option the job gets no value: the Prolog falls back to the site default."""
    out, job_id = submit(outdir, script=SHOW_VALUE)
    assert out.returncode == 0 and job_id, out.stderr
    assert wait_for_job(job_id) == "COMPLETED"
    assert job_value(outdir, job_id) == "unset"


def test_srun_accepts_value() -> None:
    # Tasks of a job made by srun do not get SLURM_SPANK_* (only its Prolog does): check acceptance.
    out = slurm("srun", "--gpu-monitor=2", "--gres=gpu:1", "--time=1", "--job-name=piqc-spank-test", "true")
    assert out.returncode == 0, out.stderr
    assert "piqc:" not in out.stderr, out.stderr


def test_salloc_value_reaches_allocation() -> None:
    out = slurm("salloc", "--gpu-monitor=3", "--gres=gpu:1", "--time=1", "--job-name=piqc-spank-test",
                "sh", "-c", SHOW_VALUE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected("3")


def test_srun_step_inside_job_is_left_alone() -> None:
    """Steps inherit the option through the job environment; the plugin must not act (or fail) on it."""
    script = 'srun --time=1 true && srun --time=1 --gpu-monitor=off true && echo steps-ok'
    out = slurm("salloc", "--gpu-monitor=0.5", "--gres=gpu:1", "--time=2", "--job-name=piqc-spank-test",
                "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("steps-ok")
    notes = [line for line in out.stderr.splitlines() if "raised to the site minimum" in line]
    assert len(notes) == (1 if 0.5 < MIN_INTERVAL else 0), out.stderr
    assert all(line.startswith("salloc:") for line in notes), notes
