"""Registry: names, errors, listings and the package's import boundary."""

import json
import sys
from pathlib import Path

import pytest

import models
from models import UnknownModelError, available_models, build_model, model_info, models_table
from models.freezing import trainable_params
from tests.imports import imported_modules, violations

EXPECTED = {
    "classification": [
        "vgg16",
        "resnet50",
        "densenet121",
        "mobilenetv2",
        "vit_b16",
        "efficientnet_b0",
        "convnext_tiny",
        "efficientnet_lite0",
    ],
    "segmentation": ["unet", "deeplabv3plus", "unet_efficientnet_lite0"],
    "detection": ["fasterrcnn", "fasterrcnn_mobilenet", "fasterrcnn_efficientnet_lite0"],
}
STUDY_UNFREEZE = {"vgg16": 6, "resnet50": 3, "densenet121": 15, "mobilenetv2": 13, "vit_b16": 0}
STUDY_UNFREEZE["efficientnet_lite0"] = 12  # MobileNetV2's rule


def test_available_models_by_task() -> None:
    assert available_models() == [name for names in EXPECTED.values() for name in names]
    for task, names in EXPECTED.items():
        assert available_models(task) == names
    with pytest.raises(ValueError, match="classification"):
        available_models("regression")


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="Did you mean resnet50") as err:
        build_model(models.ModelSpec("resnet5"))
    for name in available_models():
        assert name in str(err.value)
    with pytest.raises(UnknownModelError, match="vgg16"):
        model_info("alexnet")


def test_models_table_rows_are_json() -> None:
    rows = json.loads(json.dumps(models_table()))
    assert [row["name"] for row in rows] == available_models()
    keys = {
        "name",
        "task",
        "library",
        "input_size",
        "params",
        "unfreeze_choices",
        "study_unfreeze",
        "weights_file",
    }
    for row in rows:
        assert set(row) == keys and row["weights_file"].endswith(".pth")
        assert row["params"] > 1_000_000
        assert row["unfreeze_choices"][0] == 0 and row["unfreeze_choices"][-1] == "all"
    libraries = {row["name"]: row["library"] for row in rows}
    assert libraries["vgg16"] == "timm" and libraries["unet"] == "smp"
    assert libraries["fasterrcnn"] == "torchvision"


def test_models_table_params_match_a_real_build() -> None:
    row = next(r for r in models_table(input_size=64) if r["name"] == "mobilenetv2")
    assert row["input_size"] == 64
    assert row["params"] == trainable_params(build_model(models.ModelSpec("mobilenetv2")))


def test_model_info_documents_the_study_setting() -> None:
    for name in available_models():
        info = model_info(name)
        assert info["study_unfreeze"] == STUDY_UNFREEZE.get(name)
        assert info["study_unfreeze"] in [*info["unfreeze_choices"], None]
    info = model_info("densenet121")
    assert info["task"] == "classification" and info["input_size"] == 224
    assert len(info["unfreeze_choices"]) == 61  # stem + 58 dense layers + norm5, and "all"
    assert model_info("unet")["weights_file"] == "unet_resnet50.pth"
    for name in ("efficientnet_lite0", "unet_efficientnet_lite0", "fasterrcnn_efficientnet_lite0"):
        assert model_info(name)["weights_file"] == "efficientnet_lite0.pth"  # one file, 3 tasks


def test_build_model_accepts_a_plain_dict() -> None:
    model = build_model({"name": "mobilenetv2", "num_classes": 3, "input_size": 32})
    assert model.head[-1].out_features == 3


def test_package_never_imports_tracking_or_ray_training() -> None:
    forbidden = ("mlflow", "ray.tune", "ray.train", "orchestration", "search_spaces")
    assert violations(Path(models.__file__).parent, forbidden) == []


def test_package_takes_only_the_vocabulary_and_the_storage_from_data_pipeline() -> None:
    """``data_pipeline``'s names (tasks, splits) and its storage layer (a weights folder in a
    bucket), never its decoding code; the storage layer needs pyarrow alone."""
    found = imported_modules(Path(models.__file__).parent)
    assert {n for names in found.values() for n in names if n.startswith("data_pipeline")} <= {
        "data_pipeline",
        "data_pipeline.storage",
    }
    storage = imported_modules(Path(models.__file__).parents[1] / "data_pipeline")
    third_party = {n.split(".")[0] for n in storage["data_pipeline/storage.py"]}
    assert third_party - set(sys.stdlib_module_names) == {"pyarrow"}
