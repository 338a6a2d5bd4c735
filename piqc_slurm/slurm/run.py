"""Running Slurm's client commands: the only place piqc-slurm starts sacct or
scontrol. Pure parsing of what they print is in parse.py and records.py."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from piqc_slurm.errors import SacctError

SACCT_TIMEOUT = 300
SCONTROL_TIMEOUT = 30
TOOL_PATH = "/usr/bin:/usr/local/bin:/bin"
"""Where a Slurm client is looked for besides PATH: slurmd runs hooks (and so the sampler) with none."""


def slurm_tool(name: str, env: Mapping[str, str]) -> str:
    """The client's path from env's PATH, else TOOL_PATH; the bare name if neither has it (then
    run_command says it is not found)."""
    import shutil

    return shutil.which(name, path=f"{env.get('PATH') or ''}:{TOOL_PATH}") or name


def run_command(argv: list[str], env: Mapping[str, str], timeout: float, what: str) -> str:
    """Run a Slurm client; its stdout, or SacctError with the client's own last error line."""
    try:
        r = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=timeout,
                           errors="surrogateescape")
    except FileNotFoundError:
        raise SacctError(f"{argv[0]} not found (install slurm-client{what})") from None
    except subprocess.TimeoutExpired:
        raise SacctError(f"{argv[0]} did not finish within {timeout:g}s (is the Slurm controller overloaded?)") \
            from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise SacctError(f"{argv[0].rsplit('/', 1)[-1]} failed: {last}")
    return r.stdout


def run_sacct(argv: list[str], env: Mapping[str, str], timeout: float = SACCT_TIMEOUT) -> str:
    return run_command(argv, env, timeout, ", or use --sacct-file")


def scontrol_config_value(key: str, env: Mapping[str, str], timeout: float = SCONTROL_TIMEOUT) -> str | None:
    """One `scontrol show config` value (ClusterName ...); None if absent."""
    from piqc_slurm.slurm.parse import parse_show_config

    return parse_show_config(run_command(["scontrol", "show", "config"], env, timeout, "")).get(key)


def scontrol_nodes(env: Mapping[str, str], timeout: float = SCONTROL_TIMEOUT) -> str:
    """`scontrol show node -o` (one line per node)."""
    return run_command(["scontrol", "show", "node", "-o"], env, timeout, "")


SACCTMGR_TIMEOUT = 60


def sacctmgr_events(start: int, end: int, clusters: list[str], env: Mapping[str, str],
                    timeout: float = SACCTMGR_TIMEOUT) -> str:
    """Node events (down, drain, fail) overlapping [start, end] of these clusters:
    `sacctmgr -n -P show event Clusters=... Event=Node Start=uts.. End=uts..
    format=Cluster,NodeName,Start,End,State,Reason`, with epoch-second times (TZ=UTC,
    SLURM_TIME_FORMAT=%s, as ingest's sacct). Parse with parse.parse_node_events."""
    import re

    from piqc_slurm.slurm.argv import sacct_env
    from piqc_slurm.slurm.parse import EVENT_FIELDS

    for c in clusters:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", c, re.ASCII):
            raise ValueError(f"bad cluster name {c!r}")
    argv = ["sacctmgr", "-n", "-P", "show", "event", "Event=Node", f"Start=uts{max(int(start), 1_000_000)}",
            f"End=uts{int(end)}", f"format={','.join(EVENT_FIELDS)}"]
    if clusters:
        argv.insert(5, f"Clusters={','.join(clusters)}")
    return run_command(argv, sacct_env(env), timeout, "")


def sacctmgr_tres(env: Mapping[str, str], timeout: float = 10) -> str:
    """`sacctmgr -nP show tres format=Type,Name,ID`: the site's TRES ids (gres ones are its own)."""
    return run_command(["sacctmgr", "-nP", "show", "tres", "format=Type,Name,ID"], env, timeout, "")


def sacct_version(env: Mapping[str, str], timeout: float = 10) -> str | None:
    """The local sacct's release (`sacct -V`: `slurm-wlm 22.05.8`, `slurm 23.02.1`); None if unknown."""
    words = run_command(["sacct", "-V"], env, timeout, "").split()
    return words[-1] if words else None
