"""The conversion paths ``prepare_throughput.py`` times, for each output kind: the study's style
(a pydicom ``.pixel_array`` loop) and ours step by step (``stages``: the same functions as
``convert_item``, with the CPU seconds of each stage)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom

from data_pipeline import dicom, transforms
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.samples import Sources, check_files
from data_pipeline.storage import Store

FULL_IMAGES, LESIONS = 3103, 3568  # CBIS-DDSM: full images, masks (= crops)
STAGES = ("read", "decode", "mask box", "crop/resize", "CLAHE", "encode", "check", "write")


def _seed_full(path: Path) -> np.ndarray:
    """The study's first steps: ``.pixel_array``, float normalise, CLAHE at full resolution."""
    image = pydicom.dcmread(path).pixel_array.astype(np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1.0)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    return clahe.apply((image * 255).astype(np.uint8))


def _seed_mask(path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A mask and its box (xmin, ymin, xmax, ymax), the study's way."""
    mask = pydicom.dcmread(path).pixel_array
    ys, xs = np.nonzero(mask)
    return mask, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def seed_whole(item: dict, root: Path, cfg: PrepareConfig) -> bytes:
    """Whole image at ``cls_size``, the study's way."""
    full = _seed_full(root / item["image_file"])
    return _png(cv2.resize(full, (cfg.cls_size, cfg.cls_size)))


def seed_lesion(item: dict, root: Path, cfg: PrepareConfig) -> bytes:
    """Lesion crop at ``cls_size``: the mask's box cut from the CLAHE'd full image."""
    full = _seed_full(root / item["image_file"])
    _, (x0, y0, x1, y1) = _seed_mask(root / item["mask_files"][0])
    return _png(cv2.resize(full[y0:y1, x0:x1], (cfg.cls_size, cfg.cls_size)))


def seed_segmentation(item: dict, root: Path, cfg: PrepareConfig) -> tuple[bytes, bytes]:
    """Image and mask cut around the mask's box, at ``seg_size``."""
    full = _seed_full(root / item["image_file"])
    mask, (x0, y0, x1, y1) = _seed_mask(root / item["mask_files"][0])
    size = (cfg.seg_size, cfg.seg_size)
    roi = cv2.resize(mask[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)
    return _png(cv2.resize(full[y0:y1, x0:x1], size)), _png(roi)


def seed_detection(item: dict, root: Path, cfg: PrepareConfig) -> tuple[bytes, list]:
    """Whole image with its long side at ``det_size``, and the masks' boxes scaled to it."""
    full = _seed_full(root / item["image_file"])
    scale = cfg.det_size / max(full.shape)
    small = cv2.resize(full, (round(full.shape[1] * scale), round(full.shape[0] * scale)))
    boxes = [np.array(_seed_mask(root / rel)[1]) * scale for rel in item["mask_files"]]
    return _png(small), boxes


KINDS: dict[str, tuple[str, dict[str, Any], Callable, int, str]] = {
    # kind: (task, PrepareConfig options, seed-style loop, items in CBIS-DDSM, what they are)
    "whole": ("classification", {"cls_input": "whole"}, seed_whole, FULL_IMAGES, "whole images"),
    "lesion": ("classification", {}, seed_lesion, LESIONS, "lesion crops"),
    "segmentation": ("segmentation", {}, seed_segmentation, LESIONS, "segmentation crops"),
    "detection": ("detection", {}, seed_detection, FULL_IMAGES, "detection images"),
}
READS = {  # the files each kind's items read: convert_item the image (and masks), check_files crops
    "whole": ("image",),
    "lesion": ("image", "mask", "crop"),
    "segmentation": ("image", "mask", "crop"),
    "detection": ("image", "mask"),
}
DEFAULT_KINDS = ("lesion", "segmentation", "detection")  # what ``prepare`` makes by default


def kind_config(kind: str) -> PrepareConfig:
    """The PrepareConfig that makes ``kind`` (default sizes, one task)."""
    task, options = KINDS[kind][:2]
    return PrepareConfig(tasks=(task,), **options)


class _Clock:
    """Adds the CPU time since the last lap to a stage."""

    def __init__(self) -> None:
        self.s = dict.fromkeys(STAGES, 0.0)
        self._last = time.process_time()

    def lap(self, stage: str) -> None:
        now = time.process_time()
        self.s[stage] += now - self._last
        self._last = now


def _decoded(path: Path, clock: _Clock) -> np.ndarray:
    """``read_image`` in its two steps: the header parse (pixels deferred), then the pixels."""
    ds = dicom._read_dataset(path, stop_before_pixels=False)
    clock.lap("read")
    pixels = dicom._to_display(ds, dicom._stored_pixels(ds))
    clock.lap("decode")
    return pixels


def _masks(item: dict, root: Path, shape: tuple[int, ...], clock: _Clock) -> list[np.ndarray]:
    masks = [_decoded(root / rel, clock) for rel in item["mask_files"]]
    masks = [dicom.align_mask(mask, shape) for mask in masks]
    if not all(cv2.hasNonZero(mask) for mask in masks):
        raise ValueError("empty ROI mask")
    clock.lap("mask box")
    return masks


def _clahe(image: np.ndarray, cfg: PrepareConfig, clock: _Clock) -> np.ndarray:
    out = transforms.clahe(transforms.to_uint8(image), clip_limit=cfg.clahe_clip)
    clock.lap("CLAHE")
    return out


def _box(box, size: tuple[int, int], shape: tuple[int, ...], cfg: PrepareConfig):
    return transforms._fit_aspect(transforms.expand_box(box, cfg.margin, shape), size, shape)


def _whole_steps(image, masks, cfg: PrepareConfig, clock: _Clock) -> list[np.ndarray]:
    small = transforms.downscale(image, cfg.cls_size)
    clock.lap("crop/resize")
    return [_clahe(small, cfg, clock)]


def _lesion_steps(image, masks, cfg: PrepareConfig, clock: _Clock) -> list[np.ndarray]:
    box = _box(transforms.bbox_from_mask(masks[0]), (cfg.cls_size,) * 2, image.shape, cfg)
    clock.lap("mask box")
    small = transforms.downscale(transforms.crop(image, box), cfg.cls_size)
    clock.lap("crop/resize")
    return [_clahe(small, cfg, clock)]


def _segmentation_steps(image, masks, cfg: PrepareConfig, clock: _Clock) -> list[np.ndarray]:
    size = (cfg.seg_size, cfg.seg_size)
    box = _box(transforms.largest_contour_bbox(masks[0]), size, image.shape, cfg)
    clock.lap("mask box")
    small = transforms.downscale(transforms.crop(image, box), size)
    roi = transforms._binary(transforms.crop(masks[0], box))
    roi = cv2.resize(roi, size, interpolation=cv2.INTER_NEAREST)
    clock.lap("crop/resize")
    return [_clahe(small, cfg, clock), (roi > 0).astype(np.uint8) * 255]


def _detection_steps(image, masks, cfg: PrepareConfig, clock: _Clock) -> list[np.ndarray]:
    boxes = np.array([transforms.bbox_from_mask(mask) for mask in masks], np.float64)
    clock.lap("mask box")
    small, _ = transforms.downscale_long_side(image, cfg.det_size)
    boxes *= [small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]] * 2
    clock.lap("crop/resize")
    return [_clahe(small, cfg, clock)]


STEPS = {
    "whole": _whole_steps,
    "lesion": _lesion_steps,
    "segmentation": _segmentation_steps,
    "detection": _detection_steps,
}


def item_kind(item: dict, cfg: PrepareConfig) -> str:
    """The output kind an item of ``cfg`` makes."""
    if item["task"] == "classification":
        return "whole" if cfg.cls_input == "whole" else "lesion"
    return item["task"]


def stages(item: dict, root: Path, cfg: PrepareConfig) -> tuple[dict[str, float], list[bytes]]:
    """Our path for one item, step by step with the same functions: CPU seconds per stage
    (``write`` is 0: see ``write_seconds``) and the PNGs made (``convert_item``'s bytes)."""
    kind, clock = item_kind(item, cfg), _Clock()
    image = _decoded(root / item["image_file"], clock)
    masks = [] if kind == "whole" else _masks(item, root, image.shape, clock)
    outputs = STEPS[kind](image, masks, cfg, clock)
    pngs = [transforms.encode_png(out) for out in outputs]
    clock.lap("encode")
    check_files(item, Sources(Store.at(root)))
    clock.lap("check")
    return clock.s, pngs


def write_seconds(rows: list[dict], cfg: PrepareConfig, out: Path) -> float:
    """CPU seconds to write ``rows`` as Parquet shards of ``shard_size``, as ``write_shard`` does."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.process_time()
    for number, first in enumerate(range(0, len(rows), cfg.shard_size)):
        table = pa.Table.from_pylist(rows[first : first + cfg.shard_size])
        pq.write_table(table, out / f"{number:05d}.parquet", compression="snappy")
    return time.process_time() - start
