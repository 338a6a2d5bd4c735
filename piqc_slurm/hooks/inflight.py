"""The Prolog runs off the job's path; the Epilog waits for one still in flight.

The hook wrapper (epilog/piqc-hook.sh) returns from the Prolog at once: it
starts itself again detached (setsid, fds on /dev/null) as
`/bin/sh WRAPPER --piqc-detached-prolog JOB`, and that copy runs
`piqc-slurm prolog` under the wrapper's timeout. A job that ends within
milliseconds of its start (or a node under load) can then reach its Epilog
while that Prolog is still writing the run dir or starting the sampler; the
Epilog would summarise a job with no Prolog record, and the sampler started
after it would outlive the job. So the Epilog, when the run dir is not
complete, waits (bounded) for every root-owned process whose argv holds
`--piqc-detached-prolog JOB`. The process exists from the wrapper's fork on
(its argv is the wrapper's own), so there is no window in which a Prolog is
running but cannot be seen. Only root's processes count: a user's process
with that argv cannot delay an Epilog.

Standard library and sampler/procs.py's /proc listing only; the Epilog calls
it only when the run dir is incomplete, so the common path reads nothing from
/proc.
"""

from __future__ import annotations

import os
import time

MARK = b"--piqc-detached-prolog"
"""The argument the wrapper passes its detached copy, followed by the job id."""

PROLOG_WAIT = 15.0
"""Longest wait, in seconds, for a Prolog in flight: the wrapper's Prolog timeout (10 s) and its
kill grace (2 s), with a margin; well inside the Epilog's own 30 s."""


def prologs_in_flight(job_id: int, proc_root: str = "/proc") -> list[int]:
    """Pids of root's detached Prolog wrappers of `job_id`."""
    from piqc_slurm.sampler.procs import pid_names

    want = b"%s\0%d\0" % (MARK, job_id)
    found = []
    for name in pid_names(proc_root):
        base = os.path.join(proc_root, name)
        try:
            if os.stat(base).st_uid != 0:
                continue
            with open(os.path.join(base, "cmdline"), "rb") as fh:
                cmdline = fh.read()
        except OSError:  # gone, or not a process
            continue
        if want in cmdline:
            found.append(int(name))
    return sorted(found)


def wait_for_prolog(job_id: int, timeout: float = PROLOG_WAIT, proc_root: str = "/proc",
                    poll: float = 0.02) -> tuple[float, bool]:
    """Wait until no Prolog of `job_id` is in flight; (seconds waited, True if one was still running
    at the timeout)."""
    t0 = time.monotonic()
    while prologs_in_flight(job_id, proc_root):
        waited = time.monotonic() - t0
        if waited >= timeout:
            return waited, True
        time.sleep(poll)
    return time.monotonic() - t0, False
