"""Sweep efficiency: an ASHA sweep beside the same trials run to completion (FIFO), in one run.

On a prepared synthetic set, one grid of trials (learning rates x optimisers, from scratch: the
same trials in both) is swept twice through ``run_sweep``, as ``mammobench tune`` runs it: once
with the project's ASHA scheduler (grace 1 epoch, reduction factor 4 unless given) and once with
FIFO, every trial to ``--epochs``. Reports each sweep's best validation AUC (the best epoch of its
best trial), the epochs it spent and its wall time, and ASHA's trials in the order they started
(``lr/optimizer:epochs``: asynchronous ASHA's promotions depend on that order). Ends with one JSON
line; ``ratio`` = ASHA's epochs / FIFO's. A benchmark, not a test: it asserts nothing.

One run sees one order of arrival. The replay then feeds FIFO's measured validation curves to the
sweep's own Tune ASHA scheduler in ``--replay-orders`` random orders, as many trials at once as the
sweep ran, every epoch one time step: the spread of ASHA's epochs and best AUC on these very trials
that comes from the order alone (``replay_*`` in the JSON line).

    .venv/bin/python bench/sweep_efficiency.py [--patients 60] [--size 32] [--epochs 8]
        [--reduction-factor 4] [--grace 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import prepared_classification, training_parser

from orchestration.sweep_config import SweepConfig

LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
OPTIMIZERS = ["adam", "adamw"]
REDUCTION = SweepConfig.__dataclass_fields__["reduction_factor"].default
GRACE = SweepConfig.__dataclass_fields__["grace_epochs"].default


def write_space(path: Path, lrs: list[float], optimizers: list[str]) -> Path:
    """A grid space file: every (lr, optimizer) pair is one trial, from scratch."""
    params = {
        "pretrained": {"value": False},
        "lr": {"grid": lrs},
        "optimizer": {"grid": optimizers},
    }
    path.write_text(yaml.safe_dump({"task": "classification", "params": params}))
    return path


def sweep(scheduler: str, args: argparse.Namespace, data: Path, space: Path, home: Path) -> dict:
    """One sweep through ``run_sweep``; its trials' epochs and best validation AUC."""
    from orchestration.settings import Settings
    from orchestration.tune import run_sweep

    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        storage=str(home / "ray_results"),
        address=None,
    )
    config = SweepConfig(
        model=args.model,
        data=str(data),
        space=str(space),
        max_epochs=args.epochs,
        scheduler=scheduler,
        name=f"efficiency-{scheduler}",
        max_concurrent=args.max_concurrent,
        reduction_factor=args.reduction_factor,
        grace_epochs=args.grace,
        seed=args.seed,
        train={"bootstrap": 0, "batch_size": args.batch_size},
    )
    start = time.perf_counter()
    summary = run_sweep(config, settings)
    wall = time.perf_counter() - start
    trials = summary["trials"]
    return {
        "best_val_auc": max(t["best_val_auc"] or 0.0 for t in trials),
        "epochs": sum(t["epochs"] or 0 for t in trials),
        "trials": len(trials),
        "stopped_early": sum(t["stopped_early"] for t in trials),
        "errors": sum(t["status"] == "ERROR" for t in trials),
        "wall_s": wall,
        "reduction_factor": config.reduction_factor,
        "grace_epochs": config.grace_epochs,
        "seed": config.seed,
        "curves": _curves(settings.tracking_uri, summary["parent_run_id"]),
        "order": _order(trials),
    }


def _order(trials: list[dict[str, Any]]) -> list[str]:
    """Each trial's learning rate, optimiser and epochs, in the order Tune started them."""
    started = sorted(trials, key=lambda t: t["trial_id"] or "")
    return [f"{t['config']['lr']:g}/{t['config']['optimizer']}:{t['epochs']}" for t in started]


def _curves(uri: str, parent: str) -> list[list[float]]:
    """Every trial's validation AUC by epoch, from MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent}'")
    curves = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_auc")
        curves.append([m.value for m in sorted(history, key=lambda m: m.step)])
    return curves


def main() -> None:
    parser = training_parser(__doc__, patients=60, size=32, epochs=8)
    parser.add_argument("--lrs", type=float, nargs="+", default=LRS)
    parser.add_argument("--optimizers", nargs="+", default=OPTIMIZERS)
    parser.add_argument("--max-concurrent", type=int, help="trials at once [default: what fits]")
    parser.add_argument("--reduction-factor", type=int, default=REDUCTION, help="ASHA's")
    parser.add_argument("--grace", type=int, default=GRACE, help="ASHA's first rung, epochs")
    parser.add_argument("--seed", type=int, default=0, help="both sweeps': grid order, training")
    parser.add_argument("--replay-orders", type=int, default=1000, help="orders replayed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepared_classification(root, args.patients, args.size, shard_size=16)
        space = write_space(root / "grid.yaml", args.lrs, args.optimizers)
        runs = {s: sweep(s, args, data, space, root / s) for s in ("asha", "fifo")}
    result = _result(runs["asha"], runs["fifo"])
    result.update(replay(runs["fifo"]["curves"], args, _concurrent(args)))
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    print(json.dumps(result))


def _concurrent(args: argparse.Namespace) -> int:
    """Trials at once, as ``run_sweep`` derived them on this cluster."""
    import ray

    from orchestration.train.config import TrainConfig
    from orchestration.tune import max_concurrent_trials

    base = TrainConfig(model=args.model, data=".")
    resources = ray.cluster_resources()
    fit = max_concurrent_trials(resources, base.workers, base.cpus_per_worker, 0.0)
    return args.max_concurrent or fit


def replay(curves: list[list[float]], args: argparse.Namespace, concurrent: int) -> dict[str, Any]:
    """FIFO's curves through the sweep's ASHA scheduler in ``args.replay_orders`` seeded orders:
    the mean and 10th-90th percentiles of its epochs / FIFO's, its mean gap to FIFO's best AUC,
    and the share of orders that meet the target (within 0.01 AUC at <= 40% of the epochs)."""
    from orchestration.train.config import TrainConfig
    from orchestration.tune import ranked_by

    sweep = SweepConfig(
        model=args.model,
        data=".",
        max_epochs=args.epochs,
        reduction_factor=args.reduction_factor,
        grace_epochs=args.grace,
    )
    metric = ranked_by(TrainConfig(model=args.model, data="."))
    rng, curves = random.Random(args.seed), [c for c in curves if c]  # an errored trial: none
    total, best = sum(map(len, curves)), max(max(c) for c in curves)
    runs = [_replay_once(curves, sweep, metric, concurrent, rng) for _ in range(args.replay_orders)]
    ratios = sorted(epochs / total for epochs, _ in runs)
    gaps = [best - found for _, found in runs]
    met = sum(epochs <= 0.4 * total and best - found <= 0.01 for epochs, found in runs)
    return {
        "replay_orders": len(runs),
        "replay_concurrent": concurrent,
        "replay_ratio_mean": round(sum(ratios) / len(ratios), 3),
        "replay_ratio_p10_p90": [round(ratios[i * len(ratios) // 10], 3) for i in (1, 9)],
        "replay_auc_gap_mean": round(sum(gaps) / len(gaps), 4),
        "replay_met_share": round(met / len(runs), 3),
    }


def _replay_once(
    curves: list[list[float]],
    sweep: SweepConfig,
    metric: str,
    concurrent: int,
    rng: random.Random,
) -> tuple[int, float]:
    """One order, ``concurrent`` trials at a time, through a fresh scheduler of ``sweep``'s:
    the epochs ASHA let run, and the best AUC among them."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from orchestration.tune import _scheduler

    asha = _scheduler(sweep)
    asha.set_search_properties(metric, "max")
    waiting = rng.sample(range(len(curves)), len(curves))
    running: list[tuple[int, float, int, int, Trial]] = []  # (step, tie-break, trial, epoch, stub)

    def start(now: int) -> None:
        index = waiting.pop()
        trial = Trial(f"replay{index}", stub=True)
        asha.on_trial_add(None, trial)
        heapq.heappush(running, (now + 1, rng.random(), index, 1, trial))

    for _ in range(min(concurrent, len(waiting))):
        start(0)
    epochs, found = 0, 0.0
    while running:
        now, _, index, epoch, trial = heapq.heappop(running)
        result = {"epoch": epoch, metric: max(curves[index][:epoch])}
        if asha.on_trial_result(None, trial, result) == TrialScheduler.CONTINUE:
            heapq.heappush(running, (now + 1, rng.random(), index, epoch + 1, trial))
            continue
        asha.on_trial_complete(None, trial, result)
        epochs, found = epochs + epoch, max(found, result[metric])
        if waiting:
            start(now)
    return epochs, found


def _result(asha: dict[str, Any], fifo: dict[str, Any]) -> dict[str, Any]:
    best_curve = max(fifo["curves"], key=max)
    return {
        "trials": fifo["trials"],
        "reduction_factor": asha["reduction_factor"],
        "grace_epochs": asha["grace_epochs"],
        "seed": asha["seed"],
        "asha_best_val_auc": round(asha["best_val_auc"], 4),
        "fifo_best_val_auc": round(fifo["best_val_auc"], 4),
        "auc_gap": round(fifo["best_val_auc"] - asha["best_val_auc"], 4),
        "asha_epochs": asha["epochs"],
        "fifo_epochs": fifo["epochs"],
        "asha_stopped_early": asha["stopped_early"],
        "errored_trials": asha["errors"] + fifo["errors"],
        "asha_wall_s": round(asha["wall_s"], 1),
        "fifo_wall_s": round(fifo["wall_s"], 1),
        "fifo_best_trial_epoch_of_best": best_curve.index(max(best_curve)) + 1,
        "asha_trials_in_start_order": asha["order"],
        "fifo_curves": [[round(auc, 4) for auc in curve] for curve in fifo["curves"]],
        "ratio": round(asha["epochs"] / fifo["epochs"], 3),
    }


if __name__ == "__main__":
    main()
