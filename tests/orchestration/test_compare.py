"""Subgroup, breast-level, paired and ensemble statistics on predictions frames small enough to
work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestration.results.compare import (
    align,
    breast_auc,
    breast_level,
    compare_models,
    ensemble,
    paired_difference,
    subgroup_aucs,
    top_k,
)
from orchestration.train.operating_point import holm


def _frame(positive, scores, patients=None, keys=None, **columns) -> pd.DataFrame:
    """A predictions frame; columns not given take one constant value."""
    n = len(positive)
    data = {
        "key": keys or [f"k{i}" for i in range(n)],
        "patient_id": patients or [f"P{i}" for i in range(n)],
        "side": "LEFT",
        "view": "CC",
        "lesion_type": "mass",
        "breast_density": 2,
        "assessment": 4,
        "subtlety": 3,
        "label": np.asarray(positive, int),
        "positive": np.asarray(positive, bool),
        "score": np.asarray(scores, float),
    }
    return pd.DataFrame(data | columns)


def test_subgroup_aucs_by_hand() -> None:
    # calc: malignant {.9, .8} above benign {.2, .1}: AUC 1.
    # mass: malignant {.6, .4} vs benign {.5, .3}: .6 wins twice, .4 beats .3 only -> 3/4.
    # calc+mass: all benign -> NaN. Density: NaN on the two calc+mass rows, which join no level.
    positive = [1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.1, 0.6, 0.4, 0.5, 0.3, 0.7, 0.2]
    lesion = ["calc"] * 4 + ["mass"] * 4 + ["calc+mass"] * 2
    density = [1, 1, 1, 1, 2, 2, 2, 2, None, None]
    frame = _frame(positive, scores, lesion_type=lesion, breast_density=density)
    rows = {(r["group"], r["level"]): r for r in subgroup_aucs(frame, n_boot=200)}
    lesion_levels = [key[1] for key in rows if key[0] == "lesion_type"]
    assert lesion_levels == ["calc", "calc+mass", "mass"]  # sorted
    calc, mass, mixed = (
        rows["lesion_type", "calc"],
        rows["lesion_type", "mass"],
        rows["lesion_type", "calc+mass"],
    )
    assert (calc["n"], calc["n_malignant"], calc["auc"]) == (4, 2, 1.0)
    assert (calc["ci_low"], calc["ci_high"]) == (1.0, 1.0)  # every two-class resample separates
    assert mass["auc"] == 0.75 and 0.0 <= mass["ci_low"] <= 0.75 <= mass["ci_high"] <= 1.0
    assert (mixed["n"], mixed["n_malignant"]) == (2, 0)
    assert all(math.isnan(mixed[k]) for k in ("auc", "ci_low", "ci_high"))
    # Density read back as 1.0/2.0 (the column held NaN) is labelled "1"/"2"; its AUCs equal
    # the calc and mass levels', the same rows.
    assert [k[1] for k in rows if k[0] == "breast_density"] == ["1", "2"]
    assert rows["breast_density", "2"]["auc"] == 0.75
    # One level for each constant column: all ten rows, 4 malignant.
    assert rows["view", "CC"]["n"] == 10 and rows["assessment", "4"]["n_malignant"] == 4


# Two patients x (LEFT, RIGHT) x (CC, MLO). Breast means: P1 LEFT (.9 + .5) / 2 = .7 malignant,
# P1 RIGHT (.2 + .4) / 2 = .3 benign, P2 LEFT (.5 + .7) / 2 = .6 benign, P2 RIGHT (.2 + 1.0) / 2
# = .6 malignant: its CC row is benign, its MLO malignant, so the breast is malignant.
BREASTS = _frame(
    [1, 1, 0, 0, 0, 0, 0, 1],
    [0.9, 0.5, 0.2, 0.4, 0.5, 0.7, 0.2, 1.0],
    patients=["P1"] * 4 + ["P2"] * 4,
    side=["LEFT", "LEFT", "RIGHT", "RIGHT"] * 2,
    view=["CC", "MLO"] * 4,
)


def test_breast_level_combines_the_views_of_a_breast() -> None:
    breasts = breast_level(BREASTS)
    assert list(zip(breasts["patient_id"], breasts["side"], strict=True)) == [
        ("P1", "LEFT"),
        ("P1", "RIGHT"),
        ("P2", "LEFT"),
        ("P2", "RIGHT"),
    ]
    assert list(breasts["positive"]) == [True, False, False, True]
    assert list(breasts["score"]) == pytest.approx([0.7, 0.3, 0.6, 0.6])
    assert list(breasts["n_rows"]) == [2, 2, 2, 2]


def test_breast_auc_by_hand_and_its_patient_bootstrap() -> None:
    # Malignant {.7, .6} vs benign {.3, .6}: .7 wins twice, .6 beats .3 and ties .6 -> 3.5 / 4.
    # Resampling two whole patients: {P1, P1} -> 1, {P1, P2} -> .875, {P2, P2} (.6 tie) -> .5;
    # each extreme has probability 1/4 per replicate, so the 2.5% and 97.5% points are .5 and 1.
    got = breast_auc(BREASTS, n_boot=200)
    assert (got["n"], got["n_malignant"], got["auc"]) == (4, 2, 0.875)
    assert (got["ci_low"], got["ci_high"]) == (0.5, 1.0)


def test_align_keeps_shared_keys_in_one_order() -> None:
    # a has k0..k3; b has k3..k1 (reversed) and k9: three keys shared, 3/4 of each frame.
    a = _frame([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2])
    b = _frame([0, 1, 0, 1], [0.3, 0.7, 0.4, 0.5], keys=["k3", "k2", "k1", "k9"])
    got = align({"a": a, "b": b})
    assert list(got["a"]["key"]) == list(got["b"]["key"]) == ["k1", "k2", "k3"]
    assert list(got["a"]["score"]) == [0.1, 0.8, 0.2]
    assert list(got["b"]["score"]) == [0.4, 0.7, 0.3]
    assert list(got["a"].columns) == list(a.columns)


def test_align_refuses_different_truth_and_different_test_sets() -> None:
    a = _frame([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2])
    flipped = _frame([1, 0, 1, 1], [0.9, 0.1, 0.8, 0.2])  # k3 malignant here, benign in a
    with pytest.raises(ValueError, match=r"'a' and 'flipped' disagree on truth for 1 cases"):
        align({"a": a, "flipped": flipped})
    elsewhere = _frame([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], keys=["k3", "x1", "x2", "x3"])
    with pytest.raises(ValueError, match=r"\['a', 'elsewhere'\] share 1 cases"):
        align({"a": a, "elsewhere": elsewhere})  # 1 of 4 shared: a different split


def _two_models(n: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A clearly informative model and noise, on n cases of n / 2 patients."""
    rng = np.random.default_rng(0)
    positive = rng.random(n) < 0.5
    patients = [f"P{i // 2}" for i in range(n)]
    good = _frame(positive, positive + rng.normal(0, 0.5, n), patients=patients)
    noise = _frame(positive, rng.random(n), patients=patients)
    return good, noise


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    # Each replicate's difference is AUC - the same AUC = 0: CI [0, 0]; DeLong z = 0, p = 1.
    good, _ = _two_models()
    got = paired_difference(good, good, n_boot=200)
    assert got["difference"] == 0.0 and got["z"] == 0.0 and got["p"] == 1.0
    assert (got["ci_low"], got["ci_high"]) == (0.0, 0.0)


def test_paired_difference_of_a_clearly_better_model() -> None:
    # Signal + N(0, .5) has AUC ~.92, uniform noise ~.5: the difference's CI lies above 0.
    good, noise = _two_models()
    got = paired_difference(good, noise, n_boot=200)
    assert got["auc_a"] > 0.85 and abs(got["auc_b"] - 0.5) < 0.1
    assert got["p"] < 0.001 and 0 < got["ci_low"] < got["difference"] < got["ci_high"]
    with pytest.raises(ValueError, match="align"):
        paired_difference(good, noise.iloc[::-1], n_boot=10)


def test_compare_models_adjusts_the_pairs_with_holm_and_says_so() -> None:
    # good (signal + N(0, .5): AUC .918) and close (signal + N(0, .65): .891) differ by chance
    # (DeLong p .39); noise (.48) lies far below both.
    good, noise = _two_models()
    rng = np.random.default_rng(1)
    close = good.assign(score=good["positive"] + rng.normal(0, 0.65, len(good)))
    got = compare_models({"good": good, "noise": noise, "close": close}, n_boot=200)
    assert got["models"] == ["close", "good", "noise"] and got["best"] == "good"
    assert got["n"] == 200 and set(got["pairs"]) == {
        "close vs good",
        "close vs noise",
        "good vs noise",
    }
    raw = {pair: stats["p"] for pair, stats in got["pairs"].items()}
    adjusted = {pair: stats["p_holm"] for pair, stats in got["pairs"].items()}
    assert adjusted == holm(raw)
    # Three pairs: the two tiny p's are multiplied by 3 and 2; close vs good (the largest) by 1.
    assert adjusted["close vs good"] == raw["close vs good"] > 0.05
    assert adjusted["good vs noise"] == pytest.approx(3 * raw["good vs noise"])
    p = adjusted["close vs good"]
    assert got["vs_best"] == {
        "good": {"p_holm": None, "different": None, "text": "best"},
        "close": {
            "p_holm": p,
            "different": False,
            "text": "not significantly different from good (Holm p=0.39)",
        },
        "noise": {
            "p_holm": adjusted["good vs noise"],
            "different": True,
            "text": "lower than good (Holm p<0.001)",
        },
    }


def test_compare_models_with_one_model() -> None:
    good, _ = _two_models()
    got = compare_models({"only": good}, n_boot=10)
    assert got["best"] == "only" and got["pairs"] == {}
    assert got["vs_best"] == {"only": {"p_holm": None, "different": None, "text": "best"}}


# Validation, 3 malignant then 3 benign: a .9 .4 .3 | .6 .2 .0 and b .7 .8 .1 | .4 .4 .2 average
# to .8 .6 .2 | .5 .3 .1. Youden's J: at .8 1/3; at .6 2/3 (best); at .5 2/3 - 1/3; at .3 0; at .2
# 1 - 2/3; at .1 0. So the threshold is .6, which no test score equals: chosen on validation.
VAL = {
    "a": _frame([1, 1, 1, 0, 0, 0], [0.9, 0.4, 0.3, 0.6, 0.2, 0.0]),
    "b": _frame([1, 1, 1, 0, 0, 0], [0.7, 0.8, 0.1, 0.4, 0.4, 0.2]).iloc[::-1],  # any row order
}
# Test: a .9 .8 .3 | .9 .5 .1 and b .8 .9 .4 | .2 .4 .2 average to .85 .85 .35 | .55 .45 .15.
TEST = {
    "a": _frame([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.3, 0.9, 0.5, 0.1]),
    "b": _frame([1, 1, 1, 0, 0, 0], [0.8, 0.9, 0.4, 0.2, 0.4, 0.2]),
    "c": _frame([1, 1, 1, 0, 0, 0], [0.0] * 6),  # not a member: ignored
}


def test_ensemble_threshold_from_validation_metrics_on_test() -> None:
    metrics, frame = ensemble(VAL, TEST, ["a", "b"], n_boot=200)
    assert metrics["threshold"] == pytest.approx(0.6)
    assert list(frame["score"]) == pytest.approx([0.85, 0.85, 0.35, 0.55, 0.45, 0.15])
    # Called at .6: the two .85s only -> sensitivity 2/3, specificity 1, accuracy 5/6.
    # At .5 the benign .55 is called too -> 4/6. AUC: each .85 beats the 3 benign, .35 beats .15
    # -> 7/9. Brier: (.15² x 3 + .65² + .55² + .45²) / 6. Every score is alone in its tenth but
    # the two .85s (both malignant), so ECE is the mean |truth - score|: (.15 x 3 + .65 + .55
    # + .45) / 6 = .35.
    assert metrics["sensitivity"] == pytest.approx(2 / 3) and metrics["specificity"] == 1.0
    assert metrics["balanced_accuracy"] == pytest.approx(5 / 6)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["accuracy_at_0_5"] == pytest.approx(4 / 6)
    assert metrics["auc"] == pytest.approx(7 / 9)
    assert metrics["brier"] == pytest.approx((3 * 0.15**2 + 0.65**2 + 0.55**2 + 0.45**2) / 6)
    assert metrics["ece"] == pytest.approx(0.35)
    assert metrics["prevalence"] == 0.5 and metrics["n"] == 6
    assert metrics["members"] == ["a", "b"] and metrics["rule"] == "youden"
    for key in ("auc", "sensitivity", "specificity", "balanced_accuracy", "accuracy"):
        assert 0 <= metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"] <= 1
    with pytest.raises(ValueError, match=r"members \['d'\]"):
        ensemble(VAL, TEST, ["a", "d"], n_boot=10)


def test_top_k_orders_by_validation_auc_nan_last_ties_by_name() -> None:
    aucs = {"a": 0.7, "b": 0.9, "c": math.nan, "d": 0.9, "e": 0.6}
    assert top_k(aucs, 3) == ["b", "d", "a"]  # b and d tie at .9: by name
    assert top_k(aucs, 10) == ["b", "d", "a", "e", "c"]  # NaN last
    with pytest.raises(ValueError, match="at least 1"):
        top_k(aucs, 0)
