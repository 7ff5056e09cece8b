"""Operating points chosen on validation, calibration, and DeLong's test of two correlated AUCs.

A classifier's threshold on its malignant probability is chosen on the validation split (Youden's
J by default, or the highest threshold with sensitivity >= 0.9) and applied unchanged to test:
sensitivity and specificity at argmax (a fixed 0.5) say little of a model whose scores are not
centred there. A case is called malignant when its score is >= the threshold (as ``roc_curve``).
"""

from __future__ import annotations

import math

import numpy as np

from orchestration.train.config import THRESHOLD_RULES

THRESHOLD_TEXT = {
    "youden": "Youden's J on validation",
    "sens90": "sensitivity >= 0.9 on validation",
}
CALIBRATION_BINS = 10


def choose_threshold(positive: np.ndarray, scores: np.ndarray, rule: str = "youden") -> float:
    """The threshold ``rule`` picks on validation; 0.5 when a class is missing there.

    ``youden``: the threshold maximising sensitivity + specificity - 1 (the highest of ties);
    ``sens90``: the highest threshold whose sensitivity is at least 0.9 (the best specificity).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        return 0.5
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(positive, scores, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # the first is +inf: nobody called
    index = int(np.argmax(tpr - fpr)) if rule == "youden" else int(np.argmax(tpr >= 0.9))
    return float(thresholds[index])


def binary_metrics(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, balanced accuracy and accuracy of ``scores >= threshold``."""
    positive = np.asarray(positive).astype(bool)
    called = np.asarray(scores) >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    sens = float((called & positive).sum() / n_pos) if n_pos else math.nan
    spec = float((~called & ~positive).sum() / n_neg) if n_neg else math.nan
    return {
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2,
        "accuracy": float((called == positive).mean()) if positive.size else math.nan,
    }


def calibration_bins(
    positive: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Equal-width bins of the malignant probability: mean score, malignant fraction, count."""
    positive, scores = np.asarray(positive).astype(float), np.asarray(scores, float)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        rows = index == b
        if rows.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "mean_score": float(scores[rows].mean()),
                    "fraction_positive": float(positive[rows].mean()),
                    "count": int(rows.sum()),
                }
            )
    return out


def calibration(positive: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Brier score and expected calibration error (10 equal-width bins, weighted by count)."""
    positive, scores = np.asarray(positive).astype(float), np.asarray(scores, float)
    if not positive.size:
        return {"brier": math.nan, "ece": math.nan}
    ece = sum(
        b["count"] * abs(b["fraction_positive"] - b["mean_score"])
        for b in calibration_bins(positive, scores)
    )
    return {"brier": float(np.mean((scores - positive) ** 2)), "ece": float(ece / positive.size)}


def delong_test(positive: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """DeLong's test of two correlated AUCs on the same cases (DeLong, DeLong & Clarke-Pearson,
    Biometrics 1988), with Sun & Xu's midrank computation (IEEE SPL 2014).

    Returns both AUCs, their difference (a - b), its standard error, z and the two-sided p-value.
    """
    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        raise ValueError("DeLong's test needs malignant and benign cases")
    scores = np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg], axis=1))
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # each malignant case's structural component
    v10 = 1 - (tz[:, m:] - ty) / m  # each benign case's
    cov = np.cov(v01) / m + np.cov(v10) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "se": se,
        "z": z,
        "p": math.erfc(abs(z) / math.sqrt(2)),
    }


def _midranks(values: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties averaged) along the last axis of a 2-D array."""
    from scipy.stats import rankdata

    return rankdata(values, axis=1)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (names kept)."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[name]))
        adjusted[name] = running
    return adjusted
