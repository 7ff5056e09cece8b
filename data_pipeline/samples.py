"""Turn one planned item into one output row, or into one quarantine record. No Ray here.

Every failure of one item, whatever it is, becomes a ``Quarantined`` record naming the file (relative
to DATA) and a specific reason. Reasons never carry values read from DICOM headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from data_pipeline import transforms
from data_pipeline.dicom import DicomError, align_mask, read_image
from data_pipeline.prepare_plan import METADATA, PrepareConfig
from data_pipeline.storage import StorageError, Store


@dataclass(frozen=True)
class Quarantined(Exception):
    """An item that could not be converted: where and why."""

    source_path: str
    reason: str


class Sources:
    """The DICOMs of one store, each decoded once while one image's items are converted (one
    pass: the full image and its masks serve every task's rows); ``release`` drops them, so a
    worker holds one image's files at a time. From a disk a file is read by path; from an object
    store in one request into memory (never to local disk). Counts the files and bytes read."""

    def __init__(self, root: Store) -> None:
        self.root = root
        self.files = self.bytes = 0
        self._held: dict[str, np.ndarray | DicomError] = {}

    def read(self, rel: str) -> np.ndarray:
        """The decoded image (read-only: every task's transforms share it)."""
        if rel not in self._held:
            try:
                image = self._decode(rel)
                image.setflags(write=False)
                self._held[rel] = image
            except DicomError as exc:
                self._held[rel] = exc
        found = self._held[rel]
        if isinstance(found, DicomError):
            raise found
        return found

    def release(self) -> None:
        self._held.clear()

    def _decode(self, rel: str) -> np.ndarray:
        local = self.root.local_path(rel)
        if local is not None:
            self.files += 1
            self.bytes += local.stat().st_size if local.is_file() else 0
            return read_image(local)
        try:
            data = self.root.read_bytes(rel)
        except FileNotFoundError:
            raise DicomError("file not found") from None
        self.files, self.bytes = self.files + 1, self.bytes + len(data)
        return read_image(data)


def _load(sources: Sources, rel: str | None, csv_path: str) -> np.ndarray:
    if rel is None:
        raise Quarantined(csv_path, "file not found (no file on disk for this CSV path)")
    try:
        return sources.read(rel)
    except DicomError as exc:
        raise Quarantined(rel, exc.reason) from None


def _load_mask(
    sources: Sources, rel: str | None, csv_path: str, shape: tuple[int, ...]
) -> np.ndarray:
    mask = _load(sources, rel, csv_path)
    if mask.dtype != np.uint8 and mask.max() > 255:
        raise Quarantined(rel or csv_path, "ROI file is a 16-bit image, not an 8-bit mask")
    try:
        mask = align_mask(mask, shape)
    except DicomError as exc:
        raise Quarantined(rel or csv_path, exc.reason) from None
    if not cv2.hasNonZero(mask):  # stops at the first lesion pixel
        raise Quarantined(rel or csv_path, "empty ROI mask (no lesion pixels)")
    return mask


def _base(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ("key", "split", "label", *METADATA)}


def _classification(item: dict[str, Any], sources: Sources, cfg: PrepareConfig) -> dict[str, Any]:
    image = _load(sources, item["image_file"], item["image_csv_path"])
    if cfg.cls_input == "whole":
        out = transforms.whole_image(image, cfg.cls_size, clip_limit=cfg.clahe_clip)
    else:
        mask = _load_mask(sources, item["mask_files"][0], item["mask_csv_paths"][0], image.shape)
        out = transforms.lesion_crop(
            image, mask, cfg.cls_size, margin=cfg.margin, clip_limit=cfg.clahe_clip
        )
    return {
        **_base(item),
        "image": transforms.encode_png(out),
        "height": out.shape[0],
        "width": out.shape[1],
    }


def _segmentation(item: dict[str, Any], sources: Sources, cfg: PrepareConfig) -> dict[str, Any]:
    image = _load(sources, item["image_file"], item["image_csv_path"])
    mask = _load_mask(sources, item["mask_files"][0], item["mask_csv_paths"][0], image.shape)
    crop, crop_mask = transforms.tumour_crop(
        image, mask, cfg.seg_size, margin=cfg.margin, clip_limit=cfg.clahe_clip
    )
    return {
        **_base(item),
        "image": transforms.encode_png(crop),
        "mask": transforms.encode_png((crop_mask > 0).astype(np.uint8) * 255),
        "height": crop.shape[0],
        "width": crop.shape[1],
    }


def _detection(item: dict[str, Any], sources: Sources, cfg: PrepareConfig) -> dict[str, Any]:
    image = _load(sources, item["image_file"], item["image_csv_path"])
    masks = [
        _load_mask(sources, rel, csv_path, image.shape)
        for rel, csv_path in zip(item["mask_files"], item["mask_csv_paths"], strict=True)
    ]
    out, boxes = transforms.detection_image(image, masks, cfg.det_size, clip_limit=cfg.clahe_clip)
    return {
        **_base(item),
        "image": transforms.encode_png(out),
        "height": out.shape[0],
        "width": out.shape[1],
        "boxes": np.asarray(boxes, np.float32).tolist(),
        "box_labels": list(item["lesion_labels"]),
        "lesion_keys": list(item["lesion_keys"]),
    }


CONVERTERS = {
    "classification": _classification,
    "segmentation": _segmentation,
    "detection": _detection,
}


def convert_item(item: dict[str, Any], sources: Sources, cfg: PrepareConfig) -> dict[str, Any]:
    """Convert one item; raise ``Quarantined`` for any per-file failure.

    Unexpected errors are quarantined too, by exception type only: their messages could echo
    header values, which must not leave the DICOM files. A store that keeps failing
    (``StorageError``) is not the file's fault: it stops the run, naming the object.
    """
    try:
        return CONVERTERS[item["task"]](item, sources, cfg)
    except (Quarantined, StorageError):
        raise
    except ValueError as exc:  # raised by our transforms with a fixed message (e.g. empty mask)
        raise Quarantined(_source(item), f"cannot convert: {exc}") from None
    except Exception as exc:
        raise Quarantined(
            _source(item), f"unexpected {type(exc).__name__} while converting"
        ) from None


def check_files(
    item: dict[str, Any], sources: Sources, failed: Quarantined | None = None
) -> list[Quarantined]:
    """Decode the files an item names that its conversion did not read: its lesion crop and
    another series' copy of its image, and after a ``failed`` conversion every other file
    (one damaged file stops it before the rest are read). Each damaged one is a record."""
    files = list(item.get("check_files", ()))
    if failed is not None:
        named = [item["image_file"], *item["mask_files"]]
        files += [f for f in named if f and f != failed.source_path and f not in files]
    damaged = []
    for rel in files:
        try:
            sources.read(rel)
        except DicomError as exc:
            damaged.append(Quarantined(rel, f"damaged file: {exc.reason}"))
    return damaged


def _source(item: dict[str, Any]) -> str:
    return item["image_file"] or item["image_csv_path"]
