"""The digest laid out: one self-contained HTML page (jinja2, autoescaped; inline CSS
and SVG; a Content-Security-Policy that forbids every request) and its plain-text
twin for mail. Input: piqc_slurm.digest.build's data; nothing here computes a
figure, it only formats them (money: usage.cost.money, half-up to the cent)."""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from piqc_slurm.usage.cost import money

TEMPLATES = Path(__file__).resolve().parent / "templates"


def usd(x: float | None) -> str:
    m = money(x)
    return "–" if m is None else (f"-${-m:,.2f}" if m < 0 else f"${m:,.2f}")


def hours(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def delta(x: float | None, word: str = "previous window") -> str:
    if x is None:
        return f"no {word} to compare"
    if abs(x) < 0.005:
        return f"unchanged from the {word}"
    return f"{'▲' if x > 0 else '▼'} {abs(100 * x):.0f}% vs the {word}"


def _when(t: int, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")


def _span(seconds: int) -> str:
    """The window's length in words: day, 7 days, 6 hours, 2 minutes."""
    if seconds == 86400:
        return "day"
    if seconds >= 86400:
        return f"{seconds / 86400:.3g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} hours"
    return f"{max(seconds // 60, 1)} minute{'s' * (seconds >= 120)}"


def _group(r: dict[str, Any]) -> dict[str, Any]:
    return {"name": r["Group"] or "(none)", "jobs": r["Jobs"], "gpu_hours": hours(r["GPUHours"]),
            "spend": usd(r["SpendUSD"]), "waste": usd(r["WasteUSD"]), "per_completed": usd(r["CostPerCompletedUSD"])}


def _gap(r: dict[str, Any]) -> dict[str, Any]:
    return {"node": r.get("Label", r["Node"]), "type": r["GPUType"], "gpus": r["GPUs"],
            "idle_h": hours(r["IdleGPUHours"]),
            "idle_usd": usd(r["IdleUSD"]), "demand_h": hours(r["DemandGPUHours"]), "demand_usd": usd(r["DemandUSD"]),
            "nodemand_h": hours(r["NoDemandGPUHours"]), "nodemand_usd": usd(r["NoDemandUSD"])}


def context(d: dict[str, Any], tz: tzinfo | None = None, charts: bool = True) -> dict[str, Any]:
    """What the template shows, as text (the page and the tests read the same strings)."""
    from piqc_slurm import __version__
    from piqc_slurm.report import charts as ch

    h, ch_ = d["headline"], d["headline"]["change"]
    head = {"spend": usd(h["spend"]), "spend_delta": delta(ch_["spend"]), "waste": usd(h["waste"]),
            "waste_share": pct(h["waste"] / h["spend"] if h["spend"] else None), "waste_delta": delta(ch_["waste"]),
            "recoverable": usd(h["recoverable"]),
            "recoverable_days": f"{math.floor(h['recoverable_days'] * 10) / 10:.1f}",
            "per_completed": usd(h["per_completed"]), "per_completed_delta": delta(ch_["per_completed"]),
            "jobs": f"{h['jobs']:,}", "completed": f"{h['completed']:,}"}
    accounts = [_group(r) for r in d["accounts"]]
    users = [_group(r) for r in d["users"]]
    types = [{"name": t, "allocated": hours(v["allocated"]), "used": hours(v["used"]),
              "used_share": pct(v["used"] / v["allocated"] if v["allocated"] else None), "idle": hours(v["idle"]),
              "spend": usd(v["SpendUSD"])} for t, v in d["types"].items()]
    g = d["gaps"]
    heat = g["heat"]
    recurring = []
    for r in d["recurring"]:
        pts = [((j["end"] - d["until"]) / 86400, money(j["cost"]) or 0.0, j["regressed"]) for j in r["runs"]]
        recurring.append({"name": r["name"], "user": r["user"], "account": r["account"], "runs": len(r["runs"]),
                          "spend": usd(r["spend"]), "regressions": r["regressions"],
                          "chart": ch.runs(pts, "USD per run", f"run-{len(recurring)}") if charts else ""})
    out = {
        "window": f"{_when(d['since'], tz)} – {_when(d['until'], tz)}",
        "span": _span(d["until"] - d["since"]), "generated": _when(d["generated"], tz), "version": __version__,
        "clusters": ", ".join(d["clusters"]) or "no cluster", "h": head, "thin": d["thin_days"],
        "empty": d["empty"], "prev_spend": usd(d["previous"]["spend"]), "judged": d["judged"],
        "top": [{**f, "waste": usd(f["waste"])} for f in d["top_findings"]],
        "rest": {"count": f"{d['findings_rest']['count']:,}", "waste": usd(d["findings_rest"]["waste"])},
        "codes": [{"code": c, "count": f"{v['count']:,}", "waste": usd(v["waste"])} for c, v in d["by_code"].items()],
        "accounts": accounts, "users": users,
        "accounts_rest": {"count": d["accounts_rest"]["count"], "spend": usd(d["accounts_rest"]["SpendUSD"]),
                          "waste": usd(d["accounts_rest"]["WasteUSD"])},
        "users_rest": {"count": d["users_rest"]["count"], "spend": usd(d["users_rest"]["SpendUSD"]),
                       "waste": usd(d["users_rest"]["WasteUSD"])},
        "types": types, "gaps": [_gap(r) for r in g["nodes"]],
        "gaps_total": _gap(g["total"]) if g["total"] else None, "gaps_rest": g["rest"],
        "gaps_missing": "No idle GPU time stored for this window: every GPU was held, or piqc-slurm gaps has "
                        "not run for it (the nightly run does).",
        "gaps_notes": [], "recurring": recurring, "cov": {**d["coverage"], "unknown_types": [
            {**t, "gpu_hours": hours(t["gpu_hours"])} for t in d["coverage"]["unknown_types"]]},
        "trailing_days": d["trailing_days"],
        "watch": {"rules": [{"rule": r, "jobs": f"{v['jobs']:,}", "notices": f"{v.get('notice', 0):,}",
                             "warnings": f"{v.get('warn', 0):,}", "cancels": f"{v.get('cancel', 0):,}",
                             "dry": f"{v.get('dry-run-cancel', 0):,}"} for r, v in d["watch"]["rules"].items()],
                  "cancels": [{**c, "at": _when(c["at"], tz), "since": _when(c["since"], tz), "usd": usd(c["usd"]),
                               "saved": usd(c["saved"]) if c["saved"] is not None else "unknown"}
                              for c in d["watch"]["cancels"]],
                  "cancels_rest": d["watch"]["cancels_rest"], "saved": usd(d["watch"]["saved"])},
        "accounts_chart": "", "types_chart": "", "heat_chart": "",
    }
    for cl, (a, b) in sorted(g["covered"].items()):
        if a > d["since"] or b < d["until"]:
            out["gaps_notes"].append(f"Idle gaps of {cl} cover {_when(a, tz)} – {_when(b, tz)} only.")
    if charts and d["accounts"]:
        rows = d["accounts"]
        out["accounts_chart"] = ch.stacked_bars(
            [r["Group"] or "(none)" for r in rows],
            [("waste", [money(r["WasteUSD"]) or 0.0 for r in rows], ch.WASTE),
             ("rest of spend", [max((money(r["SpendUSD"]) or 0.0) - (money(r["WasteUSD"]) or 0.0), 0.0)
                                for r in rows], ch.SPEND)], "USD", "accounts")
    if charts and d["types"]:
        names = list(d["types"])
        out["types_chart"] = ch.grouped_bars(names, [
            ("allocated", [d["types"][t]["allocated"] for t in names], ch.SPEND),
            ("used", [d["types"][t]["used"] for t in names], ch.USED),
            ("idle (no job)", [d["types"][t]["idle"] for t in names], ch.IDLE)], "GPU-hours", "types")
    if charts and heat["nodes"]:
        fmt = "%H:00" if heat["hours"] <= 24 else "%a %H:00"
        labels = [datetime.fromtimestamp(heat["since"] + 3600 * k, tz).strftime(fmt) for k in range(heat["hours"])]
        out["heat_chart"] = ch.heatmap(heat["nodes"], labels, heat["cells"], "idle GPUs", "heat")
    return out


def render_html(d: dict[str, Any], tz: tzinfo | None = None) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("digest.html.j2").render(**context(d, tz))


def render_text(d: dict[str, Any], tz: tzinfo | None = None) -> str:
    """The headline, what to change and the per-account spend, as plain text (the mail's text part)."""
    c = context(d, tz, charts=False)
    h = c["h"]
    lines = [f"GPU batch spend {c['window']} ({c['clusters']})", "",
             f"Spend {h['spend']} ({h['spend_delta']})",
             f"Waste {h['waste']}, {h['waste_share']} of spend ({h['waste_delta']})",
             f"Recoverable per year {h['recoverable']} (on {h['recoverable_days']} days of data"
             + (", thin" if c["thin"] else "") + ")",
             f"Cost per completed job {h['per_completed']} ({h['completed']} of {h['jobs']} jobs completed)", ""]
    if c["top"]:
        lines.append("What to change:")
        for f in c["top"]:
            lines += [f"  {f['waste']:>11}  job {f['job_id']} ({f['user']}, {f['account']}) {f['code']}",
                      f"               {f['sentence']}", f"               -> {f['advice']}"]
        if c["rest"]["count"] != "0":
            lines.append(f"  and {c['rest']['count']} more findings worth {c['rest']['waste']}")
        lines.append("")
    if c["accounts"]:
        lines.append("Spend and waste per account:")
        lines += [f"  {a['name']:<24} {a['spend']:>12} spent {a['waste']:>12} wasted" for a in c["accounts"]]
        lines.append("")
    if c["gaps_total"]:
        t = c["gaps_total"]
        lines.append(f"Idle GPUs: {t['idle_h']} GPU-hours ({t['idle_usd']}), {t['demand_h']} of them while jobs "
                     f"waited ({t['demand_usd']})")
    if c["watch"]["rules"]:
        lines.append("Live watch (told while the jobs ran):")
        lines += [f"  {r['rule']:<14} {r['jobs']:>6} jobs  {r['notices']:>6} notices  {r['warnings']:>5} warnings  "
                  f"{r['cancels']:>5} cancels" for r in c["watch"]["rules"]]
        for x in c["watch"]["cancels"]:
            lines.append(f"  {'would cancel' if x['dry_run'] else 'cancelled'} job {x['job_id']} ({x['user']}) at "
                         f"{x['at']}: {x['rule']} since {x['since']}, {x['usd']} spent, saved {x['saved']}")
        lines.append("")
    lines.append(f"Coverage: {c['cov']['unsampled']} of {c['cov']['gpu_jobs']} GPU jobs without sampler data")
    return "\n".join(lines) + "\n"
