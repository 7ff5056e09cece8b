"""Trial start-up: seconds from a trial's start to its first optimiser step, by stage, beside Ray's
own floor (a bare ``TorchTrainer`` that takes one step of a two-weight model), in one run.

On one local Ray cluster, alternating so that both see a warm cluster:
1. bare: ``TorchTrainer`` of a function that builds ``nn.Linear(4, 2)`` and steps once, by itself
   and as the one trial of a ``Tuner`` (Ray's floor for a trial that runs Ray Train);
2. train: the project's Train job (``trainer_for``, as ``mammobench train`` runs it) on a prepared
   synthetic set, two epochs;
3. trial: a one-trial sweep (``run_sweep``, as ``mammobench tune`` runs it, MLflow included);
   the first sweep of the process is cold (Ray Data's worker processes import the decoding and
   augmentation libraries: ~4 s of CPU each), later ones find those processes warm, as every
   trial after a sweep's first does.
Each of ours reports its start-up with its first epoch (``first_step_s``, ``startup_*``: to the
worker function, model build, checkpoint restore, the first batch, the first step) and every
epoch's ``epoch_first_batch_s`` (the wait for data before an epoch's first step). ``--cpu`` adds
the CPU seconds of every kind of process from the cold sweep's call to its trial's first step
(``process_cpu.py``): what the start-up shares two cores with. Ends with one JSON
line; ``ratio`` = trial / bare trial. A trial's figures run from its actor loading the
trainable. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/trial_startup.py [--patients 40] [--size 32] [--model mobilenetv2] [--cpu]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from common import prepared_classification, training_parser
from process_cpu import ProcessCPU

from orchestration.trial import actor_started  # loaded with this module, as ours is with its own

STARTUP_KEYS = (
    "startup_trial_actor_s",
    "startup_datasets_s",
    "startup_to_worker_s",
    "startup_model_s",
    "startup_restore_s",
    "startup_first_batch_s",
    "startup_first_step_s",
)


def bare_fn(config: dict[str, Any]) -> None:
    """Ray's floor: one optimiser step of the smallest model, reported as a Train worker does."""
    entry = time.time()
    import ray.train
    import torch

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    now = time.time()
    started = config["started"]
    metrics = {"first_step_s": now - started, "startup_to_worker_s": entry - started}
    with tempfile.TemporaryDirectory() as folder:  # Train V2 keeps metrics with checkpoints
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def bare(storage: str, name: str, started: float | None = None, callbacks=()) -> dict[str, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        bare_fn,
        train_loop_config={"started": started or time.time()},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=storage, callbacks=list(callbacks)),
    )
    return dict(trainer.fit().metrics)


def bare_trial_fn(config: dict[str, Any]) -> None:
    """A Tune trial whose Train job is the bare one, timed from its actor loading the trainable,
    as ours are."""
    from ray.tune.integration.ray_train import TuneReportCallback

    bare(config["storage"], config["name"], actor_started(), [TuneReportCallback()])


def bare_trial(storage: str, name: str) -> dict[str, float]:
    from ray import tune

    from orchestration.tune import TRIAL_DRIVER_RESOURCES

    tuner = tune.Tuner(
        tune.with_resources(bare_trial_fn, TRIAL_DRIVER_RESOURCES),
        param_space={"storage": storage, "name": f"{name}-train"},
        run_config=tune.RunConfig(name=name, storage_path=storage),
    )
    (result,) = tuner.fit()
    return dict(result.metrics)


def train(cfg, storage: str, name: str) -> list[dict[str, Any]]:
    """The project's Train job; every epoch's reported metrics (rank 0's)."""
    from orchestration.train.driver import trainer_for
    from orchestration.train.report_log import ReportLog, read_report_log

    log = Path(storage) / f"{name}.jsonl"
    trainer_for(cfg, storage, name, [ReportLog(log)], started=time.time()).fit()
    return read_report_log(log)


def trial(cfg, home: Path) -> dict[str, float]:
    """A one-trial sweep; the trial's first-epoch metrics as MLflow holds them."""
    from mlflow import MlflowClient

    from orchestration.settings import Settings
    from orchestration.sweep_config import SweepConfig
    from orchestration.tune import run_sweep

    home.mkdir(parents=True, exist_ok=True)
    uri, storage = f"sqlite:///{home / 'mlflow.db'}", str(home / "ray_results")
    settings = Settings(home=home, tracking_uri=uri, storage=storage, address=None)
    sweep = SweepConfig(
        model=cfg.model,
        data=cfg.data,
        max_epochs=cfg.epochs,
        scheduler="fifo",
        train={"bootstrap": 0},
        fixed={"pretrained": False, "batch_size": cfg.batch_size},  # the same job as train
    )
    summary = run_sweep(sweep, settings)
    client = MlflowClient(uri)
    parent = summary["parent_run_id"]
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent}'")
    keys = ("first_step_s", *STARTUP_KEYS)
    figures = {k: _at_step(client, run.info.run_id, k, 1) for k in keys if k in run.data.metrics}
    return figures | {"run_started": run.info.start_time / 1000}


def _at_step(client, run_id: str, key: str, step: int) -> float:
    return next(m.value for m in client.get_metric_history(run_id, key) if m.step == step)


def main() -> None:
    parser = training_parser(__doc__, patients=40, size=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (the first is cold)")
    parser.add_argument(
        "--cpu", action="store_true", help="CPU seconds by process in the cold trial's start-up"
    )
    args = parser.parse_args()

    from orchestration.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepared_classification(root, args.patients, args.size, shard_size=16)
        cfg = TrainConfig(model=args.model, data=str(data), epochs=2, batch_size=args.batch_size)
        cfg = cfg.with_manifest()
        storage = str(root / "storage")
        bares, trains, bare_trials, swept = [], [], [], []
        for i in range(args.repeats):
            bares.append(bare(storage, f"bare-{i}"))
            trains.append(train(cfg, storage, f"train-{i}"))
            bare_trials.append(bare_trial(storage, f"bare-trial-{i}"))
            with ProcessCPU() if args.cpu and i == 0 else nullcontext() as cpu:
                started = time.time()
                swept.append(trial(cfg, root / f"home-{i}"))
            if cpu is not None:  # from the sweep's call to (about) its trial's first step
                end = swept[0]["run_started"] + swept[0]["first_step_s"]
                cold_cpu = {"cold_trial_cpu_s": cpu.seconds(started, end)}
    result = _result(bares, trains, swept, bare_trials[-1]) | (cold_cpu if args.cpu else {})
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    print(json.dumps(result))


def _result(bares: list, trains: list, swept: list, bare_swept: dict) -> dict[str, Any]:
    """The warm (last) run of each, the cold (first) beside it, and the stages of ours."""
    first, last = trains[-1][0], trains[-1][-1]
    out: dict[str, Any] = {
        "trial_to_first_step_s": round(swept[-1]["first_step_s"], 2),
        "cold_trial_to_first_step_s": round(swept[0]["first_step_s"], 2),
        "train_to_first_step_s": round(first["first_step_s"], 2),
        "bare_trainer_first_step_s": round(bares[-1]["first_step_s"], 2),
        "bare_trial_first_step_s": round(bare_swept["first_step_s"], 2),
        "cold_train_to_first_step_s": round(trains[0][0]["first_step_s"], 2),
        "cold_bare_trainer_first_step_s": round(bares[0]["first_step_s"], 2),
        "bare_to_worker_s": round(bares[-1]["startup_to_worker_s"], 2),
    }
    out |= {f"train_{k}": round(first[k], 2) for k in STARTUP_KEYS if k in first}
    out |= {f"trial_{k}": round(v, 2) for k, v in swept[-1].items() if k in STARTUP_KEYS}
    out |= {f"cold_trial_{k}": round(v, 2) for k, v in swept[0].items() if k in STARTUP_KEYS}
    later = [r["epoch_first_batch_s"] for r in trains[-1][1:]]
    out["later_epoch_first_batch_s"] = round(statistics.mean(later), 2) if later else None
    out["later_epoch_s"] = round(last["epoch_s"], 2)
    out["later_epoch_eval_s"] = round(last["epoch_eval_s"], 2)
    out["ratio"] = round(out["trial_to_first_step_s"] / out["bare_trial_first_step_s"], 2)
    return out


if __name__ == "__main__":
    main()
