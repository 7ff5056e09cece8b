"""Lesion detectors from torchvision (Faster R-CNN), classes benign/malignant + background.

Scratch models are torchvision's builders with `weights=None, weights_backbone=None`.
Pretrained means an ImageNet classification backbone, as torchvision's `weights_backbone`:
the weights file `<name>.pth` holds the torchvision classification model's state dict
(`torchvision.models.get_model("resnet50", weights="IMAGENET1K_V1").state_dict()`), and the
backbone's BatchNorm layers become `FrozenBatchNorm2d`, as in torchvision's own recipe.
The detector's internal resize follows the prepared image size (`min_size = max_size =
input_size`) instead of torchvision's default 800/1333.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torchvision.models import get_model_builder, get_weight
from torchvision.ops import FrozenBatchNorm2d

from models.freezing import StageGroups
from models.spec import ModelSpec
from models.weights import (
    WeightsSource,
    find_local_weights,
    load_weights_file,
    not_found_error,
    url_weights_source,
)

DETECTION_CLASSES = ("background", "benign", "malignant")
"""Label ids of the detection targets: 0 is background, as torchvision expects."""


@dataclass(frozen=True)
class DetectorConfig:
    """How a registry entry maps onto torchvision.

    Attributes:
        builder: torchvision detection builder name, e.g. "fasterrcnn_resnet50_fpn".
        backbone: torchvision classification model the backbone comes from.
        backbone_weights: ImageNet weights enum name of that model.
    """

    builder: str
    backbone: str
    backbone_weights: str


def build_detector(spec: ModelSpec, config: DetectorConfig) -> nn.Module:
    """Builds the detector for `spec`, loading a pretrained backbone if asked."""
    model = get_model_builder(config.builder)(
        weights=None,
        weights_backbone=None,
        num_classes=spec.num_classes + 1,
        min_size=spec.input_size,
        max_size=spec.input_size,
    )
    if spec.pretrained:
        _load_backbone(model.backbone.body, _backbone_state_dict(spec, config))
    if spec.in_chans == 1:
        _adapt_to_grayscale(model)
    return model


def detector_groups(model: nn.Module) -> StageGroups:
    """The backbone stages of torchvision's `trainable_backbone_layers`, input side first.

    ResNet: stem (conv1, bn1), layer1..layer4. MobileNetV3: the blocks between torchvision's
    stage indices (first layer, the blocks marked `_is_cn`, the last layer).
    """
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
    """torchvision's ImageNet backbone weights, as file `<name>.pth`."""
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
    )


def hub_state_dict(config: DetectorConfig) -> dict[str, torch.Tensor]:
    """Downloads (or reads from torch.hub's cache) the ImageNet backbone weights."""
    weights = get_weight(config.backbone_weights)
    return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)


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
