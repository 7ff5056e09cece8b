"""ModelSpec: plain-data round trip and validation."""

import pytest

from models import ModelSpec


def test_dict_round_trip() -> None:
    spec = ModelSpec("unet", pretrained=True, unfreeze=2, encoder="resnet18", weights_dir="/w")
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="lr"):
        ModelSpec.from_dict({"name": "vgg16", "lr": 0.1})


def test_unfreeze_accepts_digit_strings_and_all() -> None:
    assert ModelSpec("vgg16", unfreeze="3").unfreeze == 3
    assert ModelSpec("vgg16", unfreeze="all").unfreeze == "all"


@pytest.mark.parametrize(
    "field, value",
    [
        ("unfreeze", -1),
        ("unfreeze", "some"),
        ("unfreeze", True),
        ("in_chans", 2),
        ("num_classes", 0),
        ("dropout", 1.0),
        ("input_size", 8),
    ],
)
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ModelSpec("vgg16", **{field: value})
