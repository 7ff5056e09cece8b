"""Faster R-CNN on a timm backbone's stride-8/16/32 features, for lesions of ~20 pixels.

torchvision's MobileNetV3 Faster R-CNN builds its FPN from strides 16 and 32 only: a 20 px lesion
is one or two cells there. Here the FPN (`FPN_CHANNELS` channels) takes timm's features at strides
8, 16 and 32, every level carries the same anchors (one set per location, from the training
boxes' sizes), and the RoI pooling reads the stride-8 level, where a lesion still spans a few
cells. The input is normalised with the weights' own mean and std (tf_efficientnet_lite0: 0.5).
A pretrained body gets timm's frozen BatchNorm (statistics and affine kept, activation too), as
torchvision's recipe freezes its backbones' BatchNorm.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from timm.models import get_pretrained_cfg
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

from models.freezing import EFFICIENTNET_STAGES, StageGroups, matcher_groups
from models.spec import ModelSpec

FEATURE_LEVELS = (2, 3, 4)  # timm feature indices of strides 8, 16, 32
FPN_CHANNELS = 128
BOX_HEAD = 256  # the box head's hidden width
DEFAULT_ANCHORS = (16.0, 24.0, 32.0, 48.0, 64.0)  # replaced by the training boxes' sizes
DEFAULT_ASPECTS = (0.5, 1.0, 2.0)


class TimmFpn(nn.Module):
    """A timm `features_only` model (`body`) and an FPN over its levels (`fpn`)."""

    def __init__(self, body: nn.Module, channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), channels)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Maps normalised images to FPN levels "0" (stride 8), "1" and "2" (stride 32)."""
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def build_timm_detector(
    spec: ModelSpec, timm_name: str, weights: Any, options: dict[str, Any]
) -> FasterRCNN:
    """The detector on `timm_name`'s features.

    Args:
        spec: Input size and channels, classes, pretrained or not.
        timm_name: The timm architecture of the body.
        weights: Loads the pretrained weights into the body (`weights(body)`), or None.
        options: Further `FasterRCNN` keyword arguments (sizes, thresholds, samples).
    """
    body = timm.create_model(
        timm_name, features_only=True, out_indices=FEATURE_LEVELS, in_chans=spec.in_chans
    )
    if weights is not None:
        weights(body)
        body = freeze_batch_norm_2d(body)
    cfg = get_pretrained_cfg(timm_name)
    mean, std = list(cfg.mean), list(cfg.std)
    if spec.in_chans == 1:
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    levels = len(FEATURE_LEVELS)
    anchors = AnchorGenerator((DEFAULT_ANCHORS,) * levels, (DEFAULT_ASPECTS,) * levels)
    box_head = TwoMLPHead(FPN_CHANNELS * 7 * 7, BOX_HEAD)
    return FasterRCNN(
        TimmFpn(body, FPN_CHANNELS),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(BOX_HEAD, spec.num_classes + 1),
        image_mean=mean,
        image_std=std,
        **options,
    )


def timm_detector_groups(model: FasterRCNN) -> StageGroups:
    """The body's stem, then each of its blocks (the FPN and heads always train)."""
    return matcher_groups(model.backbone.body, EFFICIENTNET_STAGES, "backbone.body.")
