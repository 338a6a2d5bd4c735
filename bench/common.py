"""What every bench suite shares: the figure record, timing, the machine, PostgreSQL.

A suite is `suite(ctx: Ctx) -> None` in a bench_*.py module; it adds figures
with `ctx.add(...)`. A figure is one number a person reads in the table:

    id        stable key ("hooks.prolog.sqlite"): the baseline check matches on it
    what      one line: what was measured
    value     the figure (a median where several runs were made), in `unit`
    unit      "ms", "s", "%", "MiB", "B", "x" (a ratio), "rows/s", ...
    target    the issue's target in the same unit, or None; `op` "<=" or "<"
    ratio     value / the same thing done by the reference (`ratio_to`), or None
    detail    {p99, n, min, max, ...}: what the table does not show
    gate      True: CI's quick run fails when it is over 5x its baseline

Times of a subprocess are wall clock from fork to exit (interpreter start
included: that is what a person waiting for it sees).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
PIQC = str(REPO / ".venv" / "bin" / "piqc-slurm")


class Skip(Exception):  # noqa: N818 - a suite that cannot run here says why, and the others go on
    """This suite (or part) cannot run here: the message says why."""


@dataclass
class Ctx:
    quick: bool = False
    pg: bool = True                       # also PostgreSQL where a suite has a store
    jobs: int | None = None               # store scale (None: the suite's default for the mode)
    figures: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suite: str = ""

    def add(self, key: str, what: str, value: float, unit: str, *, target: float | None = None, op: str = "<=",
            ratio: float | None = None, ratio_to: str | None = None, gate: bool = False, **detail) -> dict:
        fig = {"id": f"{self.suite}.{key}", "suite": self.suite, "what": what, "value": _round(value),
               "unit": unit, "target": target, "op": op if target is not None else None,
               "pass": None if target is None else (value <= target if op == "<=" else value < target),
               "ratio": None if ratio is None else round(ratio, 2), "ratio_to": ratio_to, "gate": gate,
               "detail": {k: _round(v) if isinstance(v, float) else v for k, v in detail.items()}}
        self.figures.append(fig)
        mark = "" if fig["pass"] is None else ("  ok" if fig["pass"] else "  MISS")
        extra = f"  ({fig['ratio']}x {ratio_to})" if ratio is not None else ""
        print(f"  {fig['id']:<44} {fig['value']:>10} {unit:<6}{extra}{mark}", flush=True)
        return fig

    def note(self, text: str) -> None:
        self.notes.append(f"{self.suite}: {text}")
        print(f"  note: {text}", flush=True)


def _round(v: float) -> float:
    if isinstance(v, int):
        return v
    a = abs(v)
    return round(v, 1 if a >= 100 else 2 if a >= 1 else 4)


def stats(xs: list[float]) -> dict:
    """median, p99 (nearest rank), min, max, n of a sample."""
    s = sorted(xs)
    return {"median": statistics.median(s), "p99": s[max(0, -(-99 * len(s) // 100) - 1)], "min": s[0],
            "max": s[-1], "n": len(s)}


def run(argv: list[str], env: dict[str, str] | None = None, *, check: bool = True, **kw) -> tuple[float, str]:
    """(wall seconds, stdout) of one subprocess; a failure is an error with its stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    secs = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise RuntimeError(f"failed (rc {r.returncode}): {' '.join(argv)}\n{r.stderr.strip()[-2000:]}")
    return secs, r.stdout


def repeat(argv: list[str], env: dict[str, str] | None, n: int, **kw) -> tuple[list[float], str]:
    """Wall seconds of n runs (after one unmeasured warm-up: the page cache), and the last stdout."""
    out = run(argv, env, **kw)[1]
    times = []
    for _ in range(n):
        secs, out = run(argv, env, **kw)
        times.append(secs)
    return times, out


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "python": platform.python_version(),
            "kernel": platform.release(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
            "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def postgres_available() -> str | None:
    """Why PostgreSQL cannot be had here, or None (docker-slurm/postgres.sh's server, as the tests use it)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from pg import PostgresUnavailable, postgres_url

        postgres_url()
    except PostgresUnavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any reason is a reason to leave PostgreSQL out
        return f"{type(exc).__name__}: {exc}"
    finally:
        sys.path.remove(str(REPO / "tests"))
    return None


@contextlib.contextmanager
def pg_database(prefix: str = "piqc_bench") -> Iterator[str]:
    """A new, empty database on the test server (never tables in its base database), dropped after."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from pg import create_database, drop_database
    finally:
        sys.path.remove(str(REPO / "tests"))
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def env_utc() -> dict[str, str]:
    """The environment for piqc-slurm runs: UTC (the generated data is), no PIQC_* of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    env["TZ"] = "UTC"
    return env
