"""Every registered model builds, runs a CPU forward and backward and has the right output."""

import pytest
import torch

from models import available_models, build_model

BATCH = 2


def detection_targets(size: int) -> list[dict[str, torch.Tensor]]:
    box = torch.tensor([[4.0, 6.0, size / 2, size / 2 + 3]])
    return [{"boxes": box, "labels": torch.tensor([label])} for label in (1, 2)]


def check_classifier(model, size: int, in_chans: int = 3) -> None:
    logits = model(torch.randn(BATCH, in_chans, size, size))
    assert logits.shape == (BATCH, 2)
    logits.sum().backward()


def check_segmenter(model, size: int, in_chans: int = 3) -> None:
    logits = model(torch.randn(BATCH, in_chans, size, size))
    assert logits.shape == (BATCH, 1, size, size)
    logits.mean().backward()


def check_detector(model, size: int, in_chans: int = 3) -> None:
    images = [torch.rand(in_chans, size, size) for _ in range(BATCH)]
    model.train()
    losses = model(images, detection_targets(size))
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == BATCH
    for output in outputs:
        assert set(output) == {"boxes", "labels", "scores"}
        assert output["boxes"].shape[1:] == (4,)
        assert set(output["labels"].tolist()) <= {1, 2}


CHECKS = {
    "classification": check_classifier,
    "segmentation": check_segmenter,
    "detection": check_detector,
}


def task_of(name: str) -> str:
    from models.registry import REGISTRY

    return REGISTRY[name].task


@pytest.mark.parametrize("name", available_models())
def test_scratch_forward_backward(name: str, scratch, spec_for) -> None:
    model = scratch(name)
    model.zero_grad(set_to_none=True)
    CHECKS[task_of(name)](model.train(), spec_for(name).input_size)
    with_grad = [p.grad is not None for p in model.parameters()]
    if task_of(name) == "detection":  # a few random proposals need not reach every weight
        assert sum(with_grad) > len(with_grad) // 2
    else:
        assert all(with_grad)


@pytest.mark.parametrize("name", ["mobilenetv2", "vit_b16", "unet", "fasterrcnn_mobilenet"])
def test_one_channel_input_adapts_the_first_conv(name: str, spec_for) -> None:
    spec = spec_for(name, in_chans=1)
    model = build_model(spec)
    CHECKS[task_of(name)](model.train(), spec.input_size, in_chans=1)


def test_vit_follows_the_input_size(spec_for) -> None:
    model = build_model(spec_for("vit_b16", input_size=48))
    assert model.backbone.patch_embed.img_size == (48, 48)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 2)


def test_deeplabv3plus_defaults_to_a_resnet50_encoder(spec_for) -> None:
    model = build_model(spec_for("deeplabv3plus", encoder=None))
    assert len(model.encoder.layer3) == 6  # ResNet-50: 3, 4, 6, 3 bottlenecks


def test_a_wheels_segmenter_keeps_its_own_encoder(spec_for) -> None:
    with pytest.raises(ValueError, match="built on tu-tf_efficientnet_lite0"):
        build_model(spec_for("unet_efficientnet_lite0", encoder="resnet18"))


def test_segmenter_input_size_must_fit_the_stride(spec_for) -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model(spec_for("unet", input_size=48))


def test_detector_resizes_to_the_prepared_size(spec_for) -> None:
    model = build_model(spec_for("fasterrcnn_mobilenet", input_size=96))
    assert model.transform.min_size == (96,) and model.transform.max_size == 96
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # + background
