"""The benchmark's leaderboard: one row per architecture x setting, beside the published figures.

Rows are read from the sweeps' parent runs in MLflow (their test metrics, best parameters, usage
and skip reasons), so ``benchmark`` and ``report`` show the same table.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from orchestration.results import tracking
from orchestration.train.metrics import DETECTION_RULE
from search_spaces.benchmarks import published

PRIMARY = {"classification": "accuracy", "segmentation": "dice", "detection": "map50"}
EXTRA = {
    "classification": ("auc", "sensitivity", "specificity", "balanced_accuracy"),
    "segmentation": ("iou", "pixel_accuracy"),
    "detection": ("froc_sens_1fp", "map50_malignancy"),
}
PARAMS = ("lr", "unfreeze", "batch_size", "weight_decay")
COLUMNS = [
    "model",
    "task",
    "setting",
    "status",
    "metric",
    "published",
    "test",
    "test_ci_low",
    "test_ci_high",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "iou",
    "pixel_accuracy",
    "froc_sens_1fp",
    "map50_malignancy",
    "published_other",
    "gpu_hours",
    "trial_hours",
    "trials",
    "best_params",
    "note",
    "sweep_run_id",
]


def leaderboard_row(run: Any, trials: int) -> dict[str, Any]:
    """One row from a sweep's parent run (an ``mlflow.entities.Run``)."""
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    model, task = tags.get(tracking.MODEL_TAG, "?"), tags.get(tracking.TASK_TAG, "?")
    best_pretrained = {"True": "pretrained", "False": "scratch"}.get(params.get("best.pretrained"))
    setting = tags.get(tracking.SETTING_TAG) or best_pretrained or "-"
    metric = PRIMARY.get(task, "")
    figures = published(model, setting)
    row: dict[str, Any] = {
        "model": model,
        "task": task,
        "setting": setting,
        "metric": metric,
        "status": _status(run),
        "published": figures.get(metric),
        "published_other": "; ".join(f"{k} {v:.4g}" for k, v in figures.items() if k != metric),
        "test": metrics.get(f"test_{metric}"),
        "test_ci_low": metrics.get(f"test_{metric}_ci_low"),
        "test_ci_high": metrics.get(f"test_{metric}_ci_high"),
        "auc_ci_low": metrics.get("test_auc_ci_low"),
        "auc_ci_high": metrics.get("test_auc_ci_high"),
        "gpu_hours": metrics.get("gpu_hours"),
        "trial_hours": metrics.get("trial_hours"),
        "trials": trials,
        "note": tags.get(tracking.SKIP_TAG) or _error(run),
        "best_params": ", ".join(
            f"{k}={params[f'best.{k}']}" for k in PARAMS if f"best.{k}" in params
        ),
        "sweep_run_id": run.info.run_id,
    }
    for key in EXTRA.get(task, ()):
        row[key] = metrics.get(f"test_{key}")
    return {column: row.get(column) for column in COLUMNS}


def _error(run: Any) -> str:
    if run.info.status == "FAILED":
        return run.data.tags.get(tracking.ERROR_TAG) or "no trial produced a checkpoint"
    return ""


def _status(run: Any) -> str:
    if tracking.SKIP_TAG in run.data.tags:
        return "skipped"
    return {"FINISHED": "done", "FAILED": "failed", "RUNNING": "running"}.get(
        run.info.status, run.info.status.lower()
    )


def order_rows(rows: list[dict[str, Any]], order: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows in the benchmark config's order (unknown ones last, by name)."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(
        rows,
        key=lambda r: (rank.get((r["model"], r["setting"]), len(rank)), r["model"], r["setting"]),
    )


def write_leaderboard(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """``leaderboard.csv`` and ``leaderboard.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "leaderboard.csv", folder / "leaderboard.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    md_path.write_text(markdown(rows))
    return [csv_path, md_path]


HEADER = (
    "Architecture",
    "Task",
    "Setting",
    "Published (test)",
    "Ours (test, 95% CI)",
    "AUC",
    "Sens / Spec",
    "GPU-h",
    "Trial-h",
    "Best hyper-parameters",
)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table, with skip and failure notes below it."""
    lines = [_md_row(HEADER), _md_row(["---"] * len(HEADER))]
    notes = []
    for row in rows:
        lines.append(_md_row(cells(row)))
        if row["note"]:
            notes.append(f"- **{row['model']} ({row['setting']})** {row['status']}: {row['note']}")
    text = "\n".join(lines) + "\n"
    if any(row["task"] == "detection" for row in rows):
        notes.append(f"- **Detection**: {DETECTION_RULE}.")
    if notes:
        text += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return text


def cells(row: dict[str, Any]) -> list[str]:
    """A row's display cells, in ``HEADER`` order."""
    metric = row["metric"]
    published_text = _fmt(row["published"], metric)
    if row["published_other"]:
        published_text += f" ({row['published_other']})" if row["published"] is not None else ""
    ours = row["status"] if row["status"] != "done" else f"{metric} {_fmt(row['test'], metric)}"
    if row["status"] == "done" and row["test_ci_low"] is not None:
        ours += f" [{_fmt(row['test_ci_low'], metric)}, {_fmt(row['test_ci_high'], metric)}]"
    auc = _fmt(row["auc"], "auc")
    sens_spec = (
        f"{_fmt(row['sensitivity'], 'x')} / {_fmt(row['specificity'], 'x')}"
        if row["sensitivity"] is not None
        else "-"
    )
    return [
        row["model"],
        row["task"],
        row["setting"],
        published_text,
        ours,
        auc,
        sens_spec,
        _hours(row["gpu_hours"]),
        _hours(row["trial_hours"]),
        row["best_params"] or "-",
    ]


def _fmt(value: Any, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}%" if metric in ("accuracy", "pixel_accuracy") else f"{value:.3f}"


def _hours(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _md_row(cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def leaderboard(
    client, exp_id: str, top_run: str | None, order: list[tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Leaderboard rows of a benchmark run (or of every sweep of the experiment without one),
    read from the sweeps' runs, in ``order`` of (model, setting)."""
    where = {tracking.KIND_TAG: "sweep"} | ({tracking.PARENT_TAG: top_run} if top_run else {})
    sweeps = tracking.find_runs(client, exp_id, where)
    rows = [leaderboard_row(run, _trials(client, exp_id, run)) for run in sweeps]
    return order_rows(rows, order or [])


def _trials(client, exp_id: str, sweep_run) -> int:
    return len(tracking.find_runs(client, exp_id, {tracking.PARENT_TAG: sweep_run.info.run_id}))
