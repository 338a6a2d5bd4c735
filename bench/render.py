#!/usr/bin/env python3
"""README's performance table, rendered from bench/run.py's JSON (never typed by hand).

    .venv/bin/python bench/render.py /tmp/piqc-bench/results.json [MORE.json ...] [--all]

One Markdown table: what, figure, target (and whether it is met), ratio
(to what, where the figure has a reference), machine, date. By default the
headline figures below, in this order, from whichever file has them (a later
file wins); --all: every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEADLINE = (
    "hooks.prolog", "hooks.prolog.ratio", "hooks.prolog.sampler_started", "hooks.epilog.live",
    "hooks.epilog.spool.7day", "hooks.epilog.spool.flat",
    "hooks.epilog.sqlite.7day", "hooks.epilog.sqlite.7day.delivered", "hooks.epilog.sqlite.flat",
    "hooks.epilog.postgresql.7day", "hooks.epilog.postgresql.7day.delivered",
    "hooks.epilog.postgresql.flat",
    "sampler.cpu.1s.gpm_on", "sampler.cpu.1s.gpm_off", "sampler.rss.1s.gpm_on", "sampler.cpu.0.1s.gpm_on",
    "store.ingest.sqlite", "store.ingest.postgresql", "store.analyze.sqlite", "store.analyze.postgresql",
    "store.digest.sqlite", "store.digest.postgresql", "store.costs.sqlite", "store.gaps.sqlite",
    "store.sacct.user_day.sqlite", "store.sacct.account_month.sqlite", "store.sacct.account_month.postgresql",
    "store.sacct.job.sqlite", "store.sacct.job.postgresql", "store.bytes_per_gpu_hour.sqlite",
    "store.bytes_per_gpu_hour.postgresql", "store.prometheus_bytes_per_gpu_hour",
    "cluster.sacct.j.ratio", "cluster.sacct.window.ratio", "cluster.sacct.state.ratio", "cluster.sacct.table.ratio",
    "cluster.sacct.parsable.ratio", "cluster.sacct.user.ratio", "cluster.sacct.recent.ratio",
    "cluster.sacct.default.ratio", "cluster.sacct.json.ratio", "cluster.sacct.ratio_median",
    "cluster.sacct.ratio_worst", "cluster.seff.ratio", "cluster.reportseff.ratio",
)


def number(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "ms":
        return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"
    if unit == "s":
        return f"{v:.1f} s" if v >= 10 else f"{v:.2f} s"
    if unit == "%":
        return f"{v:.2f} %"
    if unit == "B":
        return f"{v:,.0f} B"
    return f"{v:,.1f} {unit}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(files: list[Path], everything: bool = False) -> str:
    figs: dict[str, tuple[dict, dict]] = {}
    for path in files:
        doc = json.loads(path.read_text())
        for f in doc.get("figures", []):
            figs[f["id"]] = (f, doc["machine"])
    ids = list(figs) if everything else [i for i in HEADLINE if i in figs]
    lines = ["| what | figure | target | ratio | machine | date |", "|---|---|---|---|---|---|"]
    for i in ids:
        f, m = figs[i]
        target = ""
        if f.get("target") is not None:
            target = f"{f['op']} {number(f['target'], f['unit'])} {'met' if f['pass'] else '**missed**'}"
        ratio = ""
        if f.get("ratio") is not None and f["unit"] != "x":
            ratio = f"{f['ratio']:.2f}x {f['ratio_to']}"
        elif f["unit"] == "x" and f.get("ratio_to"):
            ratio = f"vs {f['ratio_to']}"
        # the CPU too: two "2 cores" machines here differ ~2x (Intel Xeon on 12-02/03, AMD EPYC on 12-04)
        cpu = (m.get("cpu") or "").replace("(R)", "").replace(" Processor", "").strip()
        machine = f"{m['nproc']} cores{' ' + cpu if cpu else ''}, {m['mem_gib']} GiB"
        lines.append(f"| {cell(f['what'])} | {number(f['value'], f['unit'])} | {target} | {cell(ratio)} | "
                     f"{machine} | {m['date']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--all", action="store_true", help="every figure, not only the headline ones")
    args = ap.parse_args(argv)
    for p in args.json:
        if not p.is_file():
            print(f"render.py: {p}: no such file (run bench/run.py first)", file=sys.stderr)
            return 2
    sys.stdout.write(render(args.json, args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
