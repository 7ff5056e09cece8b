"""The training and evaluation steps, in plain PyTorch: no Ray import, so a GPU machine without Ray
runs them as the Train workers do (``bench/gpu_check.py``, ``mammobench doctor --gpu``).

Distributed runs (DDP on gloo or NCCL) are detected through ``torch.distributed``: one process, or
an uninitialised process group, is rank 0 of 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from orchestration.train.config import TrainConfig
from orchestration.train.tasks import collate, concat_outputs


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters only."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """The learning-rate schedule of ``cfg`` (None for a constant rate)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=2)
    return None


def step_scheduler(scheduler, score: float) -> None:
    """Advance the schedule once per epoch (the plateau schedule on the validation score)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(score if math.isfinite(score) else 0.0)
    elif scheduler is not None:
        scheduler.step()


def amp_for(device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Autocast dtype and gradient scaler for ``device``: bf16 where the GPU has it (no scaler),
    else fp16 with a scaler; full precision on CPU."""
    if device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def train_step(
    task,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    amp: tuple[torch.dtype | None, torch.amp.GradScaler | None] = (None, None),
) -> torch.Tensor:
    """One optimiser step on a collated batch; returns the (detached) loss."""
    dtype, scaler = amp
    images = batch["image"]
    device = (images[0] if isinstance(images, list) else images).device
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        loss = task.loss(model, batch)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_epoch(task, model, optimizer, batches: Iterable, device, amp=(None, None)) -> dict:
    """One pass over numpy ``batches``: the mean training loss per row, rows, seconds, and the
    seconds to the first batch and to the end of the first step (start-up of the epoch)."""
    model.train()
    start = time.perf_counter()
    total, count, marks = 0.0, 0, {}
    for batch in batches:
        marks.setdefault("first_batch_s", time.perf_counter() - start)
        batch = collate(batch, device)
        loss = train_step(task, model, optimizer, batch, amp)
        total += float(loss) * len(batch["label"])  # waits for the step: the clock is honest
        count += len(batch["label"])
        marks.setdefault("first_step_s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return {
        "train_loss": total / max(count, 1),
        "train_rows": count,
        "train_s": seconds,
        "train_images_per_s": count / seconds if seconds else 0.0,
        **marks,
    }


def checksums(model: torch.nn.Module) -> list[float]:
    """Every rank's parameter sum: DDP keeps replicas identical, so all entries must match."""
    total = sum(float(p.detach().double().sum()) for p in unwrap(model).parameters())
    if rank_world()[1] == 1:
        return [total]
    sums: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(sums, total)
    return sums


def _gather(outputs: dict[str, Any]) -> dict[str, Any]:
    """Every rank's predictions, joined in rank order (all ranks get the same result)."""
    if rank_world()[1] == 1:
        return outputs
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, outputs)
    return concat_outputs([p for p in parts if p])


def _sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere, so every rank evaluates one model."""
    if rank_world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def evaluate(task, model: torch.nn.Module, batches: Iterable, device) -> tuple[dict[str, Any], Any]:
    """Predict a whole split and gather it; also return its first batch (for previews).

    Every rank reads the whole (unsplit) split and predicts every ``world``-th batch, so no row is
    dropped to even out the ranks. The forward runs on the unwrapped module: ranks may hold
    different batch counts, and a DDP forward would wait on the others.
    """
    net = unwrap(model)
    _sync_buffers(net)
    net.eval()
    rank, world = rank_world()
    parts, first = [], None
    for index, batch in enumerate(batches):
        first = batch if first is None else first
        if index % world == rank:
            parts.append(task.predict(net, collate(batch, device)))
    return _gather(concat_outputs(parts)), first
