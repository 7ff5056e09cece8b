"""Each metric against a case small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from orchestration.train.metrics import (
    bootstrap_ci,
    classification_cis,
    classification_metrics,
    detection_metrics,
    froc_points,
    safe_auc,
    segmentation_metrics,
    segmentation_scores,
)


def test_classification_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.35])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(labels, probs)
    # predictions: 1 1 0 1 0 0 0 0 -> TP 2, FN 1, FP 1, TN 4
    assert m["accuracy"] == 6 / 8
    assert m["sensitivity"] == 2 / 3 and m["specificity"] == 4 / 5
    assert math.isclose(m["f1"], 2 * 2 / (2 * 2 + 1 + 1))
    assert math.isclose(m["balanced_accuracy"], (2 / 3 + 4 / 5) / 2)
    assert m["confusion_matrix"] == [[4, 1], [1, 2]]
    # AUC: of the 15 (positive, negative) pairs, the positive 0.3 loses to 0.6, 0.4, 0.35
    assert math.isclose(m["auc"], 12 / 15)


def test_three_class_uses_malignant_as_positive() -> None:
    labels = np.array([2, 0, 1, 2])
    probs = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    m = classification_metrics(labels, probs)
    assert m["accuracy"] == 2 / 4
    assert m["sensitivity"] == 1 / 2 and m["specificity"] == 1 / 2
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_auc_is_nan_with_one_class() -> None:
    probs = np.array([[0.2, 0.8], [0.4, 0.6]])
    assert math.isnan(classification_metrics(np.array([1, 1]), probs)["auc"])


def test_auc_counts_ties_half_as_sklearn_does() -> None:
    # malignant .8, .5; benign .5, .2, .2: pairs won 3 + 3, the (.5, .5) tie half -> 5.5 / 6
    positive = np.array([1, 1, 0, 0, 0], bool)
    scores = np.array([0.8, 0.5, 0.5, 0.2, 0.2])
    assert safe_auc(positive, scores) == pytest.approx(5.5 / 6)
    rng = np.random.default_rng(1)
    for _ in range(50):  # the rank formula is sklearn's AUC, ties and all
        truth, noisy = rng.random(60) < 0.4, np.round(rng.random(60), 1)
        assert safe_auc(truth, noisy) == pytest.approx(roc_auc_score(truth, noisy), abs=1e-12)


def test_bootstrap_resamples_whole_patients() -> None:
    # Patient A's three rows are right, patient B's one row wrong. A resample of two whole
    # patients is {A,A}, {A,B} or {B,B}: accuracy 1, 3/4 or 0, never a row-level mix like 2/3.
    correct = np.array([1, 1, 1, 0], dtype=float)
    patients = ["A", "A", "A", "B"]
    seen = set()

    def stat(i: np.ndarray) -> float:
        seen.add(round(float(correct[i].mean()), 6))
        return float(correct[i].mean())

    low, high = bootstrap_ci(stat, patients, n_boot=200, seed=1)
    assert seen <= {0.0, 0.75, 1.0}  # {B,B}, {A,B}, {A,A}
    assert low == 0.0 and high == 1.0


def test_classification_cis_contain_the_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p1 = np.clip(labels * 0.6 + rng.normal(0.2, 0.2, 200), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    patients = [f"P{i // 3}" for i in range(200)]
    point = classification_metrics(labels, probs)
    cis = classification_cis(labels, probs, patients, n_boot=300)
    assert cis["auc_ci"][0] <= point["auc"] <= cis["auc_ci"][1]
    assert cis["accuracy_ci"][0] <= point["accuracy"] <= cis["accuracy_ci"][1]
    assert cis["auc_ci"][1] - cis["auc_ci"][0] < 0.2


def test_segmentation_by_hand() -> None:
    truth = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    truth[0, :2, :2] = True  # 4 pixels
    pred[0, :2, :3] = True  # 6 pixels, 4 shared
    scores = segmentation_scores(pred, truth)
    assert math.isclose(scores[0, 0], 2 * 4 / (4 + 6))  # Dice 0.8
    assert math.isclose(scores[0, 1], 4 / 6)  # IoU
    assert math.isclose(scores[0, 2], 14 / 16)  # pixel accuracy
    assert list(scores[1]) == [1.0, 1.0, 1.0]  # both empty: perfect agreement
    m = segmentation_metrics(scores, patients=["A", "B"], n_boot=50)
    assert math.isclose(m["dice"], 0.9) and m["dice_ci"][0] >= 0.8


def _boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_detection_by_hand() -> None:
    targets = [
        {"boxes": _boxes([0, 0, 10, 10]), "labels": torch.tensor([1])},
        {"boxes": _boxes([20, 20, 30, 30]), "labels": torch.tensor([1])},
    ]
    preds = [
        {
            "boxes": _boxes([0, 0, 10, 10], [50, 50, 60, 60]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1]),
        },
        {
            "boxes": _boxes([70, 70, 80, 80], [21, 21, 30, 30]),
            "scores": torch.tensor([0.7, 0.6]),
            "labels": torch.tensor([1, 1]),
        },
    ]
    # Ranked: 0.9 hit, 0.8 FP, 0.7 FP, 0.6 hit (IoU 81/100). 2 images.
    froc = froc_points(preds, targets)
    assert froc == {"sens@0.5fp": 0.5, "sens@1fp": 1.0, "sens@2fp": 1.0, "sens@4fp": 1.0}
    m = detection_metrics(preds, targets)
    # AP at IoU 0.5: precision 1 at recall 0.5, 0.5 at recall 1 -> COCO 101-point AP = 0.7525
    assert math.isclose(m["map50"], 0.752475, abs_tol=1e-3)


def test_froc_counts_loose_hits_by_iou_0_2_or_centre_inside() -> None:
    targets = [
        {"boxes": _boxes([0, 0, 40, 40], [100, 100, 110, 110]), "labels": torch.tensor([1, 1])}
    ]
    preds = [
        {
            # IoU 0.25 with the first lesion (400 / 1600); centre (5, 5) is inside it, too.
            "boxes": _boxes([0, 0, 20, 20], [98, 98, 150, 150], [60, 60, 70, 70]),
            "scores": torch.tensor([0.9, 0.8, 0.7]),
            "labels": torch.tensor([1, 1, 1]),
        }
    ]
    # The second box: IoU 100/2704 < 0.2, but its centre (124, 124) is outside the lesion: a FP.
    # The third box touches nothing: a FP. One image: at 1 FP only the first hit counts.
    assert froc_points(preds, targets) == {
        "sens@0.5fp": 0.5,
        "sens@1fp": 0.5,
        "sens@2fp": 0.5,
        "sens@4fp": 0.5,
    }
    inside = [{**preds[0], "boxes": _boxes([0, 0, 20, 20], [95, 95, 120, 120], [60, 60, 70, 70])}]
    # Now the second box's centre (107.5, 107.5) lies inside the small lesion (IoU 100/625 = 0.16).
    assert froc_points(inside, targets)["sens@1fp"] == 1.0


def test_detection_map_is_class_agnostic_and_malignancy_map_apart() -> None:
    targets = [{"boxes": _boxes([0, 0, 10, 10]), "labels": torch.tensor([2])}]
    preds = [
        {
            "boxes": _boxes([0, 0, 10, 10]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    m = detection_metrics(preds, targets)
    assert m["map50"] == 1.0  # the lesion was found: its class is a separate question
    assert m["map50_malignancy"] == 0.0  # called benign, it was malignant
