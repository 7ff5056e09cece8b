"""Figures for a reviewer of the report: our test figures beside the study's, and calibration.

Built on matplotlib's object API (``Figure``), as ``plots``; the report embeds them as PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

OURS, PUBLISHED = "tab:blue", "tab:red"


def row_label(row: Mapping[str, Any]) -> str:
    """``model · setting``, with `` · whole`` for a classifier fed whole images."""
    label = f"{row['model']} · {row['setting']}"
    if str(row.get("protocol") or "").startswith("input: whole image"):
        label += " · whole"
    return label


def seeds_of(row: Mapping[str, Any]) -> int:
    """How many seeds a row's test figure is the mean of (1 when not recorded)."""
    value = row.get("seeds")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1
    return int(float(value))


def published_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Ours (test, 95% CI) vs the study's published figure: one panel per metric, one line per
    finished row; None when no row has a test figure."""
    done = [r for r in rows if r["status"] == "done" and _number(r.get("test"))]
    if not done:
        return None
    metrics = list(dict.fromkeys(r["metric"] for r in done))
    heights = [sum(r["metric"] == m for r in done) + 1.6 for m in metrics]
    fig = Figure(figsize=(8, 0.36 * sum(heights) + 0.5), dpi=100)
    axes = fig.subplots(len(metrics), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        _metric_panel(ax, [r for r in done if r["metric"] == metric], metric)
    legend = {}
    for ax in axes[:, 0]:
        legend |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def _metric_panel(ax: Any, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        test = float(row["test"])
        low, high = row.get("test_ci_low"), row.get("test_ci_high")
        if _number(low) and _number(high):  # with seeds, the mean may lie outside seed 0's CI
            ax.errorbar(
                (low + high) / 2, yi, xerr=(high - low) / 2, fmt="none", color=OURS, capsize=3
            )
        ax.plot(test, yi, "o", color=OURS, ms=5, label="ours (95% CI)")
        if _number(row.get("published")):
            ax.plot(
                row["published"],
                yi,
                "D",
                mfc="none",
                mec=PUBLISHED,
                ms=7,
                mew=1.5,
                label="published (study)",
            )
        if seeds_of(row) > 1 and _number(row.get("test_sd")):
            right = max(v for v in (test, high, row.get("published")) if _number(v))
            text = f"± {row['test_sd']:.3f} ({seeds_of(row)} seeds)"
            ax.annotate(
                text,
                (right, yi),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color=OURS,
            )
    ax.set_yticks(y, [row_label(r) for r in rows], fontsize=8)
    ax.set(xlim=(0, 1), ylim=(-0.7, len(rows) - 0.3), xlabel=f"{metric} (official test split)")
    ax.grid(axis="x", alpha=0.3)


def reliability_figure(calibration: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Reliability diagram (mean score vs fraction malignant per bin, one line per model) above
    the number of test cases in each bin."""
    fig = Figure(figsize=(6, 6.5), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    top.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    names = list(calibration)
    width = 0.1 / max(len(names), 1)
    for i, name in enumerate(names):
        bins = [b for b in calibration[name].get("bins", []) if b.get("count")]
        kept = [
            b for b in bins if _number(b.get("mean_score")) and _number(b.get("fraction_positive"))
        ]
        colour = f"C{i % 10}"
        top.plot(
            [b["mean_score"] for b in kept],
            [b["fraction_positive"] for b in kept],
            marker="o",
            ms=4,
            color=colour,
            label=name,
        )
        lefts = [b["low"] + i * width for b in bins]
        bottom.bar(lefts, [b["count"] for b in bins], width=width, align="edge", color=colour)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction malignant", title="reliability (test)")
    top.legend(fontsize=7, loc="upper left")
    bottom.set(xlabel="predicted probability of malignancy (bin)", ylabel="cases per bin")
    fig.tight_layout()
    return fig


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)
