"""Clinical metrics on whole splits: classification, segmentation and detection.

Computed once on all predictions of a split (gathered across workers), never averaged per batch.
Confidence intervals are patient-level bootstraps: a patient has several lesions and views, so
resampling rows would understate the uncertainty.

scikit-learn, torchmetrics and torchvision (~2.5 s of imports) are imported where used: a Train
worker fetches its first batch while the model (and torchvision with it) loads, and validation
comes after the first epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

FROC_RATES = (0.5, 1.0, 2.0, 4.0)


def malignant_scores(probs: np.ndarray) -> np.ndarray:
    """Probability of the malignant class, the last column of either label map."""
    return probs[:, -1]


def safe_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of a binary truth (malignant vs the rest); NaN when only one class is present."""
    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        return float("nan")
    from scipy.stats import rankdata

    # Mann-Whitney: the malignant cases' midranks (ties count half), as roc_auc_score gives,
    # at a fraction of its cost (a bootstrap computes thousands of these)
    m, n = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, malignant: int | None = None
) -> dict[str, object]:
    """Accuracy, AUC, sensitivity, specificity, F1, balanced accuracy and confusion matrix.

    Args:
        labels: Integer labels (N,).
        probs: Class probabilities (N, C); the last class is malignant.
        malignant: Index of the malignant class (default: the last).
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    malignant = probs.shape[1] - 1 if malignant is None else malignant
    preds = probs.argmax(axis=1)
    truth, called = labels == malignant, preds == malignant
    tp, fn = int((truth & called).sum()), int((truth & ~called).sum())
    tn, fp = int((~truth & ~called).sum()), int((~truth & called).sum())
    classes = list(range(probs.shape[1]))
    return {
        "accuracy": float((preds == labels).mean()) if labels.size else float("nan"),
        "auc": safe_auc(truth, probs[:, malignant]),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "f1": float(f1_score(truth, called, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, preds)) if labels.size else 0.0,
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
    }


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    groups: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[float]:
    """Percentile CI of ``statistic(row_indices)`` resampling whole groups (patients).

    Args:
        statistic: Maps an array of row indices (with repeats) to a number; NaNs are skipped.
        groups: Group (patient) of every row.
        n_boot: Bootstrap replicates.
        seed: Seed of the resampling.
        alpha: 0.05 gives a 95% interval.
    """
    groups = np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == g) for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        picked = rng.integers(0, unique.size, unique.size)
        value = statistic(np.concatenate([rows_of[g] for g in picked]))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return [float("nan"), float("nan")]
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(low), float(high)]


def classification_cis(
    labels: np.ndarray, probs: np.ndarray, patients: Sequence[str], n_boot: int = 1000
) -> dict[str, list[float]]:
    """Patient-level bootstrap 95% CIs of AUC and accuracy."""
    truth = labels == probs.shape[1] - 1
    scores, correct = malignant_scores(probs), probs.argmax(axis=1) == labels
    return {
        "auc_ci": bootstrap_ci(lambda i: safe_auc(truth[i], scores[i]), patients, n_boot),
        "accuracy_ci": bootstrap_ci(lambda i: float(correct[i].mean()), patients, n_boot),
    }


def threshold_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    patients: Sequence[str] | None = None,
    n_boot: int = 0,
) -> dict[str, object]:
    """Malignant vs the rest at a threshold chosen on validation (``operating_point``), with
    patient-bootstrap CIs; calibration; the split's prevalence; and argmax accuracy beside it
    (``accuracy_at_0_5``: for two classes, the fixed 0.5 threshold)."""
    from orchestration.train.operating_point import binary_metrics, calibration

    truth, scores = labels == probs.shape[1] - 1, malignant_scores(probs)
    prevalence = float(truth.mean()) if truth.size else float("nan")
    out: dict[str, object] = {
        **binary_metrics(truth, scores, threshold),
        **calibration(truth, scores),
        "threshold": float(threshold),
        "accuracy_at_0_5": float((probs.argmax(axis=1) == labels).mean()) if labels.size else 0.0,
        "prevalence": prevalence,
        "majority_rate": max(prevalence, 1 - prevalence),
    }
    for name in ("sensitivity", "specificity", "balanced_accuracy", "accuracy") if n_boot else ():
        stat = lambda i, k=name: binary_metrics(truth[i], scores[i], threshold)[k]  # noqa: E731
        out[f"{name}_ci"] = bootstrap_ci(stat, patients, n_boot)
    return out


def segmentation_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice, IoU and pixel accuracy of binary masks (N, H, W) -> (N, 3).

    An image whose prediction and truth are both empty scores 1 (perfect agreement).
    """
    pred, truth = (
        pred.astype(bool).reshape(len(pred), -1),
        truth.astype(bool).reshape(len(truth), -1),
    )
    inter = (pred & truth).sum(1).astype(float)
    union = (pred | truth).sum(1).astype(float)
    total = pred.sum(1) + truth.sum(1)
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return np.stack([dice, iou, (pred == truth).mean(1)], axis=1)


def segmentation_metrics(
    scores: np.ndarray, patients: Sequence[str] | None = None, n_boot: int = 1000
) -> dict[str, object]:
    """Mean Dice, IoU and pixel accuracy; with ``patients``, patient-level 95% CIs too."""
    out: dict[str, object] = {
        "dice": float(scores[:, 0].mean()),
        "iou": float(scores[:, 1].mean()),
        "pixel_accuracy": float(scores[:, 2].mean()),
    }
    if patients is not None:
        for col, name in enumerate(("dice", "iou", "pixel_accuracy")):
            stat = lambda i, c=col: float(scores[i, c].mean())  # noqa: E731
            out[f"{name}_ci"] = bootstrap_ci(stat, patients, n_boot)
    return out


FROC_HIT_IOU = 0.2
FROC_RULE = (
    f"a detection hits a lesion when their IoU >= {FROC_HIT_IOU:g} or the detection's centre "
    "lies inside the lesion's box (CBIS-DDSM's ROI outlines are loose)"
)
DETECTION_RULE = f"lesion mAP@0.5, class-agnostic; FROC: {FROC_RULE}"


def detection_metrics(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]
) -> dict[str, object]:
    """Lesion mAP@0.5 (class-agnostic, torchmetrics COCO-style) and FROC sensitivities at
    0.5/1/2/4 false positives per image; ``map50_malignancy`` (the mean AP of benign and
    malignant boxes) too when the detector predicts pathology classes."""
    lesions = lambda items: [d | {"labels": torch.ones_like(d["labels"])} for d in items]  # noqa: E731
    result = {"map50": _map50(lesions(preds), lesions(targets))}
    if any(len(d["labels"]) and int(d["labels"].max()) > 1 for d in [*preds, *targets]):
        result["map50_malignancy"] = _map50(preds, targets)
    return result | {"froc": froc_points(preds, targets)}


def _map50(preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> float:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_thresholds=[0.5], box_format="xyxy")
    metric.update(preds, targets)
    value = float(metric.compute()["map_50"])
    return value if value >= 0 else 0.0


def froc_points(
    preds: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    rates: Sequence[float] = FROC_RATES,
    iou_threshold: float = FROC_HIT_IOU,
) -> dict[str, float]:
    """Lesion sensitivity at given false positives per image (class-agnostic; see ``FROC_RULE``).

    Detections are ranked by score over all images; each lesion counts once (its best-scoring
    hit); a detection hits at most one lesion (the untaken one it overlaps most).
    """
    hits, n_lesions = [], sum(len(t["boxes"]) for t in targets)
    for image, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        taken: set[int] = set()
        order = torch.argsort(pred["scores"], descending=True)
        close = _closeness(pred["boxes"][order], target["boxes"], iou_threshold)
        for rank, index in enumerate(order.tolist()):
            lesion = _match(close, rank, taken)
            hits.append((float(pred["scores"][index]), lesion is not None, image, lesion))
    hits.sort(key=lambda h: -h[0])
    tp = np.cumsum([h[1] for h in hits]) if hits else np.zeros(0)
    fp = np.cumsum([not h[1] for h in hits]) if hits else np.zeros(0)
    n_images = max(len(targets), 1)
    result = {}
    for rate in rates:
        allowed = np.flatnonzero(fp <= rate * n_images)
        found = tp[allowed[-1]] if allowed.size else 0
        result[f"sens@{rate:g}fp"] = float(found / n_lesions) if n_lesions else float("nan")
    return result


def _closeness(boxes: torch.Tensor, lesions: torch.Tensor, iou_threshold: float):
    """IoU of every (detection, lesion) pair where the pair is a hit, else -1 (None: no lesions)."""
    if not len(lesions):
        return None
    from torchvision.ops import box_iou

    ious = box_iou(boxes, lesions)
    centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    inside = ((centre >= lesions[None, :, :2]) & (centre <= lesions[None, :, 2:])).all(dim=2)
    return torch.where((ious >= iou_threshold) | inside, ious, torch.full_like(ious, -1.0))


def _match(close: torch.Tensor | None, rank: int, taken: set[int]) -> int | None:
    if close is None:
        return None
    for lesion in torch.argsort(close[rank], descending=True).tolist():
        if close[rank, lesion] < 0:
            return None
        if lesion not in taken:
            taken.add(lesion)
            return lesion
    return None
