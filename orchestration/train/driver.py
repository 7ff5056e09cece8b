"""Build and run one Ray Train job (Train V2), then evaluate its best model once on the test split.

``trainer_for`` builds the ``TorchTrainer``; ``run_training`` is what ``mammobench train`` runs;
``evaluate_checkpoint`` scores a checkpoint's best model on a split in one Ray task. Test data is
never seen during training, model selection or early stopping. The model libraries are imported
where a model is built: a trial's actor plans its datasets without them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from orchestration.train.config import TrainConfig
from orchestration.train.data import (
    build_datasets,
    check_splits,
    class_weights,
    data_config,
    iter_split,
    read_metadata,
)
from orchestration.train.tasks import collate, concat_outputs, make_task
from orchestration.train.worker import (
    BEST_FILE,
    STARTUP_KEY,
    STATE_FILE,
    train_fn_per_worker,
)


def trainer_for(
    cfg: TrainConfig,
    storage: str,
    name: str,
    callbacks: list | None = None,
    started: float | dict[str, float] | None = None,
):
    """The ``TorchTrainer`` of one job: datasets stream from the shards, DDP when workers > 1
    (split by Ray Train; a single worker makes its stream itself: ``worker._Stream``).

    ``started`` (``time.time()`` when the job or trial began; now when not given) is what the
    workers' start-up figures (``first_step_s``, ``startup_*``) are measured from; a trial gives
    ``{"started": ..., "trial_fn": ...}`` (its actor loading the trainable, its function's).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    marks = dict(started) if isinstance(started, dict) else {"started": started or time.time()}
    check_splits(cfg)
    datasets = build_datasets(cfg) if cfg.workers > 1 else None  # one worker makes its own
    weights = class_weights(cfg)
    marks["planned"] = time.time()
    use_gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": cfg.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=cfg.to_dict() | {"_class_weights": weights, STARTUP_KEY: marks},
        scaling_config=ScalingConfig(
            num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=data_config(cfg),
    )


def check_job(cfg: TrainConfig) -> None:
    """Fail at once on an unknown model, a model of another task, prepared data with an empty
    split, or pretrained weights that cannot be had (never train random weights labelled
    "pretrained")."""
    from models import WeightsNotFoundError, model_info, weights_available

    info = model_info(cfg.model)
    if info["task"] != cfg.task:
        raise ValueError(f"{cfg.model} is a {info['task']} model, not a {cfg.task} one")
    check_splits(cfg)
    if not cfg.pretrained:
        return
    ok, reason = weights_available(cfg.model_spec())
    if not ok:
        raise WeightsNotFoundError(reason)


def open_checkpoint(path: str, storage: str):
    """A ``ray.train.Checkpoint`` at ``path`` on the storage's filesystem (local, NFS or bucket)."""
    import pyarrow.fs
    from ray.train import Checkpoint

    if "://" in storage:
        filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage)
        return Checkpoint(path, filesystem=filesystem)
    return Checkpoint(path)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The loop state stored beside a checkpoint's best model (epochs, best scores)."""
    return torch.load(Path(path) / STATE_FILE, weights_only=True, map_location="cpu")


def load_best_model(cfg: TrainConfig, checkpoint_dir: str | Path) -> nn.Module:
    """The best model a checkpoint folder holds, in eval mode (its weights replace any
    pretrained ones, so none are loaded)."""
    from models import build_model

    model = build_model(replace(cfg.model_spec(), pretrained=False))
    state = torch.load(Path(checkpoint_dir) / BEST_FILE, weights_only=True, map_location="cpu")
    model.load_state_dict(state)
    return model.eval()


def evaluate_local(cfg: TrainConfig, checkpoint_dir: str, split: str = "test") -> dict[str, Any]:
    """Score the checkpoint's best model on ``split`` here, streaming its shards.

    A classifier's operating point is chosen on the validation split by ``cfg.threshold_rule``
    and applied unchanged to ``split``; both splits' predictions come back (``predictions``:
    one table per split, a column per field, the shards' metadata beside each score) for the
    paired tests, subgroups and ensembles that compare models on the same cases.
    """
    model = load_best_model(cfg, checkpoint_dir)
    if cfg.task != "classification":
        return score_model(cfg, model, split)
    val = _predict(cfg, model, _task(cfg), "val")
    threshold = validation_threshold(val, cfg.threshold_rule) if val else None
    result = score_model(cfg, model, split, threshold)
    if result["n"] and val:
        result["predictions"]["val"] = prediction_table(cfg, "val", val)
    return result


def score_model(
    cfg: TrainConfig, model: nn.Module, split: str = "test", threshold: float | None = None
) -> dict[str, Any]:
    """A model's metrics on ``split`` of ``cfg.data`` (with CIs: ``cfg.bootstrap``); a
    classifier's binary metrics at ``threshold`` and its predictions beside the metadata."""
    task = _task(cfg)
    outputs = _predict(cfg, model, task, split)
    if not outputs:
        return {"n": 0}
    if cfg.task != "classification":
        return {"n": len(outputs["patient_id"]), **task.metrics(outputs, cfg.bootstrap)}
    chosen = {} if threshold is None else {"threshold": threshold}
    metrics = task.metrics(outputs, cfg.bootstrap, **chosen)
    tables = {split: prediction_table(cfg, split, outputs)}
    return {"n": len(outputs["patient_id"]), **metrics, "predictions": tables}


def _task(cfg: TrainConfig):
    return make_task(cfg.task, cfg.in_chans, lesion_only=cfg.lesion_detector)


def _predict(cfg: TrainConfig, model: nn.Module, task, split: str) -> dict[str, Any]:
    parts = [task.predict(model, collate(b)) for b in iter_split(cfg, split, cfg.batch_size)]
    return concat_outputs(parts)


def validation_threshold(val: dict[str, Any], rule: str) -> float:
    """A classifier's operating point on its malignant probability, chosen by ``rule`` on the
    validation split's predictions."""
    from orchestration.train.operating_point import choose_threshold

    probs, labels = np.asarray(val["probs"]), np.asarray(val["label"])
    return choose_threshold(labels == probs.shape[1] - 1, probs[:, -1], rule)


def prediction_table(cfg: TrainConfig, split: str, outputs: dict[str, Any]) -> dict[str, list]:
    """One split's classifier predictions beside the shards' metadata, row by row: ``key``,
    ``patient_id``, side, view, lesion type, density, BI-RADS assessment, subtlety, ``label``,
    ``positive`` (malignant) and ``score`` (the malignant probability)."""
    meta = read_metadata(cfg, split)
    if meta["key"] != list(outputs["key"]):
        raise RuntimeError(f"{cfg.data}: {split} predictions are not in the shards' row order")
    probs, labels = np.asarray(outputs["probs"]), np.asarray(outputs["label"])
    return meta | {
        "label": labels.tolist(),
        "positive": (labels == probs.shape[1] - 1).tolist(),
        "score": probs[:, -1].astype(float).tolist(),
    }


def _evaluate_task(cfg: TrainConfig, checkpoint, split: str) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        return evaluate_local(cfg, folder, split)


def evaluate_checkpoint(cfg: TrainConfig, checkpoint, split: str = "test") -> dict[str, Any]:
    """Score a ``ray.train.Checkpoint`` in one Ray task (on a GPU when the job used GPUs)."""
    import ray

    gpus = 1 if cfg.gpus_per_worker > 0 else 0
    return ray.get(
        ray.remote(num_cpus=1, num_gpus=gpus)(_evaluate_task).remote(cfg, checkpoint, split)
    )


def run_training(cfg: TrainConfig, storage: str) -> dict[str, Any]:
    """Train (resuming a job of the same config if one was interrupted) and test the best model."""
    started = time.time()
    cfg = cfg.with_manifest()
    check_job(cfg)
    name = cfg.run_name()
    from orchestration.train.progress import epoch_lines

    with epoch_lines(cfg.metric, cfg.epochs) as callbacks:
        result = trainer_for(cfg, storage, name, callbacks, started).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = read_checkpoint(folder)
    test = evaluate_checkpoint(cfg, result.checkpoint)
    return {
        "run": name,
        "path": result.path,
        "checkpoint": result.checkpoint.path,
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"] + 1,
        "starts": state["starts"],
        "trainable_params": result.metrics.get("trainable_params"),
        "ranks_in_sync": result.metrics.get("ranks_in_sync"),
        "param_checksums": result.metrics.get("param_checksums"),
        "val": {k.removeprefix("val_"): v for k, v in state["best_scores"].items()},
        "test": test,
    }
