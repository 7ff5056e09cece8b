"""What a reviewer asks of a benchmark's classifiers, answered from their logged predictions.

Every classifier sweep logs its best model's validation and test predictions
(``predictions/<split>.csv``). Once the sweeps are done, the classifiers evaluated on the same
test rows (the lesion-crop rows, and apart from them the whole-image rows) are compared pair by
pair (DeLong's test, Holm-adjusted, and the patient-clustered bootstrap difference); the top-k of
them by *validation* AUC are averaged into an ``ensemble`` row (its threshold chosen on validation
too); and each is described by its calibration, its AUC by subgroup and its breast-level AUC.
The figures go to MLflow: tags and metrics on the sweep runs, an ``ensemble`` run, and
``analysis.json`` on the benchmark run, which the report reads.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestration.results import compare, tracking
from orchestration.train.metrics import safe_auc
from orchestration.train.operating_point import calibration, calibration_bins

ANALYSIS_FILE = "analysis.json"


@dataclass
class Classifier:
    """One done classifier sweep and its best model's predictions."""

    name: str  # model-setting[-whole]
    run_id: str
    input: str
    val: Any  # DataFrame, or None
    test: Any


@dataclass
class Review:
    """What ``analyse`` found; ``as_dict`` is ``analysis.json``."""

    comparisons: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    subgroups: dict[str, Any] = field(default_factory=dict)
    breast: dict[str, Any] = field(default_factory=dict)
    transfer: list[dict[str, Any]] = field(default_factory=list)  # pretrained vs scratch
    protocol: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def analyse(
    client,
    exp_id: str,
    top: tracking.SweepRun,
    bench: str,
    options: dict[str, Any],
    protocol: dict[str, Any],
) -> Review:
    """Compare, ensemble and describe the done classifiers of benchmark run ``top``.

    Args:
        options: ``top_k`` (ensemble members; 0 or 1: no ensemble), ``rule`` (threshold rule),
            ``n_boot`` (bootstrap replicates).
        protocol: The benchmark config and facts for the report's protocol section.
    """
    review = Review(protocol=protocol)
    with tempfile.TemporaryDirectory(prefix="mammobench-review-") as tmp:
        found = _classifiers(client, exp_id, top.run_id, Path(tmp))
    for group in sorted({c.input for c in found}):
        members = [c for c in found if c.input == group]
        ensemble = _ensemble(client, exp_id, top, bench, members, group, options)
        _compare(client, [*members, *ensemble], group, options["n_boot"], review)
    return review


def _classifiers(client, exp_id: str, top_run: str, tmp: Path) -> list[Classifier]:
    where = {tracking.KIND_TAG: "sweep", tracking.PARENT_TAG: top_run}
    out = []
    for run in tracking.find_runs(client, exp_id, where, status="FINISHED"):
        tags = run.data.tags
        if tags.get(tracking.TASK_TAG) != "classification" or tracking.SKIP_TAG in tags:
            continue
        test = tracking.read_predictions(client, run.info.run_id, "test", tmp)
        if test is None:
            continue
        group = tags.get(tracking.INPUT_TAG, "crop")
        name = f"{tags[tracking.MODEL_TAG]}-{tags.get(tracking.SETTING_TAG, '-')}"
        name += "-whole" if group == "whole" else ""
        val = tracking.read_predictions(client, run.info.run_id, "val", tmp)
        out.append(Classifier(name, run.info.run_id, group, val, test))
    return sorted(out, key=lambda c: c.name)


def _ensemble(
    client,
    exp_id: str,
    top: tracking.SweepRun,
    bench: str,
    members: list[Classifier],
    group: str,
    options: dict[str, Any],
) -> list[Classifier]:
    """The ensemble of the top-k members by validation AUC, logged as its own run."""
    usable = [c for c in members if c.val is not None]
    if options["top_k"] < 2 or len(usable) < 2:
        return []
    val_aucs = {c.name: safe_auc(c.val["positive"], c.val["score"]) for c in usable}
    chosen = compare.top_k(val_aucs, options["top_k"])
    by_name = {c.name: c for c in usable}
    metrics, test = compare.ensemble(
        {n: by_name[n].val for n in chosen},
        {n: by_name[n].test for n in chosen},
        chosen,
        options["rule"],
        options["n_boot"],
    )
    name = "ensemble" + ("-whole" if group == "whole" else "")
    tags = {
        tracking.MODEL_TAG: "ensemble",
        tracking.TASK_TAG: "classification",
        tracking.SETTING_TAG: f"top-{len(chosen)} by val AUC",
        tracking.INPUT_TAG: group,
        tracking.THRESHOLD_TAG: options["rule"],
        tracking.MEMBERS_TAG: ", ".join(chosen),
    }
    run = tracking.SweepRun.open(
        client,
        exp_id,
        f"{bench}-{name}",
        resume=True,
        parent=top.run_id,
        tags=tags,
        kind="ensemble",
    )
    run.tag(tags)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    run.log_metrics(tracking.scalar_metrics(scalars, "test_"))
    tracking.log_predictions(client, run.run_id, {"test": test.to_dict(orient="list")})
    client.set_terminated(run.run_id, "FINISHED")
    return [Classifier(name, run.run_id, group, None, test)]


def _compare(client, found: list[Classifier], group: str, n_boot: int, review: Review) -> None:
    """Paired tests within one group of classifiers; calibration and subgroups of each."""
    frames = compare.align({c.name: c.test for c in found})
    if len(frames) > 1:
        result = compare.compare_models(frames, n_boot)
        review.comparisons.append({"input": group, **result})
        for c in found:
            client.set_tag(c.run_id, tracking.VS_BEST_TAG, result["vs_best"][c.name]["text"])
        _transfer(client, found, result, review)
    for c in found:
        positive, scores = c.test["positive"].to_numpy(), c.test["score"].to_numpy()
        bins = calibration_bins(positive, scores)
        review.calibration[c.name] = {**calibration(positive, scores), "bins": bins}
        review.subgroups[c.name] = compare.subgroup_aucs(c.test, n_boot)
        breast = compare.breast_auc(c.test, n_boot)
        review.breast[c.name] = breast
        figures = {"auc": breast["auc"], "auc_ci_low": breast["ci_low"]}
        figures |= {"auc_ci_high": breast["ci_high"], "n": breast["n"]}
        run = tracking.SweepRun(client, "", c.run_id)
        run.log_metrics(tracking.scalar_metrics(figures, "test_breast_"))


def _transfer(client, found: list[Classifier], result: dict[str, Any], review: Review) -> None:
    """The study's question for each architecture trained both ways on the same test rows:
    AUC(pretrained) - AUC(scratch), DeLong's p (and Holm's over the whole family), tagged on
    the pretrained sweep for the leaderboard and kept for the report."""
    for c in (c for c in found if "-pretrained" in c.name):
        scratch = c.name.replace("-pretrained", "-scratch")
        pair = result["pairs"].get(f"{c.name} vs {scratch}")  # names sort pretrained first
        if pair is None:  # no scratch twin among these classifiers
            continue
        text = vs_scratch_text(pair)
        client.set_tag(c.run_id, tracking.VS_SCRATCH_TAG, text)
        review.transfer.append({"pretrained": c.name, "scratch": scratch, **pair, "text": text})


def vs_scratch_text(pair: dict[str, Any]) -> str:
    """``AUC +0.052 [-0.010, +0.114] vs scratch, DeLong p=0.11 (Holm p=0.9)``."""
    d, low, high = pair["difference"], pair["ci_low"], pair["ci_high"]
    return (
        f"AUC {d:+.3f} [{low:+.3f}, {high:+.3f}] vs scratch, DeLong p={pair['p']:.2g} "
        f"(Holm p={pair['p_holm']:.2g})"
    )


def log_review(client, run_id: str, review: Review) -> None:
    """``analysis.json`` on the benchmark run (NaN written as null)."""
    text = json.dumps(_finite(review.as_dict()), indent=1, default=str)
    client.log_text(run_id, text, ANALYSIS_FILE)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value
