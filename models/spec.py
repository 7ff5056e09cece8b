"""`ModelSpec`: everything needed to build one model, as plain data.

Ray passes configs as dicts, so a worker rebuilds the spec with `ModelSpec.from_dict(config)`;
`spec.to_dict()` is what gets logged as run parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Unfreeze = int | Literal["all"]


@dataclass(frozen=True)
class ModelSpec:
    """What to build.

    Attributes:
        name: Registry name (see `models.available_models()`).
        num_classes: Classifier outputs; for detectors the number of foreground classes
            (benign, malignant), background is added internally. Ignored by segmenters,
            which always have one output channel (lesion logits).
        pretrained: Start from ImageNet weights (weights dir first, then the library's hub).
        unfreeze: With `pretrained` (or `freeze_scratch`), how many of the backbone's last
            stage groups train: `0` = head only, `"all"` = everything. Scratch models
            otherwise train everything.
        input_size: Side of the square input in pixels (ViT position embeddings, detector
            resize and segmenter stride checks follow it).
        in_chans: 3 = the caller repeats grayscale to three channels (the study); 1 = the
            first convolution is adapted to one channel (pretrained RGB kernels are summed).
        dropout: Dropout of the classification head.
        encoder: Segmenter encoder (segmentation-models-pytorch name); `None` = entry default.
        weights_dir: Directory with one weights file per architecture; `None` falls back to
            `$MAMMOBENCH_WEIGHTS_DIR`.
        anchor_sizes: Detectors: anchor sides in input pixels, smallest first (see
            `models.detectors.anchors_from_boxes`); `None` keeps the library's.
        anchor_aspects: Detectors: anchor aspect ratios (height / width); `None` keeps the
            library's (0.5, 1, 2).
        freeze_scratch: A scratch model whose early groups keep their random weights
            (`unfreeze` says how many train): the study's "from scratch" models.
    """

    name: str
    num_classes: int = 2
    pretrained: bool = False
    unfreeze: Unfreeze = "all"
    input_size: int = 224
    in_chans: int = 3
    dropout: float = 0.5
    encoder: str | None = None
    weights_dir: str | None = None
    anchor_sizes: tuple[float, ...] | None = None
    anchor_aspects: tuple[float, ...] | None = None
    freeze_scratch: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "unfreeze", _parse_unfreeze(self.unfreeze))
        for name in ("anchor_sizes", "anchor_aspects"):  # lists after a trip through JSON
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels, got {self.input_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Builds a spec from a plain dict; unknown keys are an error (they are typos)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown ModelSpec keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, the inverse of `from_dict`."""
        return asdict(self)


def _parse_unfreeze(value: Any) -> Unfreeze:
    """Accepts an int >= 0, a digit string (from YAML/CLI) or "all"."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f'unfreeze must be an int >= 0 or "all", got {value!r}')
