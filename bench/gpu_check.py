"""GPU check: each study architecture trained through the project's own step functions beside a
plain timm / smp / torchvision loop, and the CPU cost of feeding it.

For every architecture at the study's input size (224 px classification, 512 px segmentation,
1024 px detection), with AMP on a GPU (bf16 where supported, else fp16 with a gradient scaler):
training images/s and peak GPU memory of (a) ``orchestration.train.steps.train_step`` on the
project's model and task adapter, as a Train worker runs it, and (b) a plain loop over the library's
own model with the same loss, batch and precision; ``ratio`` = (a) / (b). Then one evaluation batch
(``steps.evaluate``). Then the CPU side: images/s on one core of the training-time PNG decode +
augmentation (``data_pipeline.augment``), hence the cores one GPU needs to stay fed.

Needs only torch, torchvision, timm, numpy and the project's pure-Python dependencies: no Ray, no
MLflow. What a missing package stops is skipped and said. A benchmark, not a test.

    python bench/gpu_check.py                      # the study's sizes, on the GPU if there is one
    python bench/gpu_check.py --scale 0.125 --steps 2 --archs mobilenetv2 unet   # tiny, on CPU
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

STUDY = {  # architecture -> (task, the study's input size, batch size)
    "vgg16": ("classification", 224, 32),
    "resnet50": ("classification", 224, 32),
    "densenet121": ("classification", 224, 32),
    "mobilenetv2": ("classification", 224, 32),
    "vit_b16": ("classification", 224, 32),
    "unet": ("segmentation", 512, 8),
    "deeplabv3plus": ("segmentation", 512, 8),
    "fasterrcnn": ("detection", 1024, 4),
}


def _timed(step: Callable[[], Any], steps: int, device: torch.device) -> tuple[float, int]:
    """Seconds per step after two warm-up steps, and peak GPU memory (bytes; 0 on CPU)."""
    for _ in range(2):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return (time.perf_counter() - start) / steps, peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(arch: str, batch: dict[str, Any], size: int, device: torch.device, steps: int) -> dict:
    """The project's model and task adapter through ``steps.train_step`` and ``steps.evaluate``."""
    from models import ModelSpec, build_model
    from orchestration.train.config import TrainConfig
    from orchestration.train.steps import amp_for, evaluate, make_optimizer, train_step
    from orchestration.train.tasks import collate, make_task

    task_name = STUDY[arch][0]
    model = build_model(ModelSpec(name=arch, input_size=size)).to(device)
    optimizer = make_optimizer(TrainConfig(model=arch, data="", task=task_name), model)
    task, amp = make_task(task_name, in_chans=3, lesion_only=False), amp_for(device)
    tensors = collate(batch, device)
    model.train()
    seconds, peak = _timed(lambda: train_step(task, model, optimizer, tensors, amp), steps, device)
    with torch.autocast(device.type, dtype=amp[0], enabled=amp[0] is not None):
        start = time.perf_counter()
        outputs, _ = evaluate(task, model, [batch], device)
        eval_s = time.perf_counter() - start
    return {
        "step_s": seconds,
        "peak_bytes": peak,
        "eval_batch_s": eval_s,
        "eval_rows": len(outputs["patient_id"]),
    }


def plain(arch: str, batch: dict[str, Any], size: int, device: torch.device, steps: int) -> dict:
    """The library's own model, loss and optimiser in a bare loop, at the same precision."""
    from models.registry import get_entry
    from orchestration.train.steps import amp_for, train_step

    task_name = STUDY[arch][0]
    config = get_entry(arch).build.keywords["config"]
    model, loss_of = _plain_model(task_name, config, size)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp, tensors = amp_for(device), _plain_tensors(batch, device)
    task = SimpleNamespace(loss=loss_of)  # the same step (zero_grad, autocast, backward, step)
    step = functools.partial(train_step, task, model, optimizer, tensors, amp)
    seconds, peak = _timed(step, steps, device)
    return {"step_s": seconds, "peak_bytes": peak}


def _plain_model(task: str, config: Any, size: int) -> tuple[torch.nn.Module, Callable]:
    import torch.nn.functional as F

    if task == "classification":
        import timm

        extra = {"img_size": size} if config.sets_img_size else {}
        model = timm.create_model(config.timm_name, pretrained=False, num_classes=2, **extra)
        return model, lambda m, t: F.cross_entropy(m(t["image"]), t["label"])
    if task == "segmentation":
        import segmentation_models_pytorch as smp

        model = smp.create_model(
            config.arch, encoder_name=config.default_encoder, encoder_weights=None, classes=1
        )
        return model, lambda m, t: F.binary_cross_entropy_with_logits(m(t["image"]), t["mask"])
    import torchvision

    builder = torchvision.models.get_model_builder(config.builder)
    # the project resizes to its input size; torchvision would upsample to 800 px
    model = builder(
        weights=None, weights_backbone=None, num_classes=3, min_size=size, max_size=size
    )
    return model, lambda m, t: sum(m(t["image"], t["targets"]).values())


def _plain_tensors(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Float RGB tensors as a plain loop would hold them (already on the device)."""
    if batch["image"].dtype == object:
        images = [
            torch.as_tensor(i, device=device).float().div(255).expand(3, -1, -1)
            for i in batch["image"]
        ]
        targets = [
            {
                "boxes": torch.as_tensor(b, device=device).reshape(-1, 4),
                "labels": torch.as_tensor(lab + 1, device=device),
            }
            for b, lab in zip(batch["boxes"], batch["box_labels"], strict=True)
        ]
        return {"image": images, "targets": targets}
    out = {
        "image": torch.as_tensor(batch["image"], device=device)
        .float()
        .div(255)
        .expand(-1, 3, -1, -1),
        "label": torch.as_tensor(batch["label"], device=device),
    }
    if "mask" in batch:
        out["mask"] = torch.as_tensor(batch["mask"], device=device).float()
    return out


def cpu_feed(task: str, size: int, images: int, rng: np.random.Generator) -> float:
    """Images/s on one core of the training-time path: PNG decode + the study's augmentation."""
    import cv2

    from data_pipeline.augment import decode_batch, study_augmentation
    from data_pipeline.synth_images import decoded_batch

    cv2.setNumThreads(1)
    rows = decoded_batch("classification", size, images, rng)["image"]
    pngs = np.array([cv2.imencode(".png", r[0])[1].tobytes() for r in rows], dtype=object)
    batch = {"image": pngs, "label": np.zeros(images, np.int64)}
    if task == "segmentation":
        batch["mask"] = pngs
    if task == "detection":
        batch["boxes"] = np.array([np.array([1, 1, 8, 8], np.float32)] * images, dtype=object)
        batch["box_labels"] = np.array([np.array([0])] * images, dtype=object)
    augment = study_augmentation(task)
    start = time.perf_counter()
    decode_batch(batch, task, augment)
    return images / (time.perf_counter() - start)


def check(arch: str, scale: float, steps: int, device: torch.device, rng) -> dict[str, Any]:
    """One architecture: ours vs plain, and the CPU cores per GPU its input needs."""
    from data_pipeline.synth_images import decoded_batch

    task, size, batch_size = STUDY[arch]
    size = max(32, int(size * scale) // 32 * 32)
    batch = decoded_batch(task, size, batch_size, rng)
    row: dict[str, Any] = {"arch": arch, "task": task, "size": size, "batch": batch_size}
    a, b = ours(arch, batch, size, device, steps), plain(arch, batch, size, device, steps)
    row |= {
        "images_per_s": round(batch_size / a["step_s"], 2),
        "plain_images_per_s": round(batch_size / b["step_s"], 2),
        "ratio": round(b["step_s"] / a["step_s"], 3),
        "peak_gib": _gib(a["peak_bytes"], device),
        "plain_peak_gib": _gib(b["peak_bytes"], device),
        "eval_batch_s": round(a["eval_batch_s"], 4),
    }
    try:
        per_core = cpu_feed(task, size, max(4, batch_size // 2), rng)
    except ImportError as error:  # no OpenCV / albumentations on this machine
        row["cpu_feed"] = f"skipped: {error}"
        return row
    row["cpu_images_per_s_per_core"] = round(per_core, 1)
    if device.type == "cuda":
        row["cores_per_gpu"] = round(row["images_per_s"] / per_core, 1)
    return row


def _gib(size: int, device: torch.device) -> float | None:
    return round(size / 2**30, 3) if device.type == "cuda" else None  # no CPU peak from torch


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(STUDY), choices=list(STUDY))
    parser.add_argument("--scale", type=float, default=1.0, help="input size x this (tiny runs)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per architecture")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, rng = _device(args.device), np.random.default_rng(0)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"device {device} ({gpu}), torch {torch.__version__}, python {platform.python_version()}")
    rows = []
    for arch in args.archs:
        try:
            row = check(arch, args.scale, args.steps, device, rng)
        except ImportError as error:
            row = {"arch": arch, "skipped": f"missing package: {error.name or error}"}
        print(json.dumps(row))
        rows.append(row)
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    result = {
        "device": gpu if device.type == "cuda" else str(device),
        "amp": str(_amp_name(device)),
        "archs": rows,
        "ratio": round(min(ratios), 3) if ratios else None,
    }
    print(json.dumps(result))


def _amp_name(device: torch.device) -> str:
    from orchestration.train.steps import amp_for

    dtype, scaler = amp_for(device)
    return "off" if dtype is None else f"{dtype} {'+ scaler' if scaler else ''}".strip()


if __name__ == "__main__":
    main()
