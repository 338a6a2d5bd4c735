"""Helpers to drive the real local test cluster (docker-slurm/cluster.sh).

Jobs are submitted as the unprivileged test user, with a clean environment,
and waited for by polling sacct/squeue against a deadline, never by fixed
sleeps (sacct may briefly show JobName=allocation right after a job ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "docker-slurm" / "cluster.sh"
TEST_USER = os.environ.get("TEST_USER", "piqcuser")
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE")


def parse_env_lines(text: str) -> dict[str, str]:
    """`export NAME=value` lines (as cluster.sh env prints them) -> dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.strip())
        if m:
            name, value = m.group(1), m.group(2)
            value = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
            env[name] = value
    return env


@dataclass
class Cluster:
    env: dict[str, str]
    user: str = TEST_USER
    home: Path = field(default_factory=lambda: Path("/home") / TEST_USER)

    @property
    def dir(self) -> Path:
        return Path(self.env["PIQC_CLUSTER_DIR"])

    def root_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra)
        return env

    def run(self, argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.root_env())
        return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)

    def user_argv(self, argv: list[str]) -> list[str]:
        """argv run as the test user with a clean environment, from their home."""
        env = [f"SLURM_CONF={self.env['SLURM_CONF']}", f"HOME={self.home}", f"USER={self.user}",
               f"PATH={self.dir / 'bin'}:/usr/bin:/bin"]
        return ["runuser", "-u", self.user, "--", "env", "-i", *env, *argv]

    def sbatch(self, script: str, *args: str, name: str = "piqc-test", check: bool = True
               ) -> subprocess.CompletedProcess:
        argv = self.user_argv(["sbatch", "--parsable", f"--job-name={name}", *args, "--wrap", script])
        return subprocess.run(argv, check=check, capture_output=True, text=True, cwd=self.home)

    def submit(self, script: str, *args: str, name: str = "piqc-test") -> int:
        out = self.sbatch(script, *args, name=name).stdout.strip()
        return int(out.split(";")[0].split("_")[0])

    def state(self, job_id: int | str) -> tuple[str, str]:
        """(State, JobName) of the allocation line in sacct, or ('', '')."""
        r = self.run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "--format=State,JobName"], check=False)
        line = r.stdout.strip().splitlines()
        if not line:
            return "", ""
        state, _, name = line[0].partition("|")
        return state, name

    def wait(self, job_id: int | str, states: tuple[str, ...] = FINAL_STATES, timeout: float = 60) -> str:
        """Poll until the job reaches one of `states` (and sacct knows its name)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state, name = self.state(job_id)
            if state.split(" ")[0] in states and name != "allocation":
                return state
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} still {state!r} after {timeout}s")

    def wait_running(self, job_id: int | str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], check=False)
            if r.stdout.strip() == "RUNNING":
                return
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} not RUNNING after {timeout}s")

    def job_gpu_minors(self, job_id: int | str) -> list[int]:
        """Device minors of a running job's GPUs, from `scontrol show job -d` (IDX:...)."""
        out = self.run(["scontrol", "show", "job", "-d", str(job_id)]).stdout
        m = re.search(r"GRES=\S*\(IDX:([0-9,\-]+)\)", out)
        if not m:
            return []
        minors: list[int] = []
        for part in m.group(1).split(","):
            lo, _, hi = part.partition("-")
            minors.extend(range(int(lo), int(hi or lo) + 1))
        return minors

    def node_state(self) -> str:
        return self.run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.strip()

    def summary_file(self, job_id: int, node: str | None = None, where: str = "shared") -> Path | None:
        """The newest summary of this job id on this node (names end in the run's start)."""
        node = node or self.node
        d = self.dir / "piqc" / ("shared-spool/" + node if where == "shared" else "spool/outbox")
        found = sorted(d.glob(f"{self.cluster_name}.{job_id}.0.{node}.*.summary.json"))
        return found[-1] if found else None

    def wait_summary(self, job_id: int, where: str = "shared", timeout: float = 30) -> dict:
        """The job's summary once the Epilog has delivered it."""
        deadline = time.monotonic() + timeout
        while (path := self.summary_file(job_id, where=where)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no summary of job {job_id} ({where}) after {timeout}s; hook log:\n"
                                   f"{self.hook_log()[-2000:]}")
            time.sleep(0.2)
        return json.loads(path.read_text())

    def wait_hook(self, verb: str, job_id: int, timeout: float = 30) -> str:
        """The wrapper's End line for this job's hook."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.hook_log().splitlines():
                if f"{verb} End job={job_id} " in line:
                    return line
            time.sleep(0.2)
        raise TimeoutError(f"no '{verb} End job={job_id}' in the hook log")

    def wait_hook_line(self, job_id: int, text: str, timeout: float = 30) -> str:
        """The first hook-log line of this job holding `text` (a detached push logs after End)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.hook_lines(job_id) if text in ln]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no line with {text!r} for job {job_id} in the hook log:\n"
                                   f"{self.hook_log()[-2000:]}")
            time.sleep(0.2)

    def hook_lines(self, job_id: int) -> list[str]:
        return [ln for ln in self.hook_log().splitlines() if f"job={job_id}" in ln]

    @property
    def node(self) -> str:
        return self.run(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()[0]

    @property
    def cluster_name(self) -> str:
        import tomllib

        return tomllib.loads(Path(self.env["PIQC_CONFIG"]).read_text())["cluster"]

    @contextlib.contextmanager
    def patched(self, path: Path, transform):
        """Temporarily rewrite a cluster file (config, fake driver config); restore it exactly."""
        original = path.read_bytes()
        path.write_text(transform(original.decode()))
        try:
            yield
        finally:
            path.write_bytes(original)

    def hook_log(self) -> str:
        path = Path(self.env.get("PIQC_HOOK_LOG", self.dir / "log" / "hooks.log"))
        return path.read_text() if path.exists() else ""


def cluster_up() -> Cluster:
    subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True)
    out = subprocess.run(["bash", str(CLUSTER_SH), "env"], check=True, capture_output=True, text=True).stdout
    return Cluster(env=parse_env_lines(out))


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
