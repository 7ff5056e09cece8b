"""Operating points, calibration and DeLong's test, on values checked by hand (and DeLong against
the paper's definitions computed pair by pair)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from orchestration.train.metrics import threshold_metrics
from orchestration.train.operating_point import (
    binary_metrics,
    calibration,
    choose_threshold,
    delong_test,
    holm,
)

# 4 malignant, 5 benign. Youden's J by threshold: 0.9 .25, 0.8 .50, 0.7 .30, 0.6 .55 (best),
# 0.5 .35, 0.4 .15, 0.3 -.05, 0.2 .20, 0.1 0; sensitivity reaches 0.9 first at 0.2 (1.0).
POSITIVE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
SCORES = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.5, 0.4, 0.3, 0.1])


def test_youden_and_sensitivity_rules_pick_the_hand_checked_thresholds() -> None:
    assert choose_threshold(POSITIVE, SCORES) == pytest.approx(0.6)
    assert choose_threshold(POSITIVE, SCORES, "sens90") == pytest.approx(0.2)
    assert choose_threshold(np.ones(3, bool), SCORES[:3]) == 0.5  # one class: no choice
    with pytest.raises(ValueError, match="threshold rule"):
        choose_threshold(POSITIVE, SCORES, "f1")


def test_metrics_at_the_chosen_threshold() -> None:
    got = binary_metrics(POSITIVE, SCORES, 0.6)  # called: 0.9, 0.8, 0.6 and the benign 0.7
    assert got == pytest.approx(
        {"sensitivity": 0.75, "specificity": 0.8, "balanced_accuracy": 0.775, "accuracy": 7 / 9}
    )


def test_threshold_metrics_keep_argmax_accuracy_and_bootstrap_cis() -> None:
    probs = np.stack([1 - SCORES, SCORES], axis=1)
    labels = POSITIVE.astype(int)
    patients = [f"P{i // 2}" for i in range(len(labels))]
    got = threshold_metrics(labels, probs, 0.2, patients, n_boot=200)
    assert got["accuracy_at_0_5"] == pytest.approx(7 / 9)  # called 0.9, 0.8, 0.7, 0.6
    assert got["accuracy"] == pytest.approx(5 / 9)  # all but the benign 0.1 called
    assert got["sensitivity"] == 1.0 and got["prevalence"] == pytest.approx(4 / 9)
    assert got["majority_rate"] == pytest.approx(5 / 9)
    for key in ("sensitivity", "specificity", "balanced_accuracy", "accuracy"):
        low, high = got[f"{key}_ci"]
        assert 0 <= low <= got[key] <= high <= 1, key


def test_brier_and_expected_calibration_error_by_hand() -> None:
    # bins: [0.05] all benign -> |0 - .05|; [.15, .15] half malignant -> 2 x .35; [.95] -> .05
    got = calibration(np.array([0, 0, 1, 1]), np.array([0.05, 0.15, 0.15, 0.95]))
    assert got["ece"] == pytest.approx((0.05 + 0.7 + 0.05) / 4)
    assert got["brier"] == pytest.approx((0.05**2 + 0.15**2 + 0.85**2 + 0.05**2) / 4)


def _delong_by_pairs(positive: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) as written: psi over every (malignant, benign) pair, the structural
    components V10 and V01, S = S10/m + S01/n; the difference's variance and its z."""
    psi = lambda x, y: (x > y) + 0.5 * (x == y)  # noqa: E731
    comps = []
    for s in (a, b):
        kernel = psi(s[positive][:, None], s[~positive][None, :])
        comps.append((kernel.mean(axis=1), kernel.mean(axis=0), kernel.mean()))
    m, n = positive.sum(), (~positive).sum()
    s10 = np.cov(np.stack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.stack([comps[0][1], comps[1][1]]))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return comps[0][2] - comps[1][2], (comps[0][2] - comps[1][2]) / math.sqrt(var)


def test_delong_matches_the_paper_computed_pair_by_pair() -> None:
    rng = np.random.default_rng(3)
    positive = rng.random(80) < 0.4
    a = np.round(positive * 0.8 + rng.normal(0, 0.5, 80), 1)  # rounded: ties, as real scores
    b = np.round(positive * 0.3 + 0.5 * a + rng.normal(0, 0.5, 80), 1)  # correlated with a
    got = delong_test(positive, a, b)
    diff, z = _delong_by_pairs(positive, a, b)
    assert got["auc_a"] == pytest.approx(roc_auc_score(positive, a))
    assert got["auc_b"] == pytest.approx(roc_auc_score(positive, b))
    assert got["difference"] == pytest.approx(diff) and got["z"] == pytest.approx(z)
    assert got["p"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def test_delong_of_a_model_with_itself_and_of_a_clear_winner() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.5
    good, noise = positive + rng.normal(0, 0.3, 200), rng.random(200)
    assert delong_test(positive, good, good)["p"] == 1.0
    assert delong_test(positive, good, noise)["p"] < 1e-6
    with pytest.raises(ValueError, match="malignant and benign"):
        delong_test(np.ones(3, bool), good[:3], noise[:3])


def test_holm_adjusts_step_down() -> None:
    # sorted .01 x 3 = .03; .03 x 2 = .06; .04 x 1 = .04 -> kept at the running max .06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx(
        {"a": 0.03, "c": 0.06, "b": 0.06}
    )
