"""The report's sections for a reviewer, each from plain dicts to an HTML string.

The leaderboard grouped by task, our figures beside the published ones, how our protocol differs
from the study's (computed from the logged benchmark config), DeLong's paired comparisons,
calibration, subgroup and breast-level AUCs, and the variance across seeds. The analyses come
from the benchmark run's ``analysis.json``; a section whose data is missing says so in one line.
Every value is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from orchestration.results import review_plots
from orchestration.results.leaderboard import HEADER, cells, shared_notes
from orchestration.train.metrics import DETECTION_RULE

DELONG_NOTE = (
    "p-values from DeLong's test for correlated AUCs, Holm-adjusted over the family; "
    "differences with patient-clustered bootstrap 95% CIs"
)
INPUT_TEXT = {"crop": "lesion crops (GT-localised)", "whole": "whole images"}
GROUPS = {
    "lesion_type": "lesion type",
    "breast_density": "breast density",
    "assessment": "BI-RADS assessment",
}


def missing(section: str, key: str) -> str:
    """The one line a section shows when ``analysis.json`` lacks its data."""
    return (
        f'<p class="missing">No {_e(section)}: analysis.json has no "{_e(key)}" '
        "(an older run, or no classifier finished).</p>"
    )


def figure_img(fig: Figure, alt: str) -> str:
    """A figure as an embedded PNG ``<img>``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


# Leaderboard


def leaderboard_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard, a heading row per task (rows keep their order), and its notes, each
    distinct note said once with the rows it applies to."""
    head = "".join(f"<th>{_e(h)}</th>" for h in HEADER)
    body, task = [], None
    for row in rows:
        if row["task"] != task:
            task = row["task"]
            body.append(
                f'<tr class="task"><th colspan="{len(HEADER)}">{_e(task.title())}</th></tr>'
            )
        body.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells(row)) + "</tr>")
    notes = [f"<li>{_e(text)}</li>" for text in grouped_notes(rows)]
    if any(row["task"] == "detection" for row in rows):
        notes.append(f"<li>Detection: {_e(DETECTION_RULE)}.</li>")
    table = f'<table class="board"><tr>{head}</tr>{"".join(body)}</table>'
    return table + (f'<ul class="notes">{"".join(notes)}</ul>' if notes else "")


def grouped_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``<status>: <reason> — <models> (<setting>)`` once per reason (``shared_notes``: the
    note's first line), then the lines all those rows share, then each row's own lines."""
    lines = []
    for group in shared_notes(list(rows)):
        text = f"{group['head']} — {_names_by_setting(group['rows'])}"
        text += "".join(f" {line.strip()}" for line in group["common"])
        own = [f"; {r['model']}: {' '.join(x.strip() for x in x)}" for r, x in group["own"] if x]
        lines.append(text + "".join(own))
    return lines


def _names_by_setting(rows: Sequence[Mapping[str, Any]]) -> str:
    settings: dict[str, list[str]] = {}
    for row in rows:
        settings.setdefault(str(row["setting"]), []).append(str(row["model"]))
    return "; ".join(f"{', '.join(models)} ({s})" for s, models in settings.items())


def published_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The "Ours vs published" figure."""
    fig = review_plots.published_figure(rows)
    if fig is None:
        return '<p class="missing">No finished run has a test figure yet.</p>'
    return (
        "<p>Our test figure (point, 95% bootstrap CI over patients) beside the study's published "
        "figure (diamond) on the same metric. The protocols differ (next section).</p>"
        + figure_img(fig, "ours vs published")
    )


# Protocol


def comparisons_section(comparisons: Sequence[Mapping[str, Any]] | None) -> str:
    """One matrix of Holm-adjusted DeLong p-values and AUC differences per set of classifiers
    tested on the same rows."""
    if not comparisons:
        return missing("paired comparisons", "comparisons")
    return (
        "".join(_matrix(entry) for entry in comparisons)
        + f'<p class="note">{_e(DELONG_NOTE)} (shaded: Holm p &lt; 0.05).</p>'
    )


def transfer_section(transfer: Sequence[Mapping[str, Any]] | None) -> str:
    """Each architecture trained from ImageNet weights and from scratch: the AUC difference on
    the same test rows, its bootstrap CI and DeLong's p (the study's central question)."""
    if transfer is None:
        return missing("pretrained-against-scratch pairs", "transfer")
    if not transfer:
        return "<p>No architecture was trained both ways (pretrained and scratch) to the end.</p>"
    rows = "".join(
        f"<tr><td>{_e(t['pretrained'])}</td><td>{_e(t['scratch'])}</td>"
        f"<td>{_num(t.get('auc_a'))}</td><td>{_num(t.get('auc_b'))}</td>"
        f"<td>{_e(t.get('text'))}</td></tr>"
        for t in transfer
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("pretrained", "scratch", "AUC pretrained", "AUC scratch", "difference (test)")
    )
    return f'<table><tr>{head}</tr>{rows}</table><p class="note">{_e(DELONG_NOTE)}.</p>'


def _matrix(entry: Mapping[str, Any]) -> str:
    models, auc = list(entry.get("models", [])), entry.get("auc", {})
    title = (
        f"{INPUT_TEXT.get(entry.get('input'), entry.get('input', '?'))}: AUC of row - column, "
        "DeLong's test, Holm-adjusted p"
    )
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    body = []
    for a in models:
        label = f"{a} (AUC {_num(auc.get(a))})"
        row = "".join(_cell(entry.get("pairs", {}), a, b) for b in models)
        body.append(f"<tr><th>{_e(label)}</th>{row}</tr>")
    best = entry.get("vs_best", {})
    lines = "".join(f"<li>{_e(name)}: {_e(v.get('text'))}</li>" for name, v in best.items())
    shared = f" on {entry['n']} shared test cases" if entry.get("n") else ""
    caption = (
        f"<h3>{_e(title)}</h3><p>best by test AUC{_e(shared)}: {_e(entry.get('best', '-'))}</p>"
    )
    table = f'<table class="matrix"><tr><th></th>{head}</tr>{"".join(body)}</table>'
    return caption + table + (f"<ul>{lines}</ul>" if lines else "")


def _cell(pairs: Mapping[str, Any], a: str, b: str) -> str:
    if a == b:
        return '<td class="diag">—</td>'
    pair = pairs.get(" vs ".join(sorted((a, b))))
    if pair is None:
        return "<td>-</td>"
    sign = 1 if a == sorted((a, b))[0] else -1  # ``difference`` is first name - second
    ends = [sign * v for v in (pair.get("ci_low"), pair.get("ci_high")) if _finite(v)]
    ci = f" [{_num(min(ends), '+')}, {_num(max(ends), '+')}]" if len(ends) == 2 else ""
    diff = sign * pair["difference"] if _finite(pair.get("difference")) else None
    p = pair.get("p_holm")
    strong = ' class="sig"' if _finite(p) and p < 0.05 else ""
    return f"<td{strong}>p {_e(p_text(p))}<br>Δ {_e(_num(diff, '+'))}{_e(ci)}</td>"


def p_text(p: Any) -> str:
    """A p-value to 3 decimals, ``<0.001`` below that, ``-`` when missing."""
    if not _finite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# Calibration, subgroups, seeds


def calibration_section(calibration: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Brier score and ECE per classifier, and their reliability diagram."""
    if not calibration:
        return missing("calibration", "calibration")
    body = "".join(
        f"<tr><th>{_e(name)}</th><td>{_num(c.get('brier'))}</td><td>{_num(c.get('ece'))}</td></tr>"
        for name, c in calibration.items()
    )
    table = f"<table><tr><th>classifier</th><th>Brier</th><th>ECE (10 equal-width bins)</th></tr>{body}</table>"
    fig = review_plots.reliability_figure(calibration)
    return table + figure_img(fig, "reliability diagram")


def subgroups_section(
    subgroups: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    breast: Mapping[str, Mapping[str, Any]] | None,
) -> str:
    """Test AUC per subgroup (one table per grouping: models by levels), then per breast."""
    parts = [missing("subgroup AUCs", "subgroups")] if not subgroups else []
    groups: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {}
    for name, entries in (subgroups or {}).items():
        for e in entries:
            groups.setdefault(e["group"], {}).setdefault(name, {})[str(e["level"])] = e
    for group, by_model in groups.items():
        levels = list(dict.fromkeys(lv for cells_ in by_model.values() for lv in cells_))
        head = "".join(f"<th>{_e(lv)}</th>" for lv in levels)
        body = "".join(
            f"<tr><th>{_e(name)}</th>"
            + "".join(f"<td>{_e(_auc_cell(found.get(lv)))}</td>" for lv in levels)
            + "</tr>"
            for name, found in by_model.items()
        )
        title = f"<h3>{_e(GROUPS.get(group, group.replace('_', ' ')))}: AUC [95% CI] (n)</h3>"
        parts.append(f"{title}<table><tr><th>classifier</th>{head}</tr>{body}</table>")
    parts.append(_breast_table(breast))
    return "".join(parts)


def _breast_table(breast: Mapping[str, Mapping[str, Any]] | None) -> str:
    if not breast:
        return missing("breast-level AUCs", "breast")
    body = "".join(
        f"<tr><th>{_e(name)}</th><td>{_e(_auc_cell(b, with_n=False))}</td>"
        f"<td>{_e(b.get('n', '-'))}</td><td>{_e(b.get('n_malignant', '-'))}</td></tr>"
        for name, b in breast.items()
    )
    return (
        "<h3>Breast level (CC and MLO of one breast combined): AUC [95% CI]</h3>"
        "<table><tr><th>classifier</th><th>AUC</th><th>breasts</th><th>malignant</th></tr>"
        f"{body}</table>"
    )


def _auc_cell(entry: Mapping[str, Any] | None, with_n: bool = True) -> str:
    if entry is None:
        return "-"
    n = f" ({entry.get('n', '-')})" if with_n else ""
    if not _finite(entry.get("auc")):
        return "-" + n
    ci = ""
    if _finite(entry.get("ci_low")) and _finite(entry.get("ci_high")):
        ci = f" [{_num(entry['ci_low'])}, {_num(entry['ci_high'])}]"
    return f"{_num(entry['auc'])}{ci}{n}"


def seeds_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Mean ± sd and per-seed test figures of rows run with several seeds ('' when none)."""
    several = [r for r in rows if review_plots.seeds_of(r) > 1]
    if not several:
        return ""
    body = "".join(
        f"<tr><td>{_e(r['model'])}</td><td>{_e(r['setting'])}</td><td>{_e(r['metric'])}</td>"
        f"<td>{_num(r.get('test'))} ± {_num(r.get('test_sd'))} ({review_plots.seeds_of(r)})</td>"
        f"<td>{_e(r.get('test_seeds') or '-')}</td></tr>"
        for r in several
    )
    return (
        "<h2>Variance across seeds</h2><table><tr><th>model</th><th>setting</th><th>metric</th>"
        f"<th>mean ± sd (seeds)</th><th>per seed</th></tr>{body}</table>"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _num(value: Any, sign: str = "") -> str:
    return f"{value:{sign}.3f}" if _finite(value) else "-"


def _e(value: Any) -> str:
    return html.escape(str(value))
