"""``train_fn_per_worker``: the training loop each Ray Train worker runs.

Per epoch: stream this worker's training shard (augmented), step, evaluate the whole validation
split (predictions gathered across workers), then ``ray.train.report`` the metrics, with a checkpoint
from rank 0. A checkpoint holds the latest state (epoch, model, optimiser, scheduler, scaler, RNG) to
resume from, and the best model so far (by the validation metric) for the final test evaluation.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from models import build_model, trainable_params
from orchestration.train.config import TrainConfig
from orchestration.train.data import epoch_batches
from orchestration.train.tasks import collate, concat_outputs, make_task

STATE_FILE, BEST_FILE, BEST_VAL_FILE = "state.pt", "best_model.pt", "best_val.pt"
PREVIEW_ROWS = 8


@dataclass
class Best:
    """The best model so far and what it predicted on validation (for the run's plots)."""

    model: dict[str, Any] | None = None
    val: dict[str, Any] | None = None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=2)
    return None


def _checksums(model: torch.nn.Module) -> list[float]:
    """Every rank's parameter sum: DDP keeps replicas identical, so all entries must match."""
    total = sum(float(p.detach().double().sum()) for p in _unwrap(model).parameters())
    if not dist.is_available() or not dist.is_initialized():
        return [total]
    sums: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(sums, total)
    return sums


def _gather(outputs: dict[str, Any]) -> dict[str, Any]:
    """Every worker's predictions, joined in rank order (all ranks get the same result)."""
    if _rank_world()[1] == 1:
        return outputs
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, outputs)
    return concat_outputs([p for p in parts if p])


def _rank_world() -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere, so every rank evaluates one model."""
    if _rank_world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def evaluate(task, model: torch.nn.Module, batches, device) -> tuple[dict[str, Any], Any]:
    """Predict a whole split and gather it; also return its first batch (for previews).

    Every rank reads the whole (unsplit) split and predicts every ``world``-th batch, so no row is
    dropped to even out the ranks. The forward runs on the unwrapped module: ranks may hold
    different batch counts, and a DDP forward would wait on the others.
    """
    net = _unwrap(model)
    _sync_buffers(net)
    net.eval()
    rank, world = _rank_world()
    parts, first = [], None
    for index, batch in enumerate(batches):
        first = batch if first is None else first
        if index % world == rank:
            parts.append(task.predict(net, collate(batch, device)))
    return _gather(concat_outputs(parts)), first


def _train_epoch(task, model, optimizer, batches, device, scaler) -> float:
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        batch = collate(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=scaler is not None):
            loss = task.loss(model, batch)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(batch["label"])
        count += len(batch["label"])
    return total / max(count, 1)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so ``torch.load(weights_only=True)`` reads them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _save(folder: Path, loop: dict[str, Any], best: Best) -> ray.train.Checkpoint:
    torch.save({**loop, "rng": _rng_state()}, folder / STATE_FILE)
    torch.save(best.model, folder / BEST_FILE)
    torch.save(best.val, folder / BEST_VAL_FILE)
    return ray.train.Checkpoint.from_directory(str(folder))


def _tensors(obj: Any) -> Any:
    """Numpy arrays -> tensors, recursively, so ``torch.load(weights_only=True)`` reads them."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else list(obj)
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensors(v) for v in obj]
    return obj


def _restore(model, optimizer, scheduler, scaler) -> tuple[dict[str, Any], Best]:
    """Resume from the latest reported checkpoint, if there is one."""
    loop = {
        "epoch": 0,
        "best": -math.inf,
        "best_epoch": -1,
        "stale": 0,
        "best_scores": {},
        "starts": [0],
        "history": [],  # every epoch's scalar metrics, re-sent after a restart
    }
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return loop, Best()
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True)
        best = Best(
            *(
                torch.load(Path(folder) / name, weights_only=True)
                for name in (BEST_FILE, BEST_VAL_FILE)
            )
        )
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for obj, key in ((scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None and state.get(key) is not None:
            obj.load_state_dict(state[key])
    _set_rng_state(state["rng"])
    restored = loop | {k: state[k] for k in loop if k in state}
    restored["starts"] = [*state["starts"], state["epoch"]]  # where each attempt began
    return restored, best


@dataclass
class _Job:
    """What one worker trains with, built once per (re)start."""

    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    task: Any
    n_trainable: int

    @classmethod
    def build(cls, cfg: TrainConfig, class_weights: list[float] | None) -> _Job:
        device = ray.train.torch.get_device()
        model = build_model(cfg.model_spec())
        n_trainable = trainable_params(model)
        model = ray.train.torch.prepare_model(model) if cfg.workers > 1 else model.to(device)
        optimizer = _optimizer(cfg, model)
        scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
        weights = torch.tensor(class_weights) if class_weights else None
        task = make_task(cfg.task, cfg.in_chans, weights, cfg.lesion_detector)
        return cls(
            cfg, device, model, optimizer, _scheduler(cfg, optimizer), scaler, task, n_trainable
        )


def _epoch(job: _Job, loop: dict[str, Any], best: Best, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate, update ``best``; return the metrics to report."""
    cfg = job.cfg
    train, val = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    batches = epoch_batches(train, cfg, epoch, rank=_rank_world()[0])
    train_loss = _train_epoch(job.task, job.model, job.optimizer, batches, job.device, job.scaler)
    val_batches = val.iter_batches(batch_size=cfg.batch_size, batch_format="numpy")
    outputs, first = evaluate(job.task, job.model, val_batches, job.device)
    scores = {f"val_{k}": v for k, v in job.task.metrics(outputs).items() if _scalar(v)}
    scores["val_n"] = len(outputs["patient_id"])  # rows evaluated: the whole split
    score = scores.get(cfg.metric, float("nan"))
    score = -math.inf if math.isnan(score) else score
    if score > loop["best"] or best.model is None:
        loop.update(best=score, best_epoch=epoch, stale=0, best_scores=scores)
        best.model = copy.deepcopy(_unwrap(job.model).state_dict())
        best.val = _val_record(job, outputs, first)
    else:
        loop["stale"] += 1
    _step(job.scheduler, score)
    loop["epoch"] = epoch + 1
    sums = _checksums(job.model)
    metrics = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        **scores,
        "best_epoch": loop["best_epoch"] + 1,
        f"best_{cfg.metric}": loop["best"],
        "lr": job.optimizer.param_groups[0]["lr"],
        "trainable_params": job.n_trainable,
        "start_epoch": loop["starts"][-1],
        "param_checksums": sums,
        "ranks_in_sync": len(set(sums)) == 1,
        "completed": loop["stale"] > cfg.patience or loop["epoch"] >= cfg.epochs,
    }
    loop["history"].append({k: v for k, v in metrics.items() if _scalar(v)})
    return metrics


def _val_record(job: _Job, outputs: dict[str, Any], first: Any) -> dict[str, Any] | None:
    """Rank 0 keeps the best epoch's validation predictions and a few examples for plots."""
    if ray.train.get_context().get_world_rank() != 0:
        return None
    keep = {k: v for k, v in outputs.items() if k in ("probs", "label", "scores", "patient_id")}
    preview = {}
    if first is not None:
        rows = {k: v[:PREVIEW_ROWS] for k, v in first.items()}
        with torch.no_grad():  # the unwrapped model: rank 0 alone runs this forward
            preview = job.task.preview(_unwrap(job.model), collate(rows, job.device))
    return _tensors({"outputs": keep, "preview": preview})


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (Train V2): one call per worker."""
    config = dict(config)
    class_weights = config.pop("_class_weights", None)
    cfg = TrainConfig.from_dict(config)
    ray.data.DataContext.get_current().enable_progress_bars = False  # iteration bars, per epoch
    torch.manual_seed(cfg.seed)
    job = _Job.build(cfg, class_weights)
    loop, best = _restore(job.model, job.optimizer, job.scheduler, job.scaler)
    replay = len(loop["starts"]) > 1
    for epoch in range(loop["epoch"], cfg.epochs):
        metrics = _epoch(job, loop, best, epoch)
        if replay:  # a restarted run re-sends the epochs before it: their reports may be lost
            metrics["history"], replay = list(loop["history"]), False
        _report(metrics, loop, job, best)
        if metrics["completed"]:  # epochs run out or early stopping (Tune reserves "done")
            break


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step(scheduler, score: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(score if math.isfinite(score) else 0.0)
    elif scheduler is not None:
        scheduler.step()


def _report(metrics: dict[str, Any], loop: dict[str, Any], job: _Job, best: Best) -> None:
    """Report once per epoch; only rank 0 writes the checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    optional = {"scheduler": job.scheduler, "scaler": job.scaler}
    state = {
        **loop,
        "model": _unwrap(job.model).state_dict(),
        "optimizer": job.optimizer.state_dict(),
        **{k: v.state_dict() if v is not None else None for k, v in optional.items()},
    }
    with tempfile.TemporaryDirectory(prefix="mammobench-ckpt-") as folder:
        ray.train.report(metrics, checkpoint=_save(Path(folder), state, best))
