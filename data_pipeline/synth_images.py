"""Pixel content of the synthetic CBIS-DDSM: breasts, masses and calcification clusters.

Lesions carry a learnable signal, as the real pathology does in part: malignant masses are
irregular and spiculated, benign ones round and smooth; malignant calcifications are many fine,
pleomorphic specks in a tight cluster, benign ones few, coarse and round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Lesion:
    """A lesion drawn into a full image: its 8-bit {0,255} mask and its bounding box."""

    mask: np.ndarray
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax (exclusive)


def breast_image(rng: np.random.Generator, size: tuple[int, int], side: str) -> np.ndarray:
    """A 16-bit breast on a zero background, chest wall on the laterality's side."""
    h, w = size
    texture = np.zeros((h, w), np.float32)
    for step, weight in ((16, 1.0), (4, 0.35)):
        noise = rng.normal(0.0, 1.0, (max(h // step, 4), max(w // step, 4))).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), 1.0)
        texture += weight * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = 0.0 if side == "LEFT" else w - 1.0
    ry, rx = h * rng.uniform(0.42, 0.48), w * rng.uniform(0.7, 0.85)
    inside = ((xx - cx) / rx) ** 2 + ((yy - h / 2) / ry) ** 2 <= 1.0
    tissue = 20000 + 4000 * texture - 6000 * np.abs(xx - cx) / w
    return np.where(inside, np.clip(tissue, 2000, 40000), 0).astype(np.uint16)


def lesion_centre(rng: np.random.Generator, size: tuple[int, int], side: str) -> tuple[int, int]:
    """A point well inside the breast."""
    h, w = size
    x = rng.uniform(0.12, 0.45) * w
    return int(x if side == "LEFT" else w - 1 - x), int(rng.uniform(0.3, 0.7) * h)


def _polygon(rng: np.random.Generator, centre, radius: float, malignant: bool) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    if malignant:
        wobble = 0.65 + 0.35 * rng.random(angles.size)
    else:
        wobble = 1.0 + 0.06 * np.sin(2 * angles + rng.uniform(0, np.pi))
    pts = np.stack([np.cos(angles), np.sin(angles) * rng.uniform(0.75, 1.0)], axis=1)
    return (np.array(centre) + pts * radius * wobble[:, None]).astype(np.int32)


def draw_mass(rng: np.random.Generator, image: np.ndarray, side: str, malignant: bool) -> Lesion:
    """Draw a mass into ``image`` in place: spiculated if malignant, round if benign."""
    h, w = image.shape
    centre = lesion_centre(rng, (h, w), side)
    radius = rng.uniform(0.05, 0.08) * min(h, w) * 2
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [_polygon(rng, centre, radius, malignant)], 255)
    window, (x0, y0) = _window(centre, 2.4 * radius, (h, w))
    signal = mask[window].astype(np.float32) / 255.0
    local = (centre[0] - x0, centre[1] - y0)
    if malignant:
        for angle in rng.uniform(0, 2 * np.pi, rng.integers(7, 12)):
            tip = (
                int(local[0] + 1.9 * radius * np.cos(angle)),
                int(local[1] + 1.9 * radius * np.sin(angle)),
            )
            cv2.line(signal, local, tip, 0.8, max(1, int(radius / 10)))
    signal = cv2.GaussianBlur(signal, (0, 0), max(radius / (12 if malignant else 4), 0.8))
    contrast = 16000 if malignant else 9000
    _add(image[window], signal * contrast)
    return Lesion(mask=mask, box=_box(mask))


def _window(
    centre: tuple[int, int] | np.ndarray, half: float, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[int, int]]:
    """The region around ``centre`` a lesion's signal can reach, and its top-left corner."""
    x0, y0 = max(int(centre[0] - half), 0), max(int(centre[1] - half), 0)
    x1, y1 = min(int(centre[0] + half) + 1, shape[1]), min(int(centre[1] + half) + 1, shape[0])
    return (slice(y0, y1), slice(x0, x1)), (x0, y0)


def draw_calcifications(
    rng: np.random.Generator, image: np.ndarray, side: str, malignant: bool
) -> Lesion:
    """Draw a calcification cluster: many fine specks if malignant, few coarse ones if benign."""
    h, w = image.shape
    centre = np.array(lesion_centre(rng, (h, w), side))
    spread = rng.uniform(0.05, 0.07) * min(h, w) * 2
    unit = max(min(h, w) / 250.0, 1.0)
    count = rng.integers(18, 30) if malignant else rng.integers(3, 6)
    window, (x0, y0) = _window(centre, 1.3 * spread + 6 * unit, (h, w))
    specks = np.zeros(image[window].shape, np.float32)
    for _ in range(count):
        offset = rng.normal(0, spread / (3.0 if malignant else 2.0), 2)
        x, y = (centre + np.clip(offset, -spread, spread)).astype(int)
        r = unit * (rng.uniform(0.6, 1.4) if malignant else rng.uniform(2.5, 3.5))
        cv2.circle(specks, (int(x) - x0, int(y) - y0), max(round(r), 1), 1.0, -1)
    _add(image[window], cv2.GaussianBlur(specks, (0, 0), 0.6) * 25000)
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (int(centre[0]), int(centre[1])), int(spread * 1.15), 255, -1)
    return Lesion(mask=mask, box=_box(mask))


def _add(image: np.ndarray, signal: np.ndarray) -> None:
    np.copyto(image, np.clip(image.astype(np.float32) + signal, 0, 65535).astype(np.uint16))


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def lesion_crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 16-bit lesion crop CBIS-DDSM ships beside each mask."""
    xmin, ymin, xmax, ymax = box
    return np.ascontiguousarray(image[ymin:ymax, xmin:xmax])


def shrink_mask(mask: np.ndarray, factor: float) -> np.ndarray:
    """A mask a few percent smaller than its image, as some real CBIS-DDSM masks are."""
    h, w = mask.shape
    size = (max(int(w * factor), 1), max(int(h * factor), 1))
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


DETECTION_ASPECT = 0.6  # width / height of a CBIS-DDSM mammogram resized to its long side


def decoded_batch(task: str, size: int, batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """Random rows shaped as Ray Data hands decoded rows to a Train worker (uint8, one channel;
    detection images at a mammogram's aspect, one box each): for step timings and GPU checks."""
    out: dict[str, Any] = {
        "label": rng.integers(0, 2, batch),
        "patient_id": np.array([f"P_{i:05d}" for i in range(batch)], dtype=object),
    }
    if task != "detection":
        out["image"] = rng.integers(0, 256, (batch, 1, size, size), dtype=np.uint8)
        if task == "segmentation":
            mask = np.zeros((batch, 1, size, size), np.uint8)
            mask[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
            out["mask"] = mask
        return out
    width = max(16, int(size * DETECTION_ASPECT))
    images = np.empty(batch, dtype=object)
    images[:] = [rng.integers(0, 256, (1, size, width), dtype=np.uint8) for _ in range(batch)]
    side = size // 8
    box = np.array([side, side, 3 * side, 3 * side], np.float32)
    out |= {"image": images, "boxes": [box] * batch, "box_labels": [np.array([0])] * batch}
    return out
