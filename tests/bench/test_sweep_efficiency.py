"""``bench/sweep_efficiency.py``'s replay: measured curves through the sweep's own Tune ASHA
scheduler in random orders, to show what the order of arrival alone does to ASHA's epochs."""

from __future__ import annotations

import argparse
import importlib

import pytest

from tests.bench.bench_run import REPO


def replay(monkeypatch, curves: list[list[float]], reduction: int, orders: int = 400) -> dict:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    bench = importlib.import_module("sweep_efficiency")
    args = argparse.Namespace(
        model="mobilenetv2",
        epochs=len(curves[0]),
        reduction_factor=reduction,
        grace=1,
        seed=0,
        replay_orders=orders,
    )
    return bench.replay(curves, args, concurrent=1)


def test_the_first_trial_at_a_rung_goes_on_and_a_later_one_only_if_it_is_as_good(
    monkeypatch,
) -> None:
    # one at a time, rungs at 1 and 2 epochs: better-then-worse spends 2 + 1 epochs of 4,
    # worse-then-better 2 + 2; the better trial always runs to its end (no AUC lost)
    result = replay(monkeypatch, [[0.6, 0.7], [0.8, 0.9]], reduction=2)
    assert result["replay_orders"] == 400 and result["replay_concurrent"] == 1
    assert result["replay_ratio_p10_p90"] == [0.75, 1.0]
    assert 0.8 < result["replay_ratio_mean"] < 0.95  # both orders drawn, about evenly
    assert result["replay_auc_gap_mean"] == 0 and result["replay_met_share"] == 0


def test_many_trials_in_random_orders_spend_a_spread_of_epochs_and_can_meet_the_target(
    monkeypatch,
) -> None:
    curves = [[q / 20, q / 20 + 0.01, q / 20 + 0.02, q / 20 + 0.03] for q in range(16)]
    result = replay(monkeypatch, curves, reduction=4)  # rungs at 1 and 4 epochs
    low, high = result["replay_ratio_p10_p90"]
    assert 16 / 64 <= low < high <= 1  # at least one epoch each; the order moves the spend
    assert 0 < result["replay_met_share"] < 1
    assert result["replay_auc_gap_mean"] == 0  # the best trial beats every cut-off it meets
    assert result["replay_ratio_mean"] == pytest.approx((low + high) / 2, abs=0.15)
