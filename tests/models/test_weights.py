"""Pretrained weights: local files round-trip, missing weights fail loudly, quick availability."""

import pickle
import time

import pytest
import torch
from safetensors.torch import save_file

from models import WeightsNotFoundError, available_models, build_model, weights_available
from models import detectors as detectors_module
from models.registry import REGISTRY


@pytest.mark.parametrize("name", available_models())
def test_local_weights_round_trip(name: str, saved_state, pretrained, part_of) -> None:
    saved = saved_state(name)
    loaded = part_of(pretrained(name), name).state_dict()
    assert loaded, "nothing was loaded"
    for key, tensor in loaded.items():
        assert torch.equal(tensor, saved[key]), key


def test_safetensors_files_are_read(tmp_path, scratch, spec_for, part_of) -> None:
    state = {
        k: v.contiguous()
        for k, v in part_of(scratch("efficientnet_b0"), "efficientnet_b0").state_dict().items()
    }
    save_file(state, str(tmp_path / "efficientnet_b0.safetensors"))
    model = build_model(spec_for("efficientnet_b0", pretrained=True, weights_dir=str(tmp_path)))
    assert torch.equal(model.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_weights_dir_comes_from_the_environment(
    monkeypatch, weights_dir, saved_state, spec_for, part_of
) -> None:
    directory = weights_dir("mobilenetv2")
    monkeypatch.setenv("MAMMOBENCH_WEIGHTS_DIR", str(directory))
    model = build_model(spec_for("mobilenetv2", pretrained=True))  # the spec names no folder
    assert model.backbone.pretrained_cfg["file"] == str(directory / "mobilenetv2.pth")
    saved = saved_state("mobilenetv2")
    for key, tensor in part_of(model, "mobilenetv2").state_dict().items():
        assert torch.equal(tensor, saved[key]), key  # the file in the env's folder was loaded


@pytest.mark.parametrize(
    "name, first_conv",
    [("mobilenetv2", "conv_stem"), ("unet", "conv1"), ("fasterrcnn_mobilenet", "0.0")],
)
def test_one_channel_pretrained_sums_the_rgb_kernels(
    name: str, first_conv: str, saved_state, pretrained, part_of
) -> None:
    rgb = saved_state(name)[f"{first_conv}.weight"]
    gray = part_of(pretrained(name, in_chans=1), name).get_submodule(first_conv).weight
    assert gray.shape[1] == 1
    torch.testing.assert_close(gray, rgb.sum(dim=1, keepdim=True))


@pytest.mark.parametrize("name", ["mobilenetv2", "unet", "fasterrcnn_mobilenet"])
def test_missing_weights_name_the_file_and_the_fix(name, tmp_path, monkeypatch, spec_for) -> None:
    # timm and smp go to the Hugging Face hub, offline here (HF_HUB_OFFLINE=1); torchvision's
    # download.pytorch.org is reachable from some machines, so the detector's download is cut
    tried = []

    def offline(config):
        tried.append(config)
        raise OSError("download.pytorch.org unreachable")

    if name == "fasterrcnn_mobilenet":
        monkeypatch.setattr(detectors_module, "hub_state_dict", offline)
    spec = spec_for(name, pretrained=True, weights_dir=str(tmp_path))
    stem = REGISTRY[name].weights_source(spec).stem
    with pytest.raises(WeightsNotFoundError) as err:
        build_model(spec)
    message = str(err.value)
    assert f"'{name}'" in message
    assert str(tmp_path / f"{stem}.pth") in message
    assert "MAMMOBENCH_WEIGHTS_DIR" in message and "torch.save(" in message
    assert len(tried) == (name == "fasterrcnn_mobilenet")  # the download was tried, and failed


def test_missing_weights_without_a_weights_dir(spec_for) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"no weights directory set.*vgg16\.pth"):
        build_model(spec_for("vgg16", pretrained=True))


def test_an_incomplete_file_is_rejected_not_half_loaded(tmp_path, scratch, spec_for) -> None:
    # timm loads non-strictly once the classifier is dropped; missing tensors must not
    # silently stay random.
    state = scratch("mobilenetv2").backbone.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.6.")}
    torch.save(partial, tmp_path / "mobilenetv2.pth")
    with pytest.raises(ValueError, match="does not fit"):
        build_model(spec_for("mobilenetv2", pretrained=True, weights_dir=str(tmp_path)))


def test_a_file_of_another_architecture_is_rejected(tmp_path, scratch, spec_for) -> None:
    torch.save(scratch("efficientnet_b0").backbone.state_dict(), tmp_path / "mobilenetv2.pth")
    with pytest.raises((ValueError, RuntimeError)):
        build_model(spec_for("mobilenetv2", pretrained=True, weights_dir=str(tmp_path)))


def test_weights_files_are_loaded_weights_only(tmp_path, spec_for) -> None:
    torch.save({"conv_stem.weight": torch.zeros(1), "evil": object()}, tmp_path / "mobilenetv2.pth")
    with pytest.raises(pickle.UnpicklingError, match=r"Weights only load failed"):
        build_model(spec_for("mobilenetv2", pretrained=True, weights_dir=str(tmp_path)))


def test_weights_available_with_a_local_file(weights_dir, spec_for) -> None:
    ok, reason = weights_available(spec_for("unet", weights_dir=str(weights_dir("unet"))))
    assert ok and "unet_resnet18.pth" in reason


@pytest.mark.parametrize("name", ["resnet50", "deeplabv3plus", "fasterrcnn"])
def test_weights_available_is_quick_and_explains(name: str, tmp_path, spec_for) -> None:
    start = time.monotonic()
    ok, reason = weights_available(spec_for(name, weights_dir=str(tmp_path)), timeout_s=2.0)
    assert time.monotonic() - start < 5.0
    assert not ok
    assert str(tmp_path) in reason and "MAMMOBENCH_WEIGHTS_DIR" in reason
