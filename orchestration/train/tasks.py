"""What differs between the three tasks: inputs, loss, predictions and metrics.

A batch is the dict ``collate`` makes from decoded Ray Data rows. ``predict`` returns per-row numpy
outputs small enough to gather across workers (class probabilities, per-image segmentation scores,
detections), so metrics are computed once on the whole split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from orchestration.train.metrics import (
    classification_cis,
    classification_metrics,
    detection_metrics,
    segmentation_metrics,
    segmentation_scores,
    threshold_metrics,
)


def collate(batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Numpy batch of decoded rows -> tensors on ``device`` (ragged detection targets as lists)."""
    out: dict[str, Any] = {
        "image": _images(batch["image"], device),
        "label": torch.as_tensor(np.array(batch["label"], np.int64), device=device),
        "patient_id": [str(p) for p in batch["patient_id"]],
        "key": [str(k) for k in batch["key"]] if "key" in batch else [],
    }
    if "mask" in batch:
        out["mask"] = torch.as_tensor(np.ascontiguousarray(batch["mask"]), device=device).float()
    if "boxes" in batch:
        out["targets"] = [
            {
                "boxes": torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4), device=device),
                "labels": torch.as_tensor(np.asarray(lab, np.int64) + 1, device=device),
            }
            for b, lab in zip(batch["boxes"], batch["box_labels"], strict=True)
        ]
    return out


def _images(images: np.ndarray, device: torch.device | str) -> torch.Tensor | list[torch.Tensor]:
    """uint8 images -> float in [0, 1]: one (B, 1, H, W) tensor, or a list of (1, H, W) tensors
    for detection batches (an object array: each mammogram keeps its own shape)."""
    if images.dtype != object:
        return torch.as_tensor(np.ascontiguousarray(images), device=device).float() / 255
    return [torch.as_tensor(np.ascontiguousarray(i), device=device).float() / 255 for i in images]


def model_input(batch: dict[str, Any], in_chans: int) -> torch.Tensor | list[torch.Tensor]:
    """Grayscale (B, 1, H, W) repeated to three channels unless the model takes one; a list of
    (1, H, W) images stays a list (detection)."""
    image = batch["image"]
    if isinstance(image, list):
        return [i.expand(3, -1, -1) if in_chans == 3 else i for i in image]
    return image.expand(-1, 3, -1, -1) if in_chans == 3 else image


class Classification:
    """Cross-entropy on class logits; metrics on malignant probability."""

    def __init__(self, in_chans: int, class_weights: torch.Tensor | None = None) -> None:
        self.in_chans, self.class_weights = in_chans, class_weights

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(model_input(batch, self.in_chans))
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, batch["label"], weight=weights)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        probs = torch.softmax(model(model_input(batch, self.in_chans)).float(), dim=1)
        return {
            "probs": probs.cpu().numpy(),
            "label": batch["label"].cpu().numpy(),
            "patient_id": batch["patient_id"],
            "key": batch["key"],
        }

    def preview(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """Nothing extra: the ROC curve and confusion matrix come from all predictions."""
        return {}

    def metrics(
        self, out: dict[str, Any], n_boot: int = 0, threshold: float | None = None
    ) -> dict[str, Any]:
        """Split metrics; with ``threshold`` (chosen on validation), the binary ones at it."""
        labels, probs = out["label"], out["probs"]
        result = classification_metrics(labels, probs)
        if n_boot:
            result |= classification_cis(labels, probs, out["patient_id"], n_boot)
        if threshold is not None:
            result |= threshold_metrics(labels, probs, threshold, out["patient_id"], n_boot)
        return result


class Segmentation:
    """Dice + BCE on mask logits; per-image Dice, IoU and pixel accuracy."""

    def __init__(self, in_chans: int) -> None:
        self.in_chans = in_chans
        from segmentation_models_pytorch.losses import DiceLoss  # with timm: after the first batch

        self.dice = DiceLoss(mode="binary", from_logits=True)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(model_input(batch, self.in_chans))
        return self.dice(logits, batch["mask"]) + F.binary_cross_entropy_with_logits(
            logits, batch["mask"]
        )

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        pred = model(model_input(batch, self.in_chans)) > 0
        scores = segmentation_scores(pred[:, 0].cpu().numpy(), batch["mask"][:, 0].cpu().numpy())
        return {"scores": scores, "patient_id": batch["patient_id"]}

    @torch.no_grad()
    def preview(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """A few images with their true and predicted masks, for overlays."""
        pred = model(model_input(batch, self.in_chans)) > 0
        return {
            "image": _uint8(batch["image"][:, 0]),
            "mask": _uint8(batch["mask"][:, 0]),
            "pred": _uint8(pred[:, 0]),
        }

    def metrics(self, out: dict[str, Any], n_boot: int = 0) -> dict[str, Any]:
        return segmentation_metrics(out["scores"], out["patient_id"] if n_boot else None, n_boot)


class Detection:
    """The detector's own losses in train mode; lesion mAP@0.5 and FROC on its detections.

    A lesion detector (``lesion_only``) learns every box as one class, "lesion"; otherwise the
    boxes are benign (1) or malignant (2).
    """

    def __init__(self, in_chans: int, lesion_only: bool = True) -> None:
        self.in_chans, self.lesion_only = in_chans, lesion_only

    def targets(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """The batch's boxes, labelled as this detector learns them."""
        if not self.lesion_only:
            return batch["targets"]
        return [t | {"labels": torch.ones_like(t["labels"])} for t in batch["targets"]]

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        images = list(model_input(batch, self.in_chans))
        return sum(model(images, self.targets(batch)).values())

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        detections = model(list(model_input(batch, self.in_chans)))
        to_np = lambda d: {k: v.cpu().numpy() for k, v in d.items()}  # noqa: E731
        return {
            "preds": [to_np(d) for d in detections],
            "targets": [to_np(t) for t in self.targets(batch)],
            "patient_id": batch["patient_id"],
        }

    def preview(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """A few images with their true boxes and the detector's boxes and scores."""
        out = self.predict(model, batch)
        return {
            "image": [_uint8(image[0]) for image in batch["image"]],
            "boxes": [t["boxes"] for t in out["targets"]],
            "pred_boxes": [p["boxes"] for p in out["preds"]],
            "pred_scores": [p["scores"] for p in out["preds"]],
        }

    def metrics(self, out: dict[str, Any], n_boot: int = 0) -> dict[str, Any]:
        as_t = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
        result = detection_metrics(
            [as_t(p) for p in out["preds"]], [as_t(t) for t in out["targets"]]
        )
        froc = result.pop("froc")
        return result | {f"froc_{k}": v for k, v in froc.items()} | {"froc": froc}


def _uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] or boolean masks as uint8 arrays (0..255)."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def make_task(
    task: str,
    in_chans: int,
    class_weights: torch.Tensor | None = None,
    lesion_only: bool = True,
):
    """The adapter of ``task`` (``lesion_only``: a class-agnostic detector)."""
    if task == "classification":
        return Classification(in_chans, class_weights)
    if task == "segmentation":
        return Segmentation(in_chans)
    return Detection(in_chans, lesion_only)


def concat_outputs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Join per-batch (or per-worker) outputs: arrays concatenated, lists extended."""
    if not parts:
        return {}
    joined: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if isinstance(values[0], np.ndarray):
            joined[key] = np.concatenate(values)
        else:
            joined[key] = [item for v in values for item in v]
    return joined
