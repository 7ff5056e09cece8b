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
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from models import build_model, trainable_params
from orchestration.train_config import TrainConfig
from orchestration.train_tasks import collate, concat_outputs, make_task

STATE_FILE, BEST_FILE = "state.pt", "best_model.pt"


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


def _gather(outputs: dict[str, Any]) -> dict[str, Any]:
    """Every worker's predictions, joined in rank order (all ranks get the same result)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return outputs
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, outputs)
    return concat_outputs([p for p in parts if p])


def evaluate(task, model: torch.nn.Module, batches, device) -> dict[str, Any]:
    """Predict a whole split (this worker's share), gather it, and return its outputs."""
    model.eval()
    parts = [task.predict(model, collate(batch, device)) for batch in batches]
    return _gather(concat_outputs(parts))


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
        total, count = (
            total + float(loss.detach()) * len(batch["label"]),
            count + len(batch["label"]),
        )
    return total / max(count, 1)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so ``torch.load(weights_only=True)`` reads them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}  # fmt: skip


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _save(loop: dict[str, Any], best_state: dict[str, Any]) -> ray.train.Checkpoint:
    folder = Path(tempfile.mkdtemp(prefix="mammobench-ckpt-"))
    torch.save({**loop, "rng": _rng_state()}, folder / STATE_FILE)
    torch.save(best_state, folder / BEST_FILE)
    return ray.train.Checkpoint.from_directory(str(folder))


def _restore(model, optimizer, scheduler, scaler) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Resume from the latest reported checkpoint, if there is one."""
    loop = {"epoch": 0, "best": -math.inf, "best_epoch": -1, "stale": 0, "best_scores": {}}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return loop, None
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True)
        best = torch.load(Path(folder) / BEST_FILE, weights_only=True)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for obj, key in ((scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None and state.get(key) is not None:
            obj.load_state_dict(state[key])
    _set_rng_state(state["rng"])
    return {k: state[k] for k in loop}, best


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (Train V2): one call per worker."""
    config = dict(config)
    weights = config.pop("_class_weights", None)
    cfg = TrainConfig.from_dict(config)
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    model = build_model(cfg.model_spec())
    n_trainable = trainable_params(model)
    model = ray.train.torch.prepare_model(model) if cfg.workers > 1 else model.to(device)
    optimizer = _optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    task = make_task(cfg.task, cfg.in_chans, torch.tensor(weights) if weights else None)
    loop, best_state = _restore(model, optimizer, scheduler, scaler)
    train, val = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(loop["epoch"], cfg.epochs):
        batches = train.iter_batches(batch_size=cfg.batch_size, batch_format="numpy",
                                     local_shuffle_buffer_size=4 * cfg.batch_size)  # fmt: skip
        train_loss = _train_epoch(task, model, optimizer, batches, device, scaler)
        outputs = evaluate(
            task, model, val.iter_batches(batch_size=cfg.batch_size, batch_format="numpy"), device
        )
        scores = {f"val_{k}": v for k, v in task.metrics(outputs).items() if _scalar(v)}
        score = scores.get(cfg.metric, float("nan"))
        score = -math.inf if math.isnan(score) else score
        if score > loop["best"] or best_state is None:
            loop.update(best=score, best_epoch=epoch, stale=0, best_scores=scores)
            best_state = copy.deepcopy(_unwrap(model).state_dict())
        else:
            loop["stale"] += 1
        _step(scheduler, score)
        loop["epoch"] = epoch + 1
        stop = loop["stale"] > cfg.patience or loop["epoch"] >= cfg.epochs
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, **scores,
                   "best_epoch": loop["best_epoch"] + 1, "best_" + cfg.metric: loop["best"],
                   "lr": optimizer.param_groups[0]["lr"], "trainable_params": n_trainable,
                   "done": stop}  # fmt: skip
        _report(metrics, loop, model, optimizer, scheduler, scaler, best_state)
        if stop:
            break


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step(scheduler, score: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(score if math.isfinite(score) else 0.0)
    elif scheduler is not None:
        scheduler.step()


def _report(metrics, loop, model, optimizer, scheduler, scaler, best_state) -> None:
    """Report once per epoch; only rank 0 writes the checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {**loop, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None}  # fmt: skip
    ray.train.report(metrics, checkpoint=_save(state, best_state))
