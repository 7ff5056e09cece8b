"""Configs with errors: a space file, a benchmark file or a CLI option with a bad key or value
fails with one message naming the file, the key and the value (the option and the value at the
CLI), no traceback, and before Ray starts."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_pipeline.prepare_plan import PrepareConfig
from models import available_models
from orchestration.cli import app
from orchestration.train.config import TrainConfig
from orchestration.tune import SweepConfig
from search_spaces import CHOICES as SPACE_CHOICES
from search_spaces import TASKS, SpaceError, benchmarks, load_space
from search_spaces.benchmarks import load_benchmark

CLS = "task: classification\n"
RUN = "runs:\n  - {model: vgg16, task: classification}\n"
REGISTRY = {model: task for task in TASKS for model in available_models(task)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (CLS + "tasks: [x]\nparams:\n  lr: {value: 0.1}\n", "unknown key(s) ['tasks']"),
        (CLS + "1: x\nfoo: y\nparams:\n  lr: {value: 0.1}\n", "unknown key(s) [1, 'foo']"),
        (CLS + "params:\n  lr_max: {value: 0.1}\n", "params.lr_max: unknown setting"),
        (CLS + "params:\n  batch_size: {value: big}\n", "params.batch_size: 'big' is not a valid"),
        (CLS + "params:\n  lr: {value: [0.1]}\n", "params.lr: [0.1] is not a valid lr"),
        (CLS + "params:\n  optimizer: {choice: [adam, sgd]}\n", "optimizer: 'sgd' is not one of"),
        (CLS + "params:\n  balance: {value: random}\n", "balance: 'random' is not one of"),
        (CLS + "params:\n  batch_size: {choice: [0, 16]}\n", "batch_size: 0 must be at least 1"),
        (CLS + "params:\n  lr: {value: -0.1}\n", "params.lr: -0.1 must be above 0"),
        (CLS + "params:\n  lr: {choice: [0, 0.1]}\n", "params.lr: 0.0 must be above 0"),
        (CLS + "params:\n  weight_decay: {uniform: [-1, 1]}\n", "weight_decay: -1.0 must be at"),
        (CLS + "params:\n  dropout: {value: 1.5}\n", "params.dropout: 1.5 must be in [0, 1)"),
        (CLS + "params:\n  unfreeze: {value: -2}\n", "params.unfreeze: -2 is not a valid"),
        (CLS + "params:\n  batch_size: {uniform: [8, 32]}\n", "batch_size: uniform draws numbers"),
        ("task: survival\nparams:\n  lr: {value: 0.1}\n", "task: must be one of"),
        (CLS + "params: [lr]\n", "params: must be a non-empty mapping"),
        (CLS + "params:\n  lr: {value: 0.1\n", "not valid YAML"),
        (CLS + "params:\n\tlr: {value: 0.1}\n", "not valid YAML"),
        (CLS + "params:\n  lr: {value: 0.1}\n  lr: {value: 1}\n", "the key 'lr' is given twice"),
        ("", "a space file is a mapping with keys ['description', 'params', 'task']; the file is"),
        ("- lr\n- batch_size\n", "found a list"),
        ("# only a comment\n", "the file is empty"),
    ],
)
def test_bad_space_files_name_file_key_and_value(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_space_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(CLS.encode() + b"description: caf\xe9\nparams:\n  lr: {value: 0.1}\n")
    with pytest.raises(SpaceError, match=r"space\.yaml: not UTF-8 text .*0xe9"):
        load_space(path)


def test_a_key_given_twice_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(CLS + "params:\n  lr: {value: 0.1}\n" + CLS)
    with pytest.raises(SpaceError, match=r"the key 'task' is given twice\n.*line 4, column 1"):
        load_space(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("run:\n  - {model: vgg16}\n" + RUN, "['run']: unknown key(s)"),
        ("runs:\n  - {model: vgg16, task: classification, lr: 0.1}\n", "runs[0].['lr']: unknown"),
        ("defaults: {train: {epochz: 3}}\n" + RUN, "defaults.train.epochz: unknown setting"),
        ("defaults: {fix: {learning_rate: 3}}\n" + RUN, "defaults.fix.learning_rate: unknown"),
        ("defaults: {samples: many}\n" + RUN, "defaults.samples: 'many' is not a valid samples"),
        ("defaults: {workers: true}\n" + RUN, "defaults.workers: True is not a valid workers"),
        ("defaults: {samples: 0}\n" + RUN, "defaults.samples: 0 must be at least 1"),
        ("defaults: {max_epochs: -5}\n" + RUN, "defaults.max_epochs: -5 must be at least 1"),
        ("defaults: {gpus_per_trial: -1}\n" + RUN, "defaults.gpus_per_trial: -1 must be at least"),
        ("defaults: {scheduler: hyperband}\n" + RUN, "scheduler: 'hyperband' is not one of"),
        ("defaults: {fix: {lr: -0.01}}\n" + RUN, "defaults.fix.lr: -0.01 must be above 0"),
        ("defaults: {train: {batch_size: 0}}\n" + RUN, "train.batch_size: 0 must be at least 1"),
        ("defaults: {train: {in_chans: 2}}\n" + RUN, "train.in_chans: 2 is not one of [1, 3]"),
        ("defaults: {train: {patience: -1}}\n" + RUN, "train.patience: -1 must be at least 0"),
        ("defaults: {train: [patience]}\n" + RUN, "defaults.train: ['patience'] is not a valid"),
        ("prepare: {cls_size: 0}\n" + RUN, "prepare.cls_size: 0 must be at least 1"),
        ("prepare: {val_fraction: 1.5}\n" + RUN, "prepare.val_fraction: 1.5 must be in [0, 1)"),
        ("prepare: {label_map: 4class}\n" + RUN, "prepare.label_map: '4class' is not one of"),
        ("prepare: [cls_size]\n" + RUN, "prepare: must be a mapping, got ['cls_size']"),
        ("synth: {patients: 1}\n" + RUN, "synth.patients: 1 must be at least 2"),
        ("parallel_sweeps: 0\n" + RUN, "parallel_sweeps: 0 is not a positive integer"),
        ("runs:\n  - {model: vgg17, task: classification}\n", "runs[0].model: 'vgg17' is not one"),
        ("runs:\n  - {model: vgg16, task: segmentation}\n", "but vgg16 is a classification model"),
        ("runs:\n  - {model: vgg16, task: survival}\n", "runs[0].task: 'survival' is not one of"),
        (
            "runs:\n  - {model: vgg16, task: classification, settings: scratch}\n",
            "runs[0].settings: 'scratch'; use a list of ['scratch', 'pretrained', 'study_frozen']",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification, space: nospace}\n",
            "runs[0].space: unknown space 'nospace'",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification, space: detection}\n",
            "runs[0].space: 'detection' is a detection space, the run's task is classification",
        ),
        ("runs: {model: vgg16}\n", "runs: must be a non-empty list"),
        ("runs:\n  - vgg16\n", "runs[0]: needs model and task"),
        ("runs: [\n", "not valid YAML"),
        ("prepare: {cls_size: 32}\nprepare: {cls_size: 64}\n" + RUN, "'prepare' is given twice"),
        ("", "a benchmark file is a mapping with keys"),
        ("- " + RUN, "found a list"),
    ],
)
def test_bad_benchmark_files_name_file_key_and_value(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(body)
    with pytest.raises(SpaceError) as err:
        load_benchmark(path, REGISTRY)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_shipped_benchmarks_pass_the_registry_check() -> None:
    for name in benchmarks.available_benchmarks():
        assert load_benchmark(name, REGISTRY).runs


def test_every_value_the_configs_accept_is_one_training_accepts() -> None:
    """The choices the files are checked against are those of the configs that use them."""
    for key, values in SPACE_CHOICES.items():
        for value in values:
            TrainConfig(model="vgg16", data=".", **{key: value})
        with pytest.raises(ValueError, match=key):
            TrainConfig(model="vgg16", data=".", **{key: "other"})
    consumers = {
        PrepareConfig: ("lesion_type", "cls_input", "label_map"),
        SweepConfig: ("scheduler", "search"),
        TrainConfig: ("detection_classes",),
    }
    for config, keys in consumers.items():
        for key in keys:
            args = {} if config is PrepareConfig else {"model": "vgg16", "data": "."}
            for value in benchmarks.CHOICES[key]:
                config(**args, **{key: value})
            with pytest.raises(ValueError, match=key):
                config(**args, **{key: "other"})
    assert set(benchmarks.TRAIN_KEYS) <= {f.name for f in fields(TrainConfig)}


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A prepared-data folder as far as option checks read it (its manifest), and a work dir."""
    monkeypatch.setenv("MAMMOBENCH_HOME", str(tmp_path / "home"))
    manifest = {
        "config": {"cls_size": 32, "seg_size": 32, "det_size": 64, "label_map": "binary"},
        "tasks": {"classification": {"shards": {"train": ["t.parquet"], "val": ["v.parquet"]}}},
    }
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "space.yaml").write_text(CLS + "params:\n  optimizer: {value: sgd}\n")
    (tmp_path / "bench.yaml").write_text("runs:\n  - {model: vgg-16, task: classification}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "DATA", "--out", "OUT", "--task", "survival"], "unknown task 'survival'"),
        (["prepare", "DATA", "--out", "OUT", "--cls-size", "0"], "Invalid value for '--cls-size'"),
        (
            ["prepare", "DATA", "--out", "OUT", "--lesion-type", "both"],
            "lesion_type must be one of",
        ),
        (["prepare", "DATA", "--out", "OUT", "--val-fraction", "1.5"], "val_fraction must be in"),
        (
            ["prepare", "DATA", "--out", "OUT", "--max-quarantine", "2"],
            "'--max-quarantine': Input should be less than or equal to 1",
        ),
        (["prepare", "nowhere", "--out", "OUT"], "nowhere: DATA folder not found"),
        (["train", "vgg16", "--data", "PREP", "--task", "survival"], "got 'survival'"),
        (["train", "vgg16", "--data", "PREP", "--lr", "0"], "'--lr': 0 is not above 0"),
        (["train", "vgg16", "--data", "PREP", "--lr", "-1e-3"], "'--lr': -1e-3 is not above 0"),
        (["train", "vgg16", "--data", "PREP", "--epochs", "ten"], "Invalid value for '--epochs'"),
        (["train", "vgg16", "--data", "PREP", "--balance", "smote"], "balance must be one of"),
        (["train", "vgg16", "--data", "PREP", "--patience", "-1"], "'--patience'"),
        (["train", "vgg17", "--data", "PREP"], "Unknown model 'vgg17'. Did you mean vgg16?"),
        (["train", "unet", "--data", "PREP"], "unet is a segmentation model"),
        (["tune", "--dry-run", "--task", "survival"], "unknown task 'survival'"),
        (["tune", "vgg16", "--data", "PREP", "--scheduler", "pbt"], "got 'pbt'"),
        (["tune", "vgg16", "--data", "PREP", "--space", "SPACE"], "optimizer: 'sgd' is not one"),
        (["benchmark", "--config", "BENCH"], "runs[0].model: 'vgg-16' is not one of"),
        (["benchmark", "--config", "nowhere.yaml"], "nowhere.yaml: no such benchmark file"),
    ],
)
def test_bad_cli_values_fail_before_ray_with_one_message(
    prepared: Path, real_csv_dir: Path, args: list[str], message: str
) -> None:
    where = {
        "DATA": real_csv_dir,
        "OUT": prepared / "out",
        "PREP": prepared / "prep",
        "SPACE": prepared / "space.yaml",
        "BENCH": prepared / "bench.yaml",
    }
    ray_before = _ray_up()
    result = CliRunner().invoke(app, [str(where.get(a, a)) for a in args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception the command let out
    assert message in result.output and "Traceback" not in result.output
    assert ray_before or not _ray_up()
    assert not (prepared / "out").exists()


def _ray_up() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()
