"""Search-space files: every shipped space loads; bad files fail naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import SpaceError, available_spaces, default_space, load_space
from search_spaces.benchmarks import published

CHOICES = [*range(18), "all"]


@pytest.mark.parametrize("name", available_spaces())
def test_shipped_spaces_load_and_cover_the_study_question(name: str) -> None:
    space = load_space(name)
    assert space.params["pretrained"] == {"grid": [True, False]}
    assert "unfreeze" in space.params and "lr" in space.params
    low, high = space.params["lr"]["loguniform"]
    assert 0 < low < high


def test_every_family_has_a_default_space() -> None:
    names = {
        default_space(t, m)
        for t, m in [
            ("classification", "resnet50"),
            ("classification", "vit_b16"),
            ("segmentation", "unet"),
            ("detection", "fasterrcnn"),
        ]
    }
    assert names == set(available_spaces())


def test_resolve_substitutes_the_study_setting() -> None:
    space = load_space("cnn-classification").resolve(CHOICES, study_unfreeze=13, pretrained_ok=True)
    assert space.params["unfreeze"] == {"choice": [0, 13, "all"]}


def test_resolve_without_weights_drops_the_pretrained_half() -> None:
    space = load_space("cnn-classification").resolve(
        CHOICES, study_unfreeze=13, pretrained_ok=False
    )
    assert space.params["pretrained"] == {"value": False} and "unfreeze" not in space.params


def test_resolve_rejects_stages_the_architecture_lacks(tmp_path: Path) -> None:
    path = _write(tmp_path, "params:\n  unfreeze: {choice: [0, 40]}\n")
    with pytest.raises(SpaceError, match=r"space\.yaml: params\.unfreeze: 40"):
        load_space(path).resolve(CHOICES, study_unfreeze=None, pretrained_ok=True)


def test_numbers_written_as_1e_minus_5_are_read_as_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, "params:\n  lr: {loguniform: [1e-5, 1e-2]}\n")
    assert load_space(path).params["lr"] == {"loguniform": [1e-5, 1e-2]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("params:\n  lr: {loguniform: [0.1, 0.01]}\n", "params.lr: loguniform needs"),
        ("params:\n  lr: {loguniform: [0, 0.01]}\n", "params.lr: loguniform needs a positive"),
        ("params:\n  batch_size: {choice: []}\n", "params.batch_size: choice needs a non-empty"),
        ("params:\n  learning_rate: {choice: [1]}\n", "params.learning_rate: unknown setting"),
        ("params:\n  lr: {normal: [1, 2]}\n", "params.lr: must be one of"),
        ("params:\n  pretrained: {grid: [yes-please]}\n", "params.pretrained: 'yes-please'"),
        ("params: {}\n", "params: must be a non-empty mapping"),
        ("params:\n  lr: {value: 0.1}\nsamples: 3\n", "unknown key(s) ['samples']"),
        ("params:\n  lr: [0.1\n", "not valid YAML"),
    ],
)
def test_bad_space_files_name_the_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_task_and_unknown_names_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("task: survival\nparams:\n  lr: {value: 0.1}\n")
    with pytest.raises(SpaceError, match="task: must be one of"):
        load_space(path)
    with pytest.raises(SpaceError, match=r"unknown space 'nope'.*cnn-classification"):
        load_space("nope")


def _write(folder: Path, body: str) -> Path:
    path = folder / "space.yaml"
    path.write_text("task: classification\n" + body)
    return path


def test_published_figures_are_the_studys_and_callers_cannot_change_them() -> None:
    figures = published("vgg16", "pretrained")
    assert figures == {"accuracy": 0.7739}  # the study's transfer-learning VGG16 test accuracy
    figures["accuracy"] = 0.0
    assert published("vgg16", "pretrained") == {"accuracy": 0.7739}
    assert published("unet", "scratch")["dice"] == 0.8402
    assert published("fasterrcnn_mobilenet", "scratch") == {}  # the study published no detection
