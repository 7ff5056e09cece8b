"""The benchmark's leaderboard: one row per architecture x setting, beside the published figures.

Rows are read from the sweeps' parent runs in MLflow (their test metrics, best parameters, usage
and skip reasons), so ``benchmark`` and ``report`` show the same table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from orchestration.results import tracking
from orchestration.train.metrics import DETECTION_RULE
from orchestration.train.operating_point import THRESHOLD_TEXT
from search_spaces.benchmarks import published

PRIMARY = {"classification": "accuracy", "segmentation": "dice", "detection": "map50"}
EXTRA = {
    "classification": (
        "auc",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "accuracy_at_0_5",
        "threshold",
        "prevalence",
        "brier",
        "ece",
    ),
    "segmentation": ("iou", "pixel_accuracy"),
    "detection": ("froc_sens_1fp", "map50_malignancy"),
}
CI_KEYS = ("auc", "sensitivity", "specificity", "balanced_accuracy")  # test_*_ci_low / _high
PARAMS = ("lr", "unfreeze", "batch_size", "weight_decay")
INPUTS = {"crop": "lesion crop, GT-localised", "whole": "whole image"}
STUDY_PROTOCOL = "whole mammograms at 224 px, augmented before the split, test accuracy"
STUDY_PROTOCOLS = {  # what the study's published row of each task measured
    "classification": STUDY_PROTOCOL,
    "segmentation": "tumour crops at 512 px, augmented before the split, test Dice",
    "detection": "no figure published",
}
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
    "test_sd",
    "seeds",
    "test_seeds",
    "vs_best",
    "vs_scratch",
    "input",
    "protocol",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "threshold",
    "sensitivity",
    "sensitivity_ci_low",
    "sensitivity_ci_high",
    "specificity",
    "specificity_ci_low",
    "specificity_ci_high",
    "balanced_accuracy",
    "balanced_accuracy_ci_low",
    "balanced_accuracy_ci_high",
    "accuracy_at_0_5",
    "prevalence",
    "brier",
    "ece",
    "breast_auc",
    "breast_auc_ci_low",
    "breast_auc_ci_high",
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
    figures = published(model, "scratch" if setting == "study_frozen" else setting)
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
        "input": tags.get(tracking.INPUT_TAG) if task == "classification" else None,
        "protocol": protocol(task, tags, metrics, bool(figures), setting),
        "vs_best": tags.get(tracking.VS_BEST_TAG),
        "vs_scratch": tags.get(tracking.VS_SCRATCH_TAG),
        "gpu_hours": metrics.get("gpu_hours"),
        "trial_hours": metrics.get("trial_hours"),
        "trials": trials,
        "note": tags.get(tracking.SKIP_TAG) or _error(run) or _members(tags),
        "best_params": ", ".join(
            f"{k}={params[f'best.{k}']}" for k in PARAMS if f"best.{k}" in params
        ),
        "sweep_run_id": run.info.run_id,
    }
    for key in EXTRA.get(task, ()):
        row[key] = metrics.get(f"test_{key}")
    for key in CI_KEYS if task == "classification" else ():
        row |= {f"{key}_ci_{e}": metrics.get(f"test_{key}_ci_{e}") for e in ("low", "high")}
    row |= {k: metrics.get(f"test_{k}") for k in BREAST_KEYS if task == "classification"}
    row |= seed_columns(metric, metrics, tags)
    return {column: row.get(column) for column in COLUMNS}


BREAST_KEYS = ("breast_auc", "breast_auc_ci_low", "breast_auc_ci_high")


def seed_columns(metric: str, metrics: dict, tags: dict) -> dict[str, Any]:
    """With seed repeats: ``test`` is the mean over the seeds, ``test_sd`` their sample sd,
    ``test_seeds`` each seed's figure; the CI columns stay those of the sweep's best trial."""
    seeds = int(metrics.get("seeds", 1))
    if seeds < 2 or f"seed_mean_{metric}" not in metrics:
        return {"seeds": seeds if "seeds" in metrics else None}
    values = json.loads(tags.get(tracking.SEEDS_TAG, "{}")).get(f"seed_values_{metric}", {})
    return {
        "test": metrics[f"seed_mean_{metric}"],
        "test_sd": metrics[f"seed_sd_{metric}"],
        "seeds": seeds,
        "test_seeds": ", ".join(f"seed {k}: {v:.4f}" for k, v in values.items()),
    }


def _members(tags: dict) -> str:
    members = tags.get(tracking.MEMBERS_TAG)
    return f"averages the probabilities of {members}" if members else ""


def protocol(task: str, tags: dict, metrics: dict, compared: bool, setting: str) -> str:
    """What a row measured: input, splits, test prevalence, threshold rule, and the published
    row it stands beside (the study's protocol differs: see the report)."""
    parts = []
    if task == "classification":
        parts.append(f"input: {INPUTS.get(tags.get(tracking.INPUT_TAG, 'crop'), '?')}")
    parts.append("split: official test (model chosen on a patient-level val split)")
    prevalence = metrics.get("test_prevalence")
    if prevalence is not None:
        majority = max(prevalence, 1 - prevalence)
        parts.append(f"test {prevalence:.0%} malignant (majority-class rate {majority:.0%})")
    rule = tags.get(tracking.THRESHOLD_TAG)
    if rule:
        parts.append(f"threshold: {THRESHOLD_TEXT.get(rule, rule)}")
    study = "no published row"
    if compared:
        study = f"the study's {setting} row ({STUDY_PROTOCOLS.get(task, '?')})"
    return "; ".join([*parts, f"compared with: {study}"])


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


TASK_ORDER = ("classification", "segmentation", "detection")
SETTING_ORDER = ("scratch", "pretrained")


def order_rows(rows: list[dict[str, Any]], order: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """Rows grouped by task, then architecture (in the config's ``order`` of (model, setting,
    input); unknown ones by name; the ensemble last), scratch beside pretrained, then input."""
    first: dict[str, int] = {}
    for i, (model, *_) in enumerate(order):
        first.setdefault(model, i)

    def rank(r: dict[str, Any]) -> tuple:
        task = TASK_ORDER.index(r["task"]) if r["task"] in TASK_ORDER else len(TASK_ORDER)
        model = len(first) + (r["model"] == "ensemble")
        setting = SETTING_ORDER.index(r["setting"]) if r["setting"] in SETTING_ORDER else 2
        return (task, first.get(r["model"], model), r["model"], r["input"] == "whole", setting)

    return sorted(rows, key=rank)


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
    "Published (study's test)",
    "Ours (official test, 95% patient CI)",
    "AUC (test, 95% CI)",
    "Sens / Spec (test, at the val threshold)",
    "vs best AUC (DeLong, Holm)",
    "GPU-h",
    "Trial-h",
    "Best hyper-parameters",
    "Protocol",
)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table, with skip and failure notes below it (a note many
    rows share, such as one missing-weights reason, said once with the rows it applies to)."""
    lines = [_md_row(HEADER), _md_row(["---"] * len(HEADER))]
    for row in rows:
        lines.append(_md_row(cells(row)))
    said: set[str] = set()
    notes = [line for group in shared_notes(rows) for line in _note_lines(group, said)]
    text = "\n".join(lines) + "\n"
    notes += [
        f"- **{row['model']}{' (whole image)' if row['input'] == 'whole' else ''}, pretrained "
        f"against scratch** (the study's question, same test rows): {row['vs_scratch']}."
        for row in rows
        if row.get("vs_scratch")
    ]
    if any(row["task"] == "detection" for row in rows):
        notes.append(f"- **Detection**: {DETECTION_RULE}.")
    if notes:
        text += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return text


def shared_notes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows' notes grouped by their status and first line (the reason: eight pretrained
    rows skipped for want of weights share one): ``{"head", "rows", "common", "own"}``, where
    ``common`` are the further lines every row of the group has and ``own`` each row's other
    lines (``[(row, lines)]``, e.g. the command that makes its weights file)."""
    groups: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
    for row in rows:
        if row["note"]:
            first, *rest = str(row["note"]).splitlines()
            groups.setdefault(f"{row['status']}: {first}", []).append((row, rest))
    out = []
    for head, members in groups.items():
        common = [line for line in members[0][1] if all(line in rest for _, rest in members)]
        own = [(row, [line for line in rest if line not in common]) for row, rest in members]
        rows_of = [row for row, _ in members]
        out.append({"head": head, "rows": rows_of, "common": common, "own": own})
    return out


def _note_lines(group: dict[str, Any], said: set[str]) -> list[str]:
    """A group's note; a common line an earlier note has ``said`` (the one way to get every
    weights file) is not repeated."""
    names = ", ".join(f"**{r['model']} ({r['setting']})**" for r in group["rows"])
    lines = [f"- {names} {group['head']}"]
    lines += [f"  {line.strip()}" for line in group["common"] if line.strip() not in said]
    said.update(line.strip() for line in group["common"])
    lines += [
        f"  - {row['model']}: {' '.join(line.strip() for line in own)}"
        for row, own in group["own"]
        if own
    ]
    return lines


def cells(row: dict[str, Any]) -> list[str]:
    """A row's display cells, in ``HEADER`` order."""
    metric = row["metric"]
    published_text = _fmt(row["published"], metric)
    if row["published_other"]:
        published_text += f" ({row['published_other']})" if row["published"] is not None else ""
    ours = _ours(row, metric)
    auc = _fmt(row["auc"], "auc")
    if row["auc"] is not None and row["auc_ci_low"] is not None:
        auc += f" [{_fmt(row['auc_ci_low'], 'auc')}, {_fmt(row['auc_ci_high'], 'auc')}]"
    sens_spec = (
        f"{_fmt(row['sensitivity'], 'x')} / {_fmt(row['specificity'], 'x')}"
        f" at {_fmt(row['threshold'], 'x')}"
        if row["sensitivity"] is not None
        else "-"
    )
    return [
        row["model"],
        row["task"],
        row["setting"] + (", whole image" if row.get("input") == "whole" else ""),
        published_text,
        ours,
        auc,
        sens_spec,
        row["vs_best"] or "-",
        _hours(row["gpu_hours"]),
        _hours(row["trial_hours"]),
        row["best_params"] or "-",
        row["protocol"] or "-",
    ]


def _ours(row: dict[str, Any], metric: str) -> str:
    """Our figure: the test metric (the mean over seeds, with their sd) and its CI; an
    accuracy below the majority-class rate says so."""
    if row["status"] != "done":
        return row["status"]
    ours = f"{metric} {_fmt(row['test'], metric)}"
    if row.get("test_sd") is not None:
        ours += f" ± {_fmt(row['test_sd'], metric)} (mean ± sd of {row['seeds']} seeds)"
    if row["test_ci_low"] is not None:
        seeds = " of the best trial" if row.get("test_sd") is not None else ""
        ours += f" [{_fmt(row['test_ci_low'], metric)}, {_fmt(row['test_ci_high'], metric)}]{seeds}"
    if metric == "accuracy" and _below_majority(row):
        majority = max(row["prevalence"], 1 - row["prevalence"])
        ours += f" (below the majority-class rate {_fmt(majority, metric)})"
    if row.get("froc_sens_1fp") is not None:
        ours += f"; FROC sensitivity {_fmt(row['froc_sens_1fp'], metric)} at 1 FP/image"
    return ours


def _below_majority(row: dict[str, Any]) -> bool:
    test, prevalence = row.get("test"), row.get("prevalence")
    return test is not None and prevalence is not None and test < max(prevalence, 1 - prevalence)


def _fmt(value: Any, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}%" if metric in ("accuracy", "pixel_accuracy") else f"{value:.3f}"


def _hours(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _md_row(cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def leaderboard(
    client, exp_id: str, top_run: str | None, order: list[tuple[str, ...]] | None = None
) -> list[dict[str, Any]]:
    """Leaderboard rows of a benchmark run (or of every sweep of the experiment without one),
    read from the sweeps' and ensembles' runs, grouped as ``order_rows`` says."""
    parent = {tracking.PARENT_TAG: top_run} if top_run else {}
    sweeps = [
        run
        for kind in ("sweep", "ensemble")
        for run in tracking.find_runs(client, exp_id, {tracking.KIND_TAG: kind} | parent)
    ]
    rows = [leaderboard_row(run, _trials(client, exp_id, run)) for run in sweeps]
    return order_rows(rows, order or [])


def _trials(client, exp_id: str, sweep_run) -> int:
    return len(tracking.find_runs(client, exp_id, {tracking.PARENT_TAG: sweep_run.info.run_id}))
