"""Image classifiers: a timm backbone plus the study's classification head.

The backbone is created with `num_classes=0`, so it returns pooled features (global average
pooling for CNNs, the class token for ViT); the head then follows the study:
dense → [batch norm] → ReLU → dropout → classes. VGG16 drops timm's fc6/fc7 (`pre_logits`),
as Keras' `include_top=False` did.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from timm.models import get_pretrained_cfg, group_parameters
from torch import nn

from models.freezing import StageGroups
from models.spec import ModelSpec
from models.weights import (
    WeightsSource,
    check_covers,
    find_local_weights,
    hf_weights_source,
    load_weights_file,
    not_found_error,
)


@dataclass(frozen=True)
class ClassifierConfig:
    """How a registry entry maps onto timm.

    Attributes:
        timm_name: timm architecture; its default pretrained tag gives the ImageNet weights.
        head_batchnorm: Batch norm after the head's dense layer (the study's ResNet50, ViT).
        head_hidden: Width of the head's dense layer.
        sets_img_size: Pass `img_size=input_size` (ViT position embeddings).
        drop_pre_logits: Remove timm's fully connected `pre_logits` block (VGG fc6/fc7).
    """

    timm_name: str
    head_batchnorm: bool = False
    head_hidden: int = 256
    sets_img_size: bool = False
    drop_pre_logits: bool = False


class StudyHead(nn.Sequential):
    """Classification head on pooled features: dense → [BN] → ReLU → dropout → classes."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: int, dropout: float, batchnorm: bool
    ) -> None:
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        super().__init__(*layers)


class TimmClassifier(nn.Module):
    """A timm feature extractor (`backbone`) followed by a `StudyHead` (`head`)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images (B, C, H, W) to class logits (B, num_classes)."""
        return self.head(self.backbone(x))


def build_classifier(spec: ModelSpec, config: ClassifierConfig) -> TimmClassifier:
    """Builds the classifier for `spec`, loading pretrained backbone weights if asked."""
    backbone = _create_backbone(spec, config)
    head = StudyHead(
        backbone.num_features,
        spec.num_classes,
        hidden=config.head_hidden,
        dropout=spec.dropout,
        batchnorm=config.head_batchnorm,
    )
    return TimmClassifier(backbone, head)


def classifier_groups(model: TimmClassifier) -> StageGroups:
    """Backbone stage groups from timm's fine-grained `group_matcher` (stem, then blocks)."""
    backbone = model.backbone
    groups = group_parameters(backbone, backbone.group_matcher(coarse=False))
    return [[f"backbone.{name}" for name in groups[key]] for key in sorted(groups)]


def classifier_weights_source(spec: ModelSpec, config: ClassifierConfig) -> WeightsSource:
    """timm's default ImageNet weights for the entry, as file `<name>.pth`."""
    cfg = get_pretrained_cfg(config.timm_name)
    tagged = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    export = (
        "import timm, torch; "
        f"torch.save(timm.create_model('{tagged}', pretrained=True).state_dict(), '{{path}}')"
    )
    return hf_weights_source(
        stem=spec.name,
        hub=f"timm '{tagged}' (Hugging Face hub)",
        repo_id=cfg.hf_hub_id or f"timm/{tagged}",
        export_code=export,
    )


def _create_backbone(spec: ModelSpec, config: ClassifierConfig) -> nn.Module:
    kwargs: dict = {"num_classes": 0, "in_chans": spec.in_chans}
    if config.sets_img_size:
        kwargs["img_size"] = spec.input_size
    if not spec.pretrained:
        return _trim(timm.create_model(config.timm_name, pretrained=False, **kwargs), config)
    source = classifier_weights_source(spec, config)
    local = find_local_weights(spec, source)
    if local is None:
        try:
            return _trim(timm.create_model(config.timm_name, pretrained=True, **kwargs), config)
        except OSError as err:
            raise not_found_error(spec, source, err) from err
    # timm drops the ImageNet classifier, adapts the first conv to in_chans and resamples
    # ViT position embeddings to img_size, exactly as for hub weights; it loads non-strictly
    # once the classifier is dropped, hence the explicit coverage check.
    state = load_weights_file(local)
    file_keys = set(state)
    overlay = {"state_dict": state}
    backbone = timm.create_model(
        config.timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
    )
    backbone.pretrained_cfg.pop("state_dict")  # do not keep a second copy of the weights
    backbone.pretrained_cfg["file"] = str(local)
    backbone = _trim(backbone, config)
    check_covers(local, file_keys, backbone.state_dict())
    return backbone


def _trim(backbone: nn.Module, config: ClassifierConfig) -> nn.Module:
    if config.drop_pre_logits:
        backbone.pre_logits = nn.Identity()
    return backbone
