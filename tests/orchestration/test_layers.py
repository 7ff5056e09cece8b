"""orchestration/'s layers import one way: train (one Ray Train job) knows nothing of sweeps or
results; results (MLflow, leaderboard, reports) reads what training wrote and never opens a
checkpoint or runs training code."""

from __future__ import annotations

from pathlib import Path

import orchestration
from tests.imports import violations

ROOT = Path(orchestration.__file__).parent
ABOVE = ("orchestration.tune", "orchestration.benchmark", "orchestration.cli")


def test_train_imports_no_sweep_results_or_tracking() -> None:
    forbidden = (*ABOVE, "orchestration.results", "mlflow", "ray.tune")
    assert violations(ROOT / "train", forbidden) == []


def test_results_never_open_checkpoints_or_run_training() -> None:
    training = tuple(f"orchestration.train.{m}" for m in ("data", "tasks", "worker", "driver"))
    assert violations(ROOT / "results", (*ABOVE, *training)) == []
