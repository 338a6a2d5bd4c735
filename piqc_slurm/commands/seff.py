"""`piqc-slurm seff JOBID`: one job's report for a person (report/seff.py renders it)."""

from __future__ import annotations

import click

from piqc_slurm.commands import load_config, store_url


def register(group: click.Group) -> None:
    @group.command()
    @click.argument("jobid")
    @click.option("-M", "--cluster", metavar="NAME", help="Cluster, where the store holds several.")
    @click.option("--json", "as_json", is_flag=True, help="The report as one JSON object (keys: docs/seff.md).")
    @click.pass_context
    def seff(ctx: click.Context, jobid: str, cluster: str | None, as_json: bool) -> None:
        """One job's efficiency report: Slurm seff's lines (state and exit code, cores,
        CPU utilized and efficiency of the core-walltime, wall-clock time, memory utilized
        and efficiency of the request), the share of the time limit used, then per GPU
        (jobstats' figures: utilization, memory used of the card, power) and the job's
        GPU cost, waste, findings and advice.

        JOBID is 1234 (the job with that raw id, as seff), 1234_5 (an array task),
        1234+1 (a het job component) or 1234.STEP (that step's CPU and memory only).
        A running job shows what the store holds so far, marked as such; as root on
        the job's node, also the live GPU figures of its sampler's checkpoint.

        With PrivateData=jobs in slurm.conf users see their own jobs ([access]
        admin_users/admin_groups see all); without it, every job, as sacct shows them.
        It only reads the store (a user who may read a SQLite store's file can run it).

        Exit status: 0 shown; 2 a bad job id ("Bad job/step specified: abc"), or a
        job the store does not hold or the caller may not see; 3 the store unreadable.
        """
        import time

        from piqc_slurm.query.access import Caller
        from piqc_slurm.report.seff import run

        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        click.echo(run(url, cfg, jobid, cluster=cluster, caller=Caller.current(), now=int(time.time()),
                       as_json=as_json, live=read_live), nl=False)


def read_live(job: dict, cfg, catalog, spool_dir: str | None = None):
    """(Live, None) from this node's sampler checkpoint of the running job, else (None, why not).

    The run dir is <spool_dir>/run/<cluster>.<jobid>.<restart>.<node> (hooks/spool.py), root-only:
    a spool, run/ or run dir that is a symlink, not ours or writable by others is refused (as the
    hooks refuse it), and the checkpoint is opened without following a symlink."""
    import json
    import os
    from pathlib import Path

    from piqc_slurm.errors import SpoolFormatError
    from piqc_slurm.fsutil import unsafe_dir
    from piqc_slurm.report.seff import Live, live_devices
    from piqc_slurm.sampler.checkpoint import CHECKPOINT_NAME, validate_checkpoint
    from piqc_slurm.slurm.parse import expand_nodelist

    nodes = ", ".join(expand_nodelist(job.get("nodelist") or "")) or "its node"
    hint = f"run `piqc-slurm seff {job['job_id']}` as root on {nodes} for the sampler's live checkpoint"
    root = Path(spool_dir or cfg["spool_dir"])
    run = root / "run"
    prefix = f"{job['cluster']}.{job['job_id_raw']}."
    try:
        for d in (root, run):
            why = unsafe_dir(d)
            if why:
                return None, f"none: {why}"
        names = [n for n in os.listdir(run) if n.startswith(prefix)]
    except FileNotFoundError:
        return None, f"none on this host (no {run}); {hint}"
    except PermissionError:
        return None, hint
    except OSError as e:
        return None, f"none: {run}: {e.strerror or e}"
    runs = []
    for n in names:
        restart, _, node = n[len(prefix):].partition(".")
        if restart.isdigit() and node:
            runs.append((int(restart), node, n))
    if not runs:
        return None, f"none on this host (no run dir of job {job['job_id_raw']} in {run}); {hint}"
    _restart, node, name = max(runs)
    d = run / name
    try:
        why = unsafe_dir(d)
        if why:
            return None, f"none: {why}"
        fd = os.open(d / CHECKPOINT_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            doc = validate_checkpoint(json.loads(fh.read(16 << 20)), str(d / CHECKPOINT_NAME))
    except FileNotFoundError:
        return None, f"none yet (no checkpoint in {d})"
    except (OSError, ValueError, SpoolFormatError) as e:
        return None, f"none: {d / CHECKPOINT_NAME}: {getattr(e, 'strerror', None) or e}"
    nv = doc["nvml"]
    return Live(node=node, updated=float(doc["updated"]),
                devices=live_devices(doc, catalog, cfg["usage.min_active_share"]),
                nvml_ok=bool(nv.get("ok")), nvml_error=nv.get("error")), None
