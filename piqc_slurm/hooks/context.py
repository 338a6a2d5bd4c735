"""What a slurmd Prolog/Epilog knows about its job, read from the hook
environment (SLURM-FACTS.md lists what slurmd exports), and the decisions
that follow from it. Pure: environment and config in, values out.

Everything here treats the environment as untrusted text: users control job
names, output paths and SPANK_* variables (they can be set without the
plugin), so ids are parsed as integers, names are checked against a strict
alphabet before they reach a file name, and the monitoring interval a user
asks for is re-validated against root's config.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SPANK_VAR = "SPANK_PIQC_GPU_MONITOR"


class JobContext(NamedTuple):  # NamedTuple, not dataclass: the Prolog's imports are its cost
    cluster: str
    job_id: int
    restart_count: int
    node: str
    uid: int | None
    gid: int | None
    user: str
    account: str
    partition: str
    gpus: tuple[int, ...]  # device minors (SLURM_JOB_GPUS)
    nodelist: str
    stdout: str | None  # the raw pattern, unexpanded
    work_dir: str | None
    array_job_id: int | None
    array_task_id: int | None
    exit_code: str | None  # Epilog only: SLURM_JOB_EXIT_CODE2 (e.g. "42:0")
    spank_monitor: str | None

    @property
    def key(self) -> str:
        """File-name key of this job on this node: cluster.jobid.restart.node."""
        return f"{self.cluster}.{self.job_id}.{self.restart_count}.{self.node}"

    def to_dict(self) -> dict:
        d = self._asdict()
        d["gpus"] = list(self.gpus)
        return d


class ContextError(ValueError):
    """The hook environment lacks or garbles something the hook needs."""


def _int(env: dict[str, str], name: str, required: bool = False) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        if required:
            raise ContextError(f"{name} is not set")
        return None
    if not (raw.isascii() and raw.isdigit()):  # '²'.isdigit() is True, int('²') is not
        raise ContextError(f"{name} is not a non-negative integer: {raw[:40]!r}")
    # Slurm's ids and counts are uint32; a longer one would reach file names and the store
    # (and int() of 4,300+ digits is a ValueError of its own)
    if len(raw.lstrip("0")) > 10 or int(raw) > 0xFFFFFFFF:
        raise ContextError(f"{name} is out of range: {raw[:40]!r}")
    return int(raw)


def _name(env: dict[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not SAFE_NAME.match(raw):
        raise ContextError(f"{name} has characters unsafe in a file name: {raw[:40]!r}")
    return raw


def parse_gpus(raw: str | None) -> tuple[int, ...]:
    """SLURM_JOB_GPUS ("0,1,5") -> device minors. Empty or absent: a CPU-only job."""
    if not raw or not raw.strip():
        return ()
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or len(part.lstrip("0")) > 4 or int(part) > 4095:
            raise ContextError(f"SLURM_JOB_GPUS has a bad entry: {part[:20]!r}")
        out.append(int(part))
    return tuple(out)


def from_env(env: dict[str, str], cluster_override: str = "") -> JobContext:
    job_id = _int(env, "SLURM_JOB_ID", required=True)
    if cluster_override:  # the site's config names the cluster
        cluster = _name({"cluster": cluster_override}, "cluster", "cluster")
    else:
        cluster = _name(env, "SLURM_CLUSTER_NAME", "cluster")
    return JobContext(
        cluster=cluster,
        job_id=job_id,
        restart_count=_int(env, "SLURM_JOB_RESTART_COUNT") or 0,
        node=_name(env, "SLURMD_NODENAME", "node"),
        uid=_int(env, "SLURM_JOB_UID"),
        gid=_int(env, "SLURM_JOB_GID"),
        user=env.get("SLURM_JOB_USER", ""),
        account=env.get("SLURM_JOB_ACCOUNT", ""),
        partition=env.get("SLURM_JOB_PARTITION", ""),
        gpus=parse_gpus(env.get("SLURM_JOB_GPUS")),
        nodelist=env.get("SLURM_NODELIST", "") or env.get("SLURM_JOB_NODELIST", ""),
        stdout=env.get("SLURM_JOB_STDOUT") or None,
        work_dir=env.get("SLURM_JOB_WORK_DIR") or None,
        array_job_id=_int(env, "SLURM_ARRAY_JOB_ID"),
        array_task_id=_int(env, "SLURM_ARRAY_TASK_ID"),
        exit_code=env.get("SLURM_JOB_EXIT_CODE2") or None,
        spank_monitor=env.get(SPANK_VAR),
    )


class MonitorDecision(NamedTuple):
    enabled: bool
    interval: float
    mode: str  # "on", "off" (user opt-out), "disabled" (site), "cpu-only"
    note: str = ""  # why the user's request was not taken as given
    nowatch: bool = False  # the user asked for no live watch (--gpu-monitor=...,nowatch)


def decide_monitor(ctx_gpus: tuple[int, ...], spank_value: str | None, *, enabled: bool, interval: float,
                   min_interval: float, max_interval: float, allow_opt_out: bool) -> MonitorDecision:
    """Whether and how often to sample, from the site config and the user's SPANK value.

    The user's value is untrusted (SPANK_* can be set without the plugin), so it
    is parsed again here and clamped to [min_interval, max_interval].
    """
    site_interval = min(max(interval, min_interval), max_interval)
    if not ctx_gpus:
        return MonitorDecision(False, site_interval, "cpu-only")
    if not enabled:
        return MonitorDecision(False, site_interval, "disabled")
    raw = (spank_value or "").strip().lower()
    nowatch = raw == "nowatch" or raw.endswith(",nowatch")
    if nowatch:
        raw = "on" if raw == "nowatch" else raw[:-len(",nowatch")]
        return decide_monitor(ctx_gpus, raw, enabled=enabled, interval=interval, min_interval=min_interval,
                              max_interval=max_interval, allow_opt_out=allow_opt_out)._replace(nowatch=True)
    if raw in ("", "on"):
        return MonitorDecision(True, site_interval, "on")
    if raw == "off":
        if allow_opt_out:
            return MonitorDecision(False, site_interval, "off")
        return MonitorDecision(True, site_interval, "on", "opt-out refused by site policy")
    try:
        asked = float(raw) if len(raw) <= 32 else math.nan
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        return MonitorDecision(True, site_interval, "on", f"ignored invalid interval {raw[:32]!r}")
    clamped = min(max(asked, min_interval), max_interval)
    note = f"interval {asked:g}s clamped to {clamped:g}s" if clamped != asked else ""
    return MonitorDecision(True, clamped, "on", note)


def is_batch_host(ctx: JobContext) -> bool:
    """The batch script runs on the first node of the allocation."""
    if not ctx.nodelist:
        return True
    import hostlist  # python-hostlist; only the Epilog pays for it

    try:
        first = hostlist.expand_hostlist(ctx.nodelist)[0]
    except (hostlist.BadHostlist, IndexError):
        return False
    return first == ctx.node
