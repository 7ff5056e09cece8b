"""``TrainConfig``: one training job as plain data (Ray passes dicts; workers rebuild it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_pipeline.storage import Store

if TYPE_CHECKING:  # models imports torch and timm: Ray Data workers decoding shards need neither
    from models import ModelSpec

TASK_METRIC = {"classification": "auc", "segmentation": "dice", "detection": "map50"}
OPTIMIZERS = ("adam", "adamw")
THRESHOLD_RULES = ("youden", "sens90")  # operating point chosen on validation (operating_point)
SCHEDULES = ("cosine", "plateau", "none")
BALANCING = ("oversample", "weighted", "none")
DETECTION_CLASSES = ("lesion", "pathology")  # class-agnostic lesions, or benign/malignant boxes


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training job needs; image size and classes come from the manifest."""

    model: str
    data: str
    task: str = "classification"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    pretrained: bool = False
    unfreeze: int | str = "all"
    freeze_scratch: bool = False  # scratch with `unfreeze` < all: the study's frozen random layers
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    data_cpus: float | None = None  # Ray Data's CPUs for the training stream; None: all free
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 5
    balance: str = "oversample"
    augment: bool = True
    in_chans: int = 3
    encoder: str | None = None
    dropout: float = 0.5
    seed: int = 0
    weights_dir: str | None = None
    max_failures: int = 0
    bootstrap: int = 1000
    threshold_rule: str = "youden"
    detection_classes: str = "lesion"
    image_size: int = 0
    num_classes: int = 0
    anchor_sizes: tuple[float, ...] | None = None
    anchor_aspects: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_METRIC:
            raise ValueError(f"task must be one of {sorted(TASK_METRIC)}, got {self.task!r}")
        choices = (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("balance", BALANCING),
            ("detection_classes", DETECTION_CLASSES),
            ("threshold_rule", THRESHOLD_RULES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.workers < 1:
            raise ValueError("epochs, batch_size and workers must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys are an error (they are typos)."""
        _check_keys(data)
        return cls(**data)

    @classmethod
    def for_trial(cls, base: dict[str, Any], sampled: dict[str, Any]) -> TrainConfig:
        """A sweep trial's job from the plain dicts Ray passes: ``base`` with its sampled settings."""
        return cls.from_dict(base).with_params(sampled)

    def with_params(self, sampled: dict[str, Any]) -> TrainConfig:
        """This job with a trial's sampled settings (scratch trains all); unknown keys are typos."""
        _check_keys(sampled)
        out = replace(self, **sampled)
        return out if out.pretrained or out.freeze_scratch else replace(out, unfreeze="all")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, the inverse of ``from_dict``."""
        return asdict(self)

    @property
    def metric(self) -> str:
        """The validation metric that selects checkpoints and drives early stopping."""
        return f"val_{TASK_METRIC[self.task]}"

    def with_manifest(self) -> TrainConfig:
        """Fill image size, number of classes and (detection) anchors from the manifest."""
        manifest = read_manifest(self.data, self.task)
        cfg = manifest["config"]
        size = {"classification": "cls_size", "segmentation": "seg_size", "detection": "det_size"}
        classes = 3 if cfg["label_map"] == "3class" else 2
        out = replace(self, image_size=int(cfg[size[self.task]]), num_classes=classes)
        if self.task == "detection" and self.anchor_sizes is None:
            from models.detectors import anchors_from_boxes

            boxes = manifest["tasks"]["detection"].get("boxes", {})
            anchors = anchors_from_boxes(boxes)
            if anchors is not None:
                out = replace(out, anchor_sizes=anchors[0], anchor_aspects=anchors[1])
        return out

    @property
    def lesion_detector(self) -> bool:
        """A class-agnostic detector (lesion vs background), the leaderboard's headline."""
        return self.task == "detection" and self.detection_classes == "lesion"

    def model_spec(self) -> ModelSpec:
        """The model this job trains; its input size and classes come from the manifest."""
        from models import ModelSpec

        if not self.image_size or not self.num_classes:
            raise ValueError(
                f"{self.model}: the image size and classes of a job come from the prepared "
                f"data's manifest, not read yet (TrainConfig.with_manifest)"
            )

        return ModelSpec(
            name=self.model,
            num_classes=1 if self.lesion_detector else self.num_classes,
            pretrained=self.pretrained,
            unfreeze=self.unfreeze if self.pretrained or self.freeze_scratch else "all",
            input_size=self.image_size,
            in_chans=self.in_chans,
            dropout=self.dropout,
            encoder=self.encoder,
            weights_dir=self.weights_dir,
            anchor_sizes=self.anchor_sizes,
            anchor_aspects=self.anchor_aspects,
            freeze_scratch=self.freeze_scratch and not self.pretrained,
        )

    def run_name(self) -> str:
        """A stable name: re-running the same job resumes it instead of starting over."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
        return f"train-{self.model}-{self.task}-{digest[:8]}"


def _check_keys(data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown TrainConfig keys {unknown}")


def read_manifest(data: str | Path, task: str) -> dict[str, Any]:
    """The prepare manifest (in a folder or at a URI), checked to hold ``task``."""
    store = Store.at(data)
    path = store.uri("manifest.json")
    try:
        manifest = json.loads(store.read_bytes("manifest.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run `mammobench prepare` first") from None
    if task not in manifest.get("tasks", {}):
        raise ValueError(f"{path} holds no {task} data: run `mammobench prepare --task {task}`")
    return manifest


def shard_paths(data: str | Path, task: str, split: str) -> list[str]:
    """Absolute paths or URIs of one split's Parquet shards, from the manifest."""
    shards = read_manifest(data, task)["tasks"][task].get("shards", {})
    store = Store.at(data)
    if split not in shards:
        raise ValueError(
            f"{store.uri('manifest.json')} lists no {split} shards of {task}: "
            "run `mammobench prepare` again"
        )
    return [store.uri(name) for name in shards[split]]
