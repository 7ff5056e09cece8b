"""Statistics on saved predictions: subgroup and breast-level AUCs, paired model comparisons and
validation-chosen ensembles.

Every function reads "predictions frames": one row per case (``key``, ``patient_id``, ``side``,
``view``, ``lesion_type``, ``breast_density``, ``assessment``, ``subtlety``, ``label``,
``positive``, ``score``). Confidence intervals resample whole patients (``bootstrap_ci``): a
patient's views and lesions are not independent cases. Two models are compared only on the cases
both saw (``align``), by DeLong's test with Holm's adjustment over the family of pairs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from orchestration.train.metrics import bootstrap_ci, safe_auc
from orchestration.train.operating_point import (
    binary_metrics,
    calibration,
    choose_threshold,
    delong_test,
    holm,
)

SUBGROUPS = ("lesion_type", "breast_density", "assessment", "subtlety", "view")
NAN = float("nan")


def _auc_with_ci(
    positive: np.ndarray, scores: np.ndarray, patients: Sequence[str], n_boot: int
) -> dict:
    """n, malignant count, AUC and its patient-bootstrap 95% CI (NaN with one class)."""
    positive, scores = np.asarray(positive, bool), np.asarray(scores, float)
    auc = safe_auc(positive, scores)
    low, high = (
        (NAN, NAN)
        if math.isnan(auc)
        else bootstrap_ci(lambda i: safe_auc(positive[i], scores[i]), patients, n_boot)
    )
    n, n_malignant = int(positive.size), int(positive.sum())
    return {"n": n, "n_malignant": n_malignant, "auc": auc, "ci_low": low, "ci_high": high}


def _level_text(value: object) -> str:
    """A level as text: a density read back as 2.0 (its column held NaN) is "2"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def subgroup_aucs(frame: pd.DataFrame, n_boot: int = 1000) -> list[dict]:
    """AUC with a patient-bootstrap CI for every level of every ``SUBGROUPS`` column.

    Levels are sorted; missing values (an unknown density) belong to no level; columns the frame
    lacks are skipped. A level with one class only gets NaN for its AUC and CI.
    """
    out = []
    for group in (g for g in SUBGROUPS if g in frame):
        for level in sorted(frame[group].dropna().unique()):
            rows = frame[frame[group] == level]
            stats = _auc_with_ci(rows["positive"], rows["score"], rows["patient_id"], n_boot)
            out.append({"group": group, "level": _level_text(level), **stats})
    return out


def breast_level(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per breast (patient_id, side): malignant when any of its rows is, scored by the
    mean of its rows' scores (its CC and MLO views combined), with the number of rows."""
    grouped = frame.groupby(["patient_id", "side"], sort=True)
    breasts = grouped.agg(
        positive=("positive", "any"), score=("score", "mean"), n_rows=("score", "size")
    )
    return breasts.reset_index().astype({"positive": bool})


def breast_auc(frame: pd.DataFrame, n_boot: int = 1000) -> dict:
    """Breast-level AUC (see ``breast_level``) with a patient-bootstrap 95% CI:
    {"n", "n_malignant", "auc", "ci_low", "ci_high"}."""
    breasts = breast_level(frame)
    return _auc_with_ci(breasts["positive"], breasts["score"], breasts["patient_id"], n_boot)


def align(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames restricted to the keys all share, rows in one (sorted) key order.

    Raises:
        ValueError: a frame repeats a key; fewer than half of a frame's keys are shared (models
            tested on different sets must not be compared silently); or truth differs on a key.
    """
    keys = {name: pd.Index(frame["key"]) for name, frame in frames.items()}
    for name, index in keys.items():
        if index.has_duplicates:
            raise ValueError(f"model {name!r} has repeated keys in its predictions")
    shared = sorted(set.intersection(*(set(index) for index in keys.values()))) if keys else []
    for name, index in keys.items():
        if len(shared) < len(index) / 2:
            raise ValueError(
                f"models {sorted(frames)} share {len(shared)} cases, fewer than half of "
                f"{name!r}'s {len(index)}: were they tested on the same split?"
            )
    out = {
        name: frame.set_index("key", drop=False).loc[shared].reset_index(drop=True)
        for name, frame in frames.items()
    }
    first = next(iter(out), None)
    for name, frame in out.items():
        truth = frame["positive"].to_numpy(bool)
        differ = int((truth != out[first]["positive"].to_numpy(bool)).sum())
        if differ:
            raise ValueError(f"models {first!r} and {name!r} disagree on truth for {differ} cases")
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """DeLong's test of AUC(a) - AUC(b) on the same cases, and the difference's 95% CI by a
    patient bootstrap (each replicate resamples patients once, for both models).

    Returns "auc_a", "auc_b", "difference", "se", "z", "p", "ci_low", "ci_high".
    """
    if list(a["key"]) != list(b["key"]):
        raise ValueError("paired_difference needs frames on the same cases in one order: align()")
    positive = a["positive"].to_numpy(bool)
    scores_a, scores_b = a["score"].to_numpy(float), b["score"].to_numpy(float)

    def difference(i: np.ndarray) -> float:
        return safe_auc(positive[i], scores_a[i]) - safe_auc(positive[i], scores_b[i])

    low, high = bootstrap_ci(difference, a["patient_id"], n_boot, seed)
    return delong_test(positive, scores_a, scores_b) | {"ci_low": low, "ci_high": high}


def _p_text(p: float) -> str:
    return "Holm p<0.001" if p < 0.001 else f"Holm p={p:.2g}"


def compare_models(
    frames: dict[str, pd.DataFrame], n_boot: int = 1000, alpha: float = 0.05
) -> dict:
    """Every pair of models on their shared cases, DeLong p-values Holm-adjusted as one family.

    Returns {"models", "n" (shared cases), "auc", "best", "pairs": {"a vs b": paired_difference
    + "p_holm"}, "vs_best": {name: {"p_holm", "different", "text"}}}; the best model's entry is
    {"p_holm": None, "different": None, "text": "best"}.
    """
    names, aligned = sorted(frames), align(frames)
    auc = {name: safe_auc(aligned[name]["positive"], aligned[name]["score"]) for name in names}
    best = top_k(auc, 1)[0]
    pairs = {
        f"{a} vs {b}": paired_difference(aligned[a], aligned[b], n_boot)
        for a, b in itertools.combinations(names, 2)
    }
    adjusted = holm({pair: stats["p"] for pair, stats in pairs.items()})
    for pair, stats in pairs.items():
        stats["p_holm"] = adjusted[pair]
    vs_best = {best: {"p_holm": None, "different": None, "text": "best"}}
    for name in (n for n in names if n != best):
        p = pairs[" vs ".join(sorted((name, best)))]["p_holm"]
        different = bool(p < alpha)
        verdict = "lower than" if different else "not significantly different from"
        vs_best[name] = {
            "p_holm": p,
            "different": different,
            "text": f"{verdict} {best} ({_p_text(p)})",
        }
    n = len(next(iter(aligned.values()))) if aligned else 0
    return {"models": names, "n": n, "auc": auc, "best": best, "pairs": pairs, "vs_best": vs_best}


def _mean_scores(frames: dict[str, pd.DataFrame], members: list[str]) -> pd.DataFrame:
    """The members' aligned frames with ``score`` replaced by their mean probability."""
    missing = [m for m in members if m not in frames]
    if not members or missing:
        raise ValueError(f"ensemble members {missing or members} not among {sorted(frames)}")
    aligned = align({m: frames[m] for m in members})
    scores = np.mean([aligned[m]["score"].to_numpy(float) for m in members], axis=0)
    return aligned[members[0]].assign(score=scores)


def _at_threshold(frame: pd.DataFrame, threshold: float, n_boot: int) -> dict:
    """AUC, the metrics of ``score >= threshold`` with patient-bootstrap CIs, and calibration."""
    positive, scores = frame["positive"].to_numpy(bool), frame["score"].to_numpy(float)
    patients = frame["patient_id"]
    auc = _auc_with_ci(positive, scores, patients, n_boot)
    out = {"auc": auc["auc"], "auc_ci_low": auc["ci_low"], "auc_ci_high": auc["ci_high"]}
    out["threshold"] = float(threshold)
    for name, value in binary_metrics(positive, scores, threshold).items():
        stat = lambda i, k=name: binary_metrics(positive[i], scores[i], threshold)[k]  # noqa: E731
        low, high = bootstrap_ci(stat, patients, n_boot)
        out |= {name: value, f"{name}_ci_low": low, f"{name}_ci_high": high}
    prevalence = float(positive.mean()) if positive.size else NAN
    at_half = float(((scores >= 0.5) == positive).mean()) if positive.size else NAN
    return (
        out | calibration(positive, scores) | {"prevalence": prevalence, "accuracy_at_0_5": at_half}
    )


def ensemble(
    val: dict[str, pd.DataFrame],
    test: dict[str, pd.DataFrame],
    members: list[str],
    rule: str = "youden",
    n_boot: int = 1000,
) -> tuple[dict, pd.DataFrame]:
    """The mean malignant probability of ``members``, its threshold chosen on validation by
    ``rule`` (``choose_threshold``) and applied unchanged to test.

    Returns the test metrics ("auc", "sensitivity", "specificity", "balanced_accuracy" and
    "accuracy", each with "_ci_low" and "_ci_high"; "threshold", "brier", "ece", "prevalence", "accuracy_at_0_5", "rule", "members",
    "n") and the ensemble's test predictions frame (the first member's rows, averaged ``score``).
    """
    val_frame = _mean_scores(val, members)
    threshold = choose_threshold(val_frame["positive"].to_numpy(bool), val_frame["score"], rule)
    test_frame = _mean_scores(test, members)
    metrics = _at_threshold(test_frame, threshold, n_boot)
    return metrics | {"rule": rule, "members": list(members), "n": len(test_frame)}, test_frame


def top_k(val_aucs: dict[str, float], k: int) -> list[str]:
    """The ``k`` names with the highest validation AUC (NaN last, ties by name).

    Ensemble members are chosen on validation, never on test: choosing them on test would make
    the ensemble's test figures optimistic.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")

    def order(name: str) -> tuple[bool, float, str]:
        auc = val_aucs[name]
        return (math.isnan(auc), -auc if not math.isnan(auc) else 0.0, name)

    return sorted(val_aucs, key=order)[:k]
