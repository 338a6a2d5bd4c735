#!/usr/bin/env python3
"""piqc-slurm's benchmarks: one command, a table on stdout, every figure in JSON.

    .venv/bin/python bench/run.py                  # everything (as root; ~1 h with the 1M-job store)
    .venv/bin/python bench/run.py --quick          # CI's run: small sizes, under 2 minutes
    .venv/bin/python bench/run.py --only hooks,sampler --json /tmp/piqc-bench/hooks.json
    .venv/bin/python bench/run.py --quick --check bench/baseline.json   # fail on a 5x regression (CI)
    .venv/bin/python bench/run.py --quick --save-baseline bench/baseline.json  # record a new baseline
    .venv/bin/python bench/render.py /tmp/piqc-bench/results.json      # README's table

Suites (bench/bench_<name>.py, each a `suite(ctx)`):
  hooks     Prolog/Epilog wrapper wall time vs the same wrapper calling /bin/true
  sampler   the per-job sampler's CPU and RSS, 8 fake GPUs, 1 s and 0.1 s, GPM on and off
  store     1M generated jobs: ingest, analyze, digest, costs, gaps, sacct queries; bytes per GPU-hour
  simulate  the 100-GPU example week through `simulate`, then costs and sacct on it
  cluster   side by side on the live test cluster: piqc-slurm sacct vs sacct, seff vs seff and reportseff
            (not in --quick: it needs >= 2,000 finished jobs in slurmdbd)

These are benchmarks, not timed tests: a figure that misses its target is
reported (MISS), and the run still succeeds. Only --check fails, and only on
a gross regression: a gated figure more than 5x (--factor) its baseline and
at least 50 ms worse. Results: --json (default /tmp/piqc-bench/results.json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import Ctx, Skip, machine  # noqa: E402

SUITES = ("hooks", "sampler", "store", "simulate", "cluster")
QUICK = ("hooks", "sampler", "store", "simulate")
ABS_SLACK = {"ms": 50.0, "s": 0.05}  # a regression must also be this much worse: tiny figures are noisy


def regressions(results: dict, baseline: dict, factor: float) -> list[str]:
    """Gated figures more than `factor` x their baseline (and more than the slack worse)."""
    base = {f["id"]: f for f in baseline.get("figures", [])}
    bad = []
    for f in results["figures"]:
        b = base.get(f["id"])
        if not f.get("gate") or b is None or b["unit"] != f["unit"] or not b["value"]:
            continue
        slack = ABS_SLACK.get(f["unit"], 0.0)
        if f["value"] > factor * b["value"] and f["value"] - b["value"] > slack:
            bad.append(f"{f['id']}: {f['value']} {f['unit']} > {factor:g} x baseline {b['value']} {b['unit']}")
    return bad


def compile_bytecode() -> None:
    """Byte-compile piqc_slurm as `pip install` does: an editable install under
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) would otherwise compile every module it
    imports at every start, and a figure would time the compiler (20-40 ms of each command)."""
    import compileall

    compileall.compile_dir(str(BENCH.parent / "piqc_slurm"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--quick", action="store_true", help="small sizes and few runs (CI; under 2 minutes)")
    ap.add_argument("--only", metavar="NAME[,NAME]", help=f"suites to run (of {', '.join(SUITES)})")
    ap.add_argument("--json", metavar="OUT", default="/tmp/piqc-bench/results.json", help="write results here")
    ap.add_argument("--jobs", type=int, help="store suite: generated jobs (default 1,000,000; quick 20,000)")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only (no PostgreSQL)")
    ap.add_argument("--check", metavar="BASELINE", help="fail (exit 1) on a gated figure > --factor x BASELINE's")
    ap.add_argument("--factor", type=float, default=5.0, help="regression factor for --check (default 5)")
    ap.add_argument("--save-baseline", metavar="PATH", help="write this run's gated figures as a baseline "
                    "(bench/baseline.json is a --quick run's, on the machine README names)")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(QUICK if args.quick else SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        ap.error(f"unknown suite {', '.join(unknown)} (suites: {', '.join(SUITES)})")

    results = {"format": "piqc-bench/1", "quick": args.quick, "machine": machine(), "suites": {},
               "figures": [], "notes": []}
    compile_bytecode()
    t_all = time.perf_counter()
    for name in names:
        ctx = Ctx(quick=args.quick, pg=not args.no_pg, jobs=args.jobs, suite=name)
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"bench_{name}").suite(ctx)
            status = "ok"
        except Skip as exc:
            status = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - one broken suite must not lose the others' figures
            traceback.print_exc()
            status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        secs = time.perf_counter() - t0
        print(f"== {name}: {status} ({secs:.0f} s)", flush=True)
        results["suites"][name] = {"status": status, "seconds": round(secs, 1)}
        results["figures"] += ctx.figures
        results["notes"] += ctx.notes
    results["seconds"] = round(time.perf_counter() - t_all, 1)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if args.save_baseline:
        keep = [{"id": f["id"], "value": f["value"], "unit": f["unit"]} for f in results["figures"] if f["gate"]]
        Path(args.save_baseline).write_text(json.dumps({"format": "piqc-bench/1", "quick": args.quick,
                                                        "machine": results["machine"], "figures": keep},
                                                       indent=1) + "\n")
    misses = [f for f in results["figures"] if f["pass"] is False]
    print(f"\n{len(results['figures'])} figures in {results['seconds']:.0f} s, {len(misses)} over target; "
          f"JSON: {out}")
    for f in misses:
        print(f"  MISS {f['id']}: {f['value']} {f['unit']} (target {f['op']} {f['target']})")
    failed = [n for n, s in results["suites"].items() if s["status"].startswith("failed")]
    rc = 1 if failed else 0
    if failed:
        print(f"suites failed: {', '.join(failed)}", file=sys.stderr)
    if args.check:
        bad = regressions(results, json.loads(Path(args.check).read_text()), args.factor)
        for line in bad:
            print(f"REGRESSION {line}", file=sys.stderr)
        if bad:
            rc = 1
        else:
            print(f"no figure over {args.factor:g}x its baseline ({args.check})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
