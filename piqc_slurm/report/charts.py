"""The digest's charts: matplotlib figures saved as SVG text to inline in the page.

No pyplot (no global figure state, no GUI backend): a Figure per chart, saved
with the SVG backend. Text stays text (svg.fonttype none: small, selectable)
and is never read as mathtext (a `$` in an account name is a dollar sign);
matplotlib escapes it for XML, so a job name such as `<script>` is drawn,
never run. Ids are derived from a fixed salt: the same data gives the same
bytes. Every chart is a picture of a table printed next to it: the numbers
are in the page either way (mail clients that drop SVG lose nothing).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

WASTE, SPEND, USED, IDLE, DEMAND, NODEMAND, REGRESSION = (
    "#c0392b", "#7f8c8d", "#2e86c1", "#e67e22", "#8e44ad", "#e67e22", "#c0392b")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig, salt: str) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"piqc-{salt}", "font.size": 9,
                                "font.family": "sans-serif"}):
        buf = io.StringIO()
        # no RDF metadata block (its namespace URIs are not requests, but nothing in the page should look like one)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: without the XML declaration and DOCTYPE


def _no_math(ax) -> None:
    for label in (*ax.get_xticklabels(), *ax.get_yticklabels()):
        label.set_parse_math(False)


def stacked_bars(labels: Sequence[str], parts: Sequence[tuple[str, Sequence[float], str]], xlabel: str,
                 salt: str) -> str:
    """Horizontal bars, one per label (top first), each split into `parts` (name, values, colour)."""
    fig, ax = _figure(7.0, 0.32 * max(len(labels), 2) + 0.9)
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for name, values, colour in parts:
        ax.barh(ys, values, left=left, color=colour, label=name, height=0.7)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(ys, list(labels))
    ax.set_xlabel(xlabel)
    ax.legend(loc="best", frameon=True, framealpha=0.9)
    ax.spines[["top", "right"]].set_visible(False)
    _no_math(ax)
    return _svg(fig, salt)


def grouped_bars(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]], ylabel: str,
                 salt: str) -> str:
    """Vertical bars: for each group, one bar per series side by side."""
    fig, ax = _figure(7.0, 2.8)
    n = max(len(series), 1)
    width = 0.8 / n
    for k, (name, values, colour) in enumerate(series):
        ax.bar([i + (k - (n - 1) / 2) * width for i in range(len(groups))], values, width=width, color=colour,
               label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _no_math(ax)
    return _svg(fig, salt)


def heatmap(rows: Sequence[str], hour_labels: Sequence[str], cells: Sequence[Sequence[float]], label: str,
            salt: str) -> str:
    """Rows x hours, darker for more idle GPUs (a colour bar says how many)."""
    fig, ax = _figure(7.4, 0.26 * max(len(rows), 2) + 1.3)
    mesh = ax.pcolormesh(cells, cmap="Oranges", vmin=0, edgecolors="white", linewidth=0.3)
    ax.invert_yaxis()
    ax.set_yticks([i + 0.5 for i in range(len(rows))], list(rows))
    step = max(1, -(-len(hour_labels) // 8))  # at most 8 labels: they must not overlap
    ax.set_xticks([i + 0.5 for i in range(0, len(hour_labels), step)], list(hour_labels)[::step])
    ax.tick_params(length=0)
    fig.colorbar(mesh, ax=ax, label=label, fraction=0.03, pad=0.01)
    _no_math(ax)
    return _svg(fig, salt)


def runs(points: Sequence[tuple[float, float, bool]], ylabel: str, salt: str) -> str:
    """One recurring job: cost per run over time (x: days before the window's end), regressions as red dots."""
    fig, ax = _figure(3.4, 1.7)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.plot(xs, ys, color=USED, marker="o", markersize=3, linewidth=1)
    bad = [(x, y) for x, y, r in points if r]
    if bad:
        ax.scatter([x for x, _ in bad], [y for _, y in bad], color=REGRESSION, zorder=3, s=22,
                   label="regression")
        ax.legend(frameon=False, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("days before the window's end")
    ax.set_ylim(bottom=0)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, salt)
