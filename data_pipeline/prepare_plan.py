"""What ``prepare`` will write: the resolved config, the work items per task, shards, fingerprint.

Items are plain dicts (Ray passes plain data). Shards are ours, not Ray's: each is a fixed, sorted
chunk of source images with their items of every task, so one pass reads each image once for all
tasks, a re-run names and fills every shard identically and a finished shard can be skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from data_pipeline import SPLITS, TASKS
from data_pipeline.catalog import Abnormality, Catalog, FullImage, image_pathology

LABEL_MAPS = {
    "binary": {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1},
    "3class": {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 1, "MALIGNANT": 2},
}
METADATA = (
    "patient_id",
    "lesion_type",
    "side",
    "view",
    "breast_density",
    "assessment",
    "subtlety",
    "morphology",
    "distribution",
    "pathology",
)


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides the bytes ``prepare`` writes (``workers`` does not)."""

    tasks: tuple[str, ...] = TASKS
    cls_size: int = 224
    seg_size: int = 512
    det_size: int = 1024
    lesion_type: str = "all"
    cls_input: str = "crop"
    label_map: str = "binary"
    margin: float = 0.15
    clahe_clip: float = 2.0
    shard_size: int = 64  # source images per shard (their rows of every task)
    val_fraction: float = 0.15
    seed: int = 0
    max_quarantine: float = 0.05

    def __post_init__(self) -> None:
        for task in self.tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        checks = {
            "lesion_type": (self.lesion_type, ("mass", "calc", "all")),
            "cls_input": (self.cls_input, ("crop", "whole")),
            "label_map": (self.label_map, tuple(LABEL_MAPS)),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareConfig:
        """Build from a plain dict (e.g. a manifest's ``config``); unknown keys are an error."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown PrepareConfig keys {unknown}")
        return cls(**data | {"tasks": tuple(data.get("tasks", TASKS))})


def _metadata(record: Abnormality | FullImage) -> dict[str, Any]:
    return {k: getattr(record, k, None) for k in METADATA}


def abnormality_item(abn: Abnormality, task: str, labels: dict[str, int]) -> dict[str, Any]:
    """One classification-crop or segmentation item."""
    return {
        "task": task,
        "key": abn.key,
        "image_key": abn.image_key,
        "split": abn.split,
        "label": labels[abn.pathology],
        "image_file": abn.image_file,
        "image_csv_path": abn.image_csv_path,
        "mask_files": [abn.mask_file],
        "mask_csv_paths": [abn.roi_csv_path],
        "check_files": [f for f in (abn.crop_file,) if f and f != abn.mask_file],
        **_metadata(abn),
    }


def image_item(
    image: FullImage, task: str, labels: dict[str, int], abnormalities: dict[str, Abnormality]
) -> dict[str, Any]:
    """One whole-image classification or detection item: every lesion of ``abnormalities``
    in the image (of any split: a cross-CSV image keeps its excluded rows' lesions too), the
    label malignant if any of them is."""
    lesions = [abnormalities[k] for k in image.abnormality_keys if k in abnormalities]
    pathology = image_pathology(tuple(a.pathology for a in lesions))
    return {
        "task": task,
        "key": image.image_key,
        "image_key": image.image_key,
        "split": image.split,
        "label": labels[pathology],
        "image_file": image.image_file,
        "image_csv_path": image.image_csv_path,
        "mask_files": [a.mask_file for a in lesions],
        "mask_csv_paths": [a.roi_csv_path for a in lesions],
        "lesion_labels": [labels[a.pathology] for a in lesions],
        "lesion_keys": [a.key for a in lesions],
        "check_files": [f for f in image.image_files if f and f != image.image_file],
        **_metadata(image),
        "pathology": pathology,
        "breast_density": lesions[0].breast_density,
    }


def plan_items(catalog: Catalog, cfg: PrepareConfig, task: str) -> list[dict[str, Any]]:
    """The sorted work items of one task (rows of the train, val and test splits)."""
    labels = LABEL_MAPS[cfg.label_map]
    keep = {"mass": {"mass"}, "calc": {"calc"}, "all": {"mass", "calc"}}[cfg.lesion_type]
    abns = [a for a in catalog.abnormalities if a.split in SPLITS and a.lesion_type in keep]
    if task == "segmentation" or (task == "classification" and cfg.cls_input == "crop"):
        items = [abnormality_item(a, task, labels) for a in abns]
    else:
        by_key = {a.key: a for a in catalog.abnormalities if a.lesion_type in keep}
        images = [
            i
            for i in catalog.images
            if i.split in SPLITS and any(k in by_key for k in i.abnormality_keys)
        ]
        items = [image_item(i, task, labels, by_key) for i in images]
    return sorted(items, key=lambda item: (item["split"], item["key"]))


def source_image(item: dict[str, Any]) -> tuple[str, ...]:
    """The image an item reads: (split, file, physical view). The view keeps the two CSV copies
    of one mammogram apart (they are two files), and so do listings of one file under other keys
    (``bench/common.py``'s repeated catalog)."""
    view = (item.get("image_key") or item["key"]).split("_", 1)[-1]  # as ``physical_view``
    return item["split"], item["image_file"] or f"missing:{item['key']}", view


def shard_specs(catalog: Catalog, cfg: PrepareConfig) -> list[dict[str, Any]]:
    """The work of one pass over the images: every task's items grouped by the source image
    they read (one decode serves a whole image's rows of every task), ``cfg.shard_size`` images
    per shard, shards numbered per split: ``<split>/NNNNN``, written as
    ``<task>/<split>/NNNNN.parquet`` for each task with rows in it."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for task in cfg.tasks:
        for item in plan_items(catalog, cfg, task):
            groups.setdefault(source_image(item), []).append(item)
    specs = []
    for split in SPLITS:
        ordered = sorted(
            (items for key, items in groups.items() if key[0] == split),
            key=lambda items: min(item["key"] for item in items),
        )
        for number, start in enumerate(range(0, len(ordered), cfg.shard_size)):
            chunk = [item for items in ordered[start : start + cfg.shard_size] for item in items]
            specs.append({"split": split, "name": f"{split}/{number:05d}", "items": chunk})
    return specs


def fingerprint(catalog: Catalog, cfg: PrepareConfig) -> str:
    """A hash of the output-shaping config, of the CSVs and of every input file's name, size and
    modification time (as the catalog listed them).

    ``tasks`` and ``max_quarantine`` are left out: preparing another task later, or judging the
    same outputs by another threshold, reuses the shards already written.
    """
    config = {k: v for k, v in asdict(cfg).items() if k not in ("tasks", "max_quarantine")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(catalog.csv_files):
        digest.update(name.encode() + bytes.fromhex(catalog.csv_digests[name]))
    files = set()
    for abn in catalog.abnormalities:
        files.update(f for f in (abn.image_file, abn.mask_file, abn.crop_file) if f)
    for name in sorted(files):
        size, mtime = catalog.files[name]  # from the catalog's listing: no request per file
        digest.update(f"{name}:{size}:{mtime}".encode())
    return digest.hexdigest()[:16]
