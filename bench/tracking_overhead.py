"""Tracking overhead: a trial's epochs with the project's MLflow logging and without, in one run.

The same one-trial sweep (FIFO, every setting pinned, so both run the same job) goes through the
project's Tuner (``orchestration.tune._tuner``) alternately with the sweep's ``TrialTracker``
(one child run, every epoch's metrics logged to a local sqlite store: the project's logging
frequency) and with a callback that logs nothing. Compared: the trial's wall time per epoch
(Tune's ``time_this_iter_s``: it includes any wait the driver's logging causes) and its workers'
training images/s, the median of the epochs after the first. The time the tracker spends in
MLflow calls is measured directly too (its client timed call by call). Ends with one JSON line;
``ratio`` = epoch time with tracking / without. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/tracking_overhead.py [--patients 60] [--size 64] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import prepared_classification, training_parser


class TimedClient:
    """An ``MlflowClient`` whose calls are timed (seconds per method name)."""

    def __init__(self, client: Any) -> None:
        self._client, self.seconds = client, {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def one_trial(args: argparse.Namespace, data: Path, home: Path, name: str, tracked: bool) -> dict:
    """One trial; its per-epoch timings and (tracked) the seconds spent in MLflow calls."""
    from mlflow import MlflowClient
    from ray.tune import Callback

    from orchestration.results.tracking import SweepRun, TrialTracker, experiment_id
    from orchestration.sweep_config import SweepConfig
    from orchestration.tune import _tuner, resolve_space

    fixed = {"pretrained": False, "lr": 1e-3, "batch_size": args.batch_size, "weight_decay": 1e-4}
    sweep = SweepConfig(
        model=args.model,
        data=str(data),
        max_epochs=args.epochs,
        scheduler="fifo",
        name=name,
        train={"bootstrap": 0},
        fixed=fixed,
    )
    base = sweep.base()
    space, _ = resolve_space(None, base.task, base.model, None, fixed)
    callback, client = Callback(), None
    if tracked:
        uri = f"sqlite:///{home / 'mlflow.db'}"
        exp = experiment_id(MlflowClient(uri), "overhead", home / "artifacts")
        parent = SweepRun.open(MlflowClient(uri), exp, name, resume=False, parent=None, tags={})
        callback = TrialTracker(uri, exp, parent.run_id, base.to_dict())
        client = callback._client = TimedClient(MlflowClient(uri))  # not pickled with the Tuner
    (result,) = _tuner(sweep, space, name, str(home / "ray_results"), callback, base).fit()
    frame = result.metrics_dataframe.sort_values("epoch")
    return {
        "epoch_wall_s": frame["time_this_iter_s"].tolist(),
        "images_per_s": frame["train_images_per_s"].tolist(),
        "mlflow_s": client.seconds if client else {},
    }


def main() -> None:
    parser = training_parser(__doc__, patients=60, size=64, epochs=6)
    parser.add_argument("--repeats", type=int, default=2, help="trials of each, alternating")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepared_classification(root, args.patients, args.size, shard_size=16)
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for i in range(args.repeats):
            for tracked in (False, True):
                name = f"overhead-{'tracked' if tracked else 'plain'}-{i}"
                runs[tracked].append(one_trial(args, data, root, name, tracked))
    result = _result(runs[True], runs[False], args.epochs)
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    print(json.dumps(result))


def _steady(runs: list[dict], key: str) -> float:
    """Median over runs of each run's median after its first epoch (start-up)."""
    return statistics.median(statistics.median(run[key][1:] or run[key]) for run in runs)


def _result(tracked: list[dict], plain: list[dict], epochs: int) -> dict[str, Any]:
    wall_t, wall_p = _steady(tracked, "epoch_wall_s"), _steady(plain, "epoch_wall_s")
    calls = [sum(run["mlflow_s"].values()) for run in tracked]
    per_epoch = [run["mlflow_s"].get("log_batch", 0.0) / epochs for run in tracked]
    return {
        "tracked_epoch_s": round(wall_t, 3),
        "plain_epoch_s": round(wall_p, 3),
        "tracked_images_per_s": round(_steady(tracked, "images_per_s"), 1),
        "plain_images_per_s": round(_steady(plain, "images_per_s"), 1),
        "mlflow_s_per_trial": round(statistics.mean(calls), 3),
        "mlflow_log_batch_s_per_epoch": round(statistics.mean(per_epoch), 4),
        "mlflow_share_of_epoch": round(statistics.mean(per_epoch) / wall_p, 4),
        "mlflow_calls_by_method_s": {
            k: round(statistics.mean(r["mlflow_s"].get(k, 0.0) for r in tracked), 3)
            for k in sorted({k for r in tracked for k in r["mlflow_s"]})
        },
        "ratio": round(wall_t / wall_p, 3),
    }


if __name__ == "__main__":
    main()
