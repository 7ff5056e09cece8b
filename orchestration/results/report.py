"""``mammobench report``: one self-contained HTML file from the MLflow store.

The leaderboard grouped by task, our figures beside the published ones, how our protocol differs
from the study's, and the benchmark run's analyses (``analysis.json``: DeLong's paired comparisons,
calibration, subgroup and breast-level AUCs); then each sweep's learning curves and its best
trial's validation plots. Images are embedded, so anyone can open it without a server.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestration.results import report_sections as sections
from orchestration.results import tracking
from orchestration.results.leaderboard import leaderboard
from orchestration.results.report_protocol import protocol_section

SWEEP_PLOTS = ("plots/learning_curves.png", "plots/trials_comparison.png")
TRIAL_PLOTS = (
    "plots/roc_curve.png",
    "plots/confusion_matrix.png",
    "plots/mask_overlays.png",
    "plots/detections.png",
)
CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top;text-align:left}
tr.task th{background:#e8eef6;font-size:14px}
table.matrix td{text-align:center;white-space:nowrap}td.diag{color:#999}td.sig{background:#fde8d8}
table.protocol td{max-width:560px}p.missing{color:#777;font-style:italic}
img{max-width:480px;margin:4px}img[alt="ours vs published"],img[alt="reliability diagram"]{max-width:800px}"""


def find_experiment(client, name: str | None):
    """The named experiment, or the newest benchmark experiment (else the newest of any)."""
    if name:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise ValueError(f"no MLflow experiment named {name!r} in {client.tracking_uri}")
        return found
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    if not experiments:
        raise ValueError(
            f"no mammobench experiment in {client.tracking_uri}: run a benchmark first"
        )
    benchmarks = [e for e in experiments if e.name.startswith("benchmark-")]
    return max(benchmarks or experiments, key=lambda e: e.creation_time or 0)


def write_report(
    client, experiment: str | None, out: Path | None, home: Path, run_id: str | None = None
) -> Path:
    """Write ``report.html`` for a benchmark run (default: the experiment's newest; without
    benchmark runs, every sweep of the experiment)."""
    exp = find_experiment(client, experiment)
    tops = tracking.find_runs(client, exp.experiment_id, {tracking.KIND_TAG: "benchmark"})
    top = next((t for t in tops if t.info.run_id == run_id), None) if run_id else None
    top = top or (tops[0] if tops else None)
    title = top.data.tags[tracking.BENCH_TAG] if top else exp.name
    folder = out or home / ("benchmarks" if top else "reports") / title
    folder.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(client, exp.experiment_id, top.info.run_id if top else None)
    with tempfile.TemporaryDirectory(prefix="mammobench-report-") as tmp:
        analysis = _analysis(client, top.info.run_id, Path(tmp)) if top else {}
        sweeps = [_sweep_section(client, exp.experiment_id, row, Path(tmp)) for row in rows]
    page = _page(title, exp.name, review(rows, analysis) + "".join(sweeps), client.tracking_uri)
    path = folder / "report.html"
    path.write_text(page)
    return path


def _analysis(client, run_id: str, tmp: Path) -> dict[str, Any]:
    """The benchmark run's ``analysis.json`` ({} when it has none: an older run)."""
    local = tracking.fetch_artifact(client, run_id, "analysis.json", tmp / "analysis")
    return json.loads(local.read_text()) if local is not None else {}


def review(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    """The sections a reviewer reads first, from leaderboard rows and ``analysis.json``."""
    return "".join(
        [
            "<h2>Leaderboard</h2>",
            sections.leaderboard_section(rows),
            "<h2>Ours vs published</h2>",
            sections.published_section(rows),
            "<h2>How our protocol differs from the study's</h2>",
            protocol_section(analysis.get("protocol")),
            "<h2>Pretrained against scratch</h2>",
            sections.transfer_section(analysis.get("transfer")),
            "<h2>Paired comparisons (DeLong's test)</h2>",
            sections.comparisons_section(analysis.get("comparisons")),
            "<h2>Calibration</h2>",
            sections.calibration_section(analysis.get("calibration")),
            "<h2>Subgroups</h2>",
            sections.subgroups_section(analysis.get("subgroups"), analysis.get("breast")),
            sections.seeds_section(rows),
            "<h2>Sweeps</h2>",
        ]
    )


def _sweep_section(client, exp_id: str, row: dict[str, Any], tmp: Path) -> str:
    heading = (
        f"<h3>{_e(row['model'])} &middot; {_e(row['task'])} &middot; {_e(row['setting'])}</h3>"
    )
    if row["status"] != "done":
        return f"{heading}<p>{_e(row['status'])}: {_e(row['note'] or '')}</p>"
    run_id = row["sweep_run_id"]
    images = [_image(client, run_id, path, tmp) for path in SWEEP_PLOTS]
    best = client.get_run(run_id).data.tags.get(tracking.BEST_TAG)
    trials = tracking.find_runs(
        client, exp_id, {tracking.PARENT_TAG: run_id, tracking.TRIAL_TAG: best or "-"}
    )
    if trials:
        images += [_image(client, trials[0].info.run_id, path, tmp) for path in TRIAL_PLOTS]
        heading += f"<p>best trial: {_e(trials[0].info.run_name)} (validation plots)</p>"
    return heading + "".join(i for i in images if i)


def _image(client, run_id: str, path: str, tmp: Path) -> str:
    local = tracking.fetch_artifact(client, run_id, path, tmp / run_id)
    if local is None:
        return ""
    data = base64.b64encode(local.read_bytes()).decode()
    return f'<img alt="{_e(path)}" src="data:image/png;base64,{data}">'


def _page(title: str, experiment: str, body: str, store: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mammobench report: {_e(title)}</title>
<style>{CSS}</style>
</head><body>
<h1>mammobench: {_e(title)}</h1>
<p>MLflow experiment <code>{_e(experiment)}</code> in <code>{_e(store)}</code>;
written {time.strftime("%Y-%m-%d %H:%M")}. Published figures are the study's test results;
ours are the best trial (by validation metric) tested once, with 95% bootstrap CIs over patients.</p>
{body}
</body></html>
"""


def _e(value: Any) -> str:
    return html.escape(str(value))
