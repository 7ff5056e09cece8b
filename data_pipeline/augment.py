"""On-the-fly augmentation with albumentations: the study's list, the same geometry for masks and boxes.

The study augmented with rotation, horizontal/vertical flips, zoom, brightness/contrast and Gaussian
noise. Validation and test data are never augmented. Plain functions on numpy batches: Ray Data maps
them over the training stream, so every epoch sees new draws.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from data_pipeline.transforms import decode_png

if TYPE_CHECKING:
    import albumentations as A


def study_augmentation(task: str, p: float = 0.5) -> A.Compose:
    """The study's augmentations; for detection the boxes follow the geometry.

    albumentations is imported here: a Train worker decodes validation rows without it. Its
    import asks PyPI for a newer version (up to 2 s where nothing answers, in every Ray Data
    worker process that augments) unless told not to.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    transforms = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-20, 20), scale=(0.9, 1.15), border_mode=0, p=p),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=p),
        A.GaussNoise(std_range=(0.01, 0.04), p=p / 2),
    ]
    boxes = None
    if task == "detection":
        boxes = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3)
    return A.Compose(transforms, bbox_params=boxes, seed=None)


def oversample(
    batch: dict[str, np.ndarray], copies: dict[int, float], rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """List rows again by label, before any augmentation: balanced in expectation.

    ``copies`` maps a label to its expected extra listings per row, e.g. 0.40 for the real
    training split's malignant lesions (1,364 benign / 971 malignant - 1). Each row gets the
    whole part, plus one more with probability the fractional part, drawn anew on every call
    (every epoch), so the classes balance over an epoch however close their counts are.
    """
    rng = rng or np.random.default_rng()
    extra = np.array([copies.get(int(label), 0.0) for label in batch["label"]], np.float64)
    whole = np.floor(extra)
    listings = 1 + whole.astype(np.int64) + (rng.random(len(extra)) < extra - whole)
    index = np.repeat(np.arange(len(extra)), listings)
    return {name: values[index] for name, values in batch.items()}


def decode_batch(
    batch: dict[str, np.ndarray], task: str, augment: A.Compose | None = None
) -> dict[str, Any]:
    """PNG bytes -> uint8 images (N, 1, H, W), with labels and masks (N, 1, H, W) or boxes.

    Detection images keep each mammogram's own aspect ratio, so they are not stacked: the batch's
    ``image`` is an object array of (1, H, W) arrays (torchvision detectors take a list).

    Args:
        batch: A numpy batch of prepared rows (``image``, ``label``, and ``mask`` or ``boxes``).
        task: classification, segmentation or detection.
        augment: Applied per image when given (training only).
    """
    images, masks, boxes, labels = [], [], [], []
    for i, data in enumerate(batch["image"]):
        sample: dict[str, Any] = {"image": decode_png(data)}
        if task == "segmentation":
            sample["mask"] = (decode_png(batch["mask"][i]) > 0).astype(np.uint8)
        if task == "detection":
            sample["bboxes"] = _boxes(batch["boxes"][i], sample["image"].shape)
            sample["labels"] = np.asarray(batch["box_labels"][i], np.int64)
        if augment is not None:
            sample = augment(**sample)
        images.append(sample["image"])
        masks.append(sample.get("mask"))
        boxes.append(np.asarray(sample.get("bboxes", ()), np.float32).reshape(-1, 4))
        labels.append(np.asarray(sample.get("labels", ()), np.int64))
    return _stack(batch, task, images, masks, boxes, labels)


def _boxes(raw: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray([np.asarray(b, np.float32) for b in raw], np.float32).reshape(-1, 4)
    arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, shape[1])
    arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, shape[0])
    return arr


def _stack(batch, task, images, masks, boxes, labels) -> dict[str, Any]:
    out: dict[str, Any] = {
        "image": _ragged(images) if task == "detection" else np.stack(images)[:, None],
        "label": np.asarray(batch["label"], np.int64),
        "row": np.arange(len(images)),
    }
    if task == "segmentation":
        out["mask"] = np.stack(masks)[:, None].astype(np.uint8)
    if task == "detection":
        out["boxes"], out["box_labels"] = boxes, labels
    return out


def _ragged(images: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of (1, H, W) images that may differ in size."""
    arr = np.empty(len(images), dtype=object)
    arr[:] = [image[None] for image in images]
    return arr
