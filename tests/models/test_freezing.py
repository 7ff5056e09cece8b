"""Unfreeze last N: exactly the intended parameters train, frozen BatchNorm stays frozen."""

import copy
import pickle
from itertools import chain

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from models import available_models, build_model, model_info, trainable_params
from models.freezing import is_frozen_batchnorm, unfreeze_last
from models.registry import REGISTRY

GROUPED_PREFIX = {"classification": "backbone.", "segmentation": "net.encoder."}
GROUPED_PREFIX["detection"] = "backbone.body."


def batch_for(name: str, model: nn.Module, size: int):
    if REGISTRY[name].task == "detection":
        return [torch.rand(3, size, size) for _ in range(2)]
    return torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", available_models())
def test_stage_groups_partition_the_backbone_in_order(name: str, scratch) -> None:
    model = scratch(name)
    groups = REGISTRY[name].groups(model)
    names = [n for n, _ in model.named_parameters()]
    flat = list(chain(*groups))
    assert all(groups) and len(flat) == len(set(flat))
    assert set(flat) == {n for n in names if n.startswith(GROUPED_PREFIX[REGISTRY[name].task])}
    firsts = [min(names.index(n) for n in group) for group in groups]
    assert firsts == sorted(firsts), "groups must run from the input side to the output"


@pytest.mark.parametrize("name", available_models())
def test_unfreeze_one_trains_the_last_group_and_the_head(name: str, pretrained) -> None:
    model = pretrained(name, unfreeze=1)
    groups = REGISTRY[name].groups(model)
    frozen = set(chain(*groups[:-1]))
    params = dict(model.named_parameters())
    assert {n for n, p in params.items() if not p.requires_grad} == frozen
    assert trainable_params(model) == sum(p.numel() for n, p in params.items() if n not in frozen)


@pytest.mark.parametrize("name", ["mobilenetv2", "unet", "fasterrcnn_mobilenet"])
def test_zero_trains_the_head_only_and_all_trains_everything(name: str, pretrained) -> None:
    prefix = GROUPED_PREFIX[REGISTRY[name].task]
    head_only = pretrained(name, unfreeze=0)
    for param_name, param in head_only.named_parameters():
        assert param.requires_grad != param_name.startswith(prefix), param_name
    everything = pretrained(name, unfreeze="all")
    assert all(p.requires_grad for p in everything.parameters())


def densenet121_trains(name: str) -> bool:
    """norm5 + denselayer3..16 of the last dense block (Keras: the last 100 layers)."""
    if name.startswith("features.denseblock4."):
        return int(name.split(".")[2].removeprefix("denselayer")) >= 3
    return name.startswith("features.norm5")


def mobilenetv2_trains(name: str) -> bool:
    """Keras block_4..block_16 and Conv_1 (Keras: the last 120 layers)."""
    if name.startswith("blocks."):
        stage, index = map(int, name.split(".")[1:3])
        return sum((1, 2, 3, 4, 3, 3, 1)[:stage]) + index >= 4  # flat block index
    return name.startswith(("conv_head", "bn2"))


def efficientnet_lite0_trains(name: str) -> bool:
    """MobileNetV2's rule: blocks from the second stride-8 block on (flat index 4), conv_head."""
    if name.startswith("blocks."):
        stage, index = map(int, name.split(".")[1:3])
        return sum((1, 2, 2, 3, 3, 4, 1)[:stage]) + index >= 4  # flat block index
    return name.startswith(("conv_head", "bn2"))


STUDY_TRAINABLE = {
    # block4 + block5 convolutions (Keras: the last 8 layers, 2 of them poolings)
    "vgg16": lambda name: name.split(".")[1] in {"17", "19", "21", "24", "26", "28"},
    # conv5_x (Keras: the last 30 layers)
    "resnet50": lambda name: name.startswith("layer4."),
    "densenet121": densenet121_trains,
    "mobilenetv2": mobilenetv2_trains,
    "efficientnet_lite0": efficientnet_lite0_trains,
    # frozen backbone
    "vit_b16": lambda name: False,
}


@pytest.mark.parametrize("name", sorted(STUDY_TRAINABLE))
def test_study_unfreeze_matches_the_study(name: str, pretrained) -> None:
    model = pretrained(name, unfreeze=model_info(name)["study_unfreeze"])
    for param_name, param in model.backbone.named_parameters():
        assert param.requires_grad == STUDY_TRAINABLE[name](param_name), param_name
    assert all(p.requires_grad for p in model.head.parameters())


@pytest.mark.parametrize(
    "name", ["resnet50", "densenet121", "mobilenetv2", "efficientnet_b0", "unet", "deeplabv3plus"]
)
def test_frozen_batchnorm_survives_train_mode(name: str, pretrained, spec_for) -> None:
    model = copy.deepcopy(pretrained(name, unfreeze=1)).train()
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    frozen = [m for m in batchnorms if is_frozen_batchnorm(m)]
    trainable = [m for m in batchnorms if not is_frozen_batchnorm(m)]
    assert frozen and trainable
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorms]
    model(batch_for(name, model, spec_for(name).input_size))
    for module, (mean, var) in zip(batchnorms, before, strict=True):
        changed = not torch.equal(module.running_mean, mean) or not torch.equal(
            module.running_var, var
        )
        assert changed != is_frozen_batchnorm(module)
        assert module.training != is_frozen_batchnorm(module)


@pytest.mark.parametrize("name", ["fasterrcnn", "fasterrcnn_mobilenet"])
def test_pretrained_detector_backbones_use_frozen_batchnorm(name: str, pretrained) -> None:
    body = pretrained(name, unfreeze="all").backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())


def test_frozen_parameters_get_no_gradient(pretrained, spec_for) -> None:
    model = pretrained("resnet50", unfreeze=3).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name
    model.zero_grad(set_to_none=True)


def test_scratch_models_train_everything(spec_for) -> None:
    model = build_model(spec_for("mobilenetv2", unfreeze=0))
    assert all(p.requires_grad for p in model.parameters())


def test_unfreeze_beyond_the_groups_is_an_error(weights_dir, spec_for) -> None:
    spec = spec_for("unet", pretrained=True, unfreeze=6, weights_dir=str(weights_dir("unet")))
    with pytest.raises(ValueError, match="5 stage groups"):
        build_model(spec)


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Flatten()
    )


def test_unfreezing_again_releases_the_batchnorm() -> None:
    net = tiny_net()
    groups = [["0.weight", "0.bias", "1.weight", "1.bias"], ["2.weight", "2.bias"]]
    groups[1] += ["3.weight", "3.bias"]
    unfreeze_last(net, groups, 1)
    assert is_frozen_batchnorm(net[1]) and not is_frozen_batchnorm(net[3])
    unfreeze_last(net, groups, "all")
    net.train()(torch.randn(2, 3, 8, 8))
    assert net[1].training and all(p.requires_grad for p in net.parameters())


def test_frozen_models_can_be_copied_and_pickled() -> None:
    net = tiny_net()
    unfreeze_last(net, [["0.weight", "0.bias", "1.weight", "1.bias"]], 0)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        clone.train()(torch.randn(2, 3, 8, 8))
        assert not clone[1].training and clone[3].training


@pytest.mark.parametrize("name", ["vgg16", "mobilenetv2"])
def test_the_studys_scratch_setting_freezes_random_early_layers(name: str) -> None:
    # study_frozen: random weights, only the architecture's study_unfreeze last groups train
    from tests.models.conftest import small_spec

    study = model_info(name)["study_unfreeze"]
    model = build_model(small_spec(name, pretrained=False, unfreeze=study, freeze_scratch=True))
    groups = REGISTRY[name].groups(model)
    frozen = set(chain(*groups[: len(groups) - study]))
    assert frozen and {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    everything = build_model(small_spec(name, pretrained=False, unfreeze=study))  # flag not set
    assert all(p.requires_grad for p in everything.parameters())
