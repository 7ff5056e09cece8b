"""Inputs are normalised inside the model, with the constants its library gives its weights."""

import copy
import pickle

import pytest
import timm
import torch
from torchvision.models import get_model_weights

from models import WeightsNotFoundError, available_models, build_model, model_info
from models.registry import REGISTRY
from models.segmenters import encoder_mean_std

VIT_TAG = "vit_base_patch16_224.orig_in21k_ft_in1k"  # the study's google/vit-base-patch16-224


def library_mean_std(name: str, encoder: str | None = None) -> tuple[list, list]:
    """The library's own constants: timm's pretrained config (classifiers, ``tu-`` encoders),
    torchvision's for ResNets."""
    config = REGISTRY[name].build.keywords["config"]
    encoder = encoder or getattr(config, "default_encoder", None)
    if REGISTRY[name].task == "classification" or encoder.startswith("tu-"):
        cfg = timm.get_pretrained_cfg(encoder.removeprefix("tu-") if encoder else config.timm_model)
        return list(cfg.mean), list(cfg.std)
    preset = get_model_weights(encoder)["IMAGENET1K_V1"].transforms()
    return list(preset.mean), list(preset.std)


def as_image_stats(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(1, -1, 1, 1)


def bare(model: torch.nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The library model without our normalisation: timm backbone + head, or the smp model."""
    if REGISTRY[name].task == "classification":
        return model.head(model.backbone(x))
    return model.net(x)


NORMALISED = available_models("classification") + available_models("segmentation")


@pytest.mark.parametrize("name", NORMALISED)
def test_constants_are_the_libraries(name: str, scratch, spec_for) -> None:
    mean, std = library_mean_std(name, spec_for(name).encoder)
    normalize = scratch(name).normalize
    torch.testing.assert_close(normalize.mean, as_image_stats(mean))
    torch.testing.assert_close(normalize.std, as_image_stats(std))


@pytest.mark.parametrize("name", NORMALISED)
def test_forward_is_the_library_model_on_normalised_input(name: str, scratch, spec_for) -> None:
    model = scratch(name).eval()
    size = spec_for(name).input_size
    mean, std = library_mean_std(name, spec_for(name).encoder)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        expected = bare(model, name, (x - as_image_stats(mean)) / as_image_stats(std))
        torch.testing.assert_close(model(x), expected)
        assert not torch.allclose(model(x), bare(model, name, x)), "normalisation had no effect"
    model.train()


@pytest.mark.parametrize("name", ["mobilenetv2", "unet"])
def test_one_channel_uses_the_average_constants(name: str, spec_for) -> None:
    spec = spec_for(name, in_chans=1)
    model = build_model(spec).eval()
    mean, std = library_mean_std(name, spec.encoder)
    gray_mean, gray_std = sum(mean) / 3, sum(std) / 3
    assert model.normalize.mean.flatten().tolist() == pytest.approx([gray_mean])
    assert model.normalize.std.flatten().tolist() == pytest.approx([gray_std])
    x = torch.rand(2, 1, spec.input_size, spec.input_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bare(model, name, (x - gray_mean) / gray_std))


def test_pretrained_and_scratch_normalise_alike(scratch, pretrained) -> None:
    for name in ("mobilenetv2", "vit_b16", "unet"):
        built, loaded = scratch(name).normalize, pretrained(name).normalize
        assert torch.equal(built.mean, loaded.mean) and torch.equal(built.std, loaded.std)


def test_encoder_constants_offline() -> None:
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert encoder_mean_std("resnet50") == imagenet  # deeplabv3plus' default
    cfg = timm.get_pretrained_cfg("resnet18")
    assert encoder_mean_std("tu-resnet18") == (tuple(cfg.mean), tuple(cfg.std))


def test_vit_uses_the_study_weights_and_their_constants(scratch) -> None:
    model = scratch("vit_b16")
    cfg = model.backbone.pretrained_cfg
    assert f"{cfg['architecture']}.{cfg['tag']}" == VIT_TAG
    assert tuple(cfg["mean"]) == tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    assert model.normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert model.normalize.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_vit_weights_file_names_the_tag(tmp_path, spec_for) -> None:
    assert model_info("vit_b16")["weights_file"] == "vit_b16_orig_in21k_ft_in1k.pth"
    torch.save({}, tmp_path / "vit_b16.pth")  # exported from another tag: never used
    spec = spec_for("vit_b16", pretrained=True, weights_dir=str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        build_model(spec)
    message = str(err.value)
    assert f"timm.create_model('{VIT_TAG}', pretrained=True)" in message
    assert str(tmp_path / "vit_b16_orig_in21k_ft_in1k.pth") in message


def test_vit_missing_weights_without_a_weights_dir(spec_for) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"vit_b16_orig_in21k_ft_in1k\.pth") as err:
        build_model(spec_for("vit_b16", pretrained=True))
    assert VIT_TAG in str(err.value)


@pytest.mark.parametrize("name", ["mobilenetv2", "unet"])
def test_checkpoints_carry_the_constants(name: str, scratch) -> None:
    model = scratch(name)
    state = model.state_dict()
    assert {"normalize.mean", "normalize.std"} <= set(state)
    old = {k: v for k, v in state.items() if not k.startswith("normalize.")}
    with pytest.raises(RuntimeError, match=r"normalize\.mean"):  # trained without normalisation
        copy.deepcopy(model).load_state_dict(old)


def test_segmenter_copies_and_pickles(scratch, spec_for) -> None:
    model = scratch("unet").eval()
    x = torch.rand(1, 3, spec_for("unet").input_size, spec_for("unet").input_size)
    with torch.no_grad():
        expected = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert clone.encoder is clone.net.encoder
            torch.testing.assert_close(clone.eval()(x), expected)
    model.train()


def test_other_encoders_need_their_hub_config_offline() -> None:
    with pytest.raises(ValueError, match="'efficientnet-b0' comes from its hub config"):
        encoder_mean_std("efficientnet-b0")
