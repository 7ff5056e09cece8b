"""``mammobench train`` on a real local Ray cluster, on prepared synthetic CBIS-DDSM data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.train.config import TrainConfig
from orchestration.train.driver import read_checkpoint, run_training, trainer_for
from orchestration.train.worker import BEST_FILE

runner = CliRunner()


def _train_json(args: list[str], home: Path) -> dict:
    result = runner.invoke(app, ["--storage", str(home / "ray"), "train", *args, "--json"])
    assert result.exit_code == 0, result.output
    got = last_json(result.stdout)
    # the console: one line per epoch, from the Train controller's reports
    epochs = [line for line in result.stdout.splitlines() if "] epoch " in line]
    assert len(epochs) == got["epochs"], result.stdout[-3000:]
    assert "epoch 1/" in epochs[0] and "val_auc" in epochs[0] and "(best " in epochs[0]
    return got


def last_json(text: str) -> dict:
    """The JSON object ``--json`` prints last (Ray's own log lines may interleave)."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in:\n{text[-2000:]}"
    return json.loads(lines[-1])


def _within(ci: list[float], value: float) -> bool:
    return ci[0] <= value <= ci[1]


def test_small_classifier_beats_chance_on_held_out_patients(
    prepared_cls: Path, tmp_path: Path
) -> None:
    # re-run from a config.yaml as a trial logs it (every field), an option given over it
    logged = TrainConfig(
        model="mobilenetv2", data=str(prepared_cls), epochs=20, batch_size=16, lr=1e-5, patience=30
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(logged.with_manifest().to_dict()))
    result = _train_json(["--config", str(config), "--lr", "3e-3"], tmp_path)
    assert result["epochs"] == 20 and result["run"].startswith("train-mobilenetv2-")
    test = result["test"]
    assert test["auc"] > 0.65 and test["auc_ci"][0] > 0.5, test  # chance is 0.5
    assert _within(test["auc_ci"], test["auc"]) and _within(test["accuracy_ci"], test["accuracy"])
    for key in ("sensitivity", "specificity", "f1", "balanced_accuracy"):
        assert 0.0 <= test[key] <= 1.0
    assert sum(map(sum, test["confusion_matrix"])) == test["n"]
    assert "auc" in result["val"] and result["best_epoch"] <= result["epochs"]


def test_segmentation_trains_and_reports_dice(prepared_small: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="unet",
        data=str(prepared_small),
        task="segmentation",
        epochs=2,
        batch_size=8,
        encoder="resnet18",
        bootstrap=100,
    )
    result = run_training(cfg, str(tmp_path))
    test = result["test"]
    for key in ("dice", "iou", "pixel_accuracy"):
        assert 0.0 <= test[key] <= 1.0, test
    assert _within(test["dice_ci"], test["dice"]) and test["iou"] <= test["dice"] + 1e-9
    assert result["epochs"] == 2 and "dice" in result["val"]


def test_detection_trains_and_reports_map_and_froc(prepared_small: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="fasterrcnn_mobilenet",
        data=str(prepared_small),
        task="detection",
        epochs=1,
        batch_size=4,
    )
    test = run_training(cfg, str(tmp_path))["test"]
    assert 0.0 <= test["map50"] <= 1.0
    keys = [f"sens@{rate}fp" for rate in ("0.5", "1", "2", "4")]
    assert set(test["froc"]) == set(keys)
    sens = [test["froc"][k] for k in keys]
    assert sens == sorted(sens)  # sensitivity never drops as more false positives are allowed


def test_two_workers_run_ddp_and_end_with_identical_weights(
    prepared_small: Path, tmp_path: Path
) -> None:
    # 12 validation rows in batches of 5: the ranks predict 2 and 1 batches, and none is dropped
    cfg = TrainConfig(
        model="mobilenetv2",
        data=str(prepared_small),
        epochs=2,
        batch_size=5,
        workers=2,
        bootstrap=100,
    )
    result = run_training(cfg, str(tmp_path))
    assert len(result["param_checksums"]) == 2
    assert result["ranks_in_sync"] is True
    assert result["epochs"] == 2 and 0.0 <= result["test"]["auc"] <= 1.0
    manifest = json.loads((prepared_small / "manifest.json").read_text())
    assert result["val"]["n"] == manifest["tasks"]["classification"]["splits"]["val"]


@pytest.mark.slow  # a kill and a resume: minutes
def test_killed_job_resumes_from_its_checkpoint(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [
        str(Path(sys.executable).parent / "mammobench"),
        "train",
        "mobilenetv2",
        "--data",
        str(prepared_small),
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--patience",
        "10",
        "--json",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _checkpointed(tmp_path):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _checkpointed(tmp_path), "no checkpoint was written before the deadline"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = last_json(done.stdout)
    first, resumed = result["starts"]
    assert first == 0 and 1 <= resumed < 6  # continued from its epoch, not from 0
    assert result["epochs"] == 6


def test_a_run_restarted_after_its_last_epoch_reports_that_epoch_again_and_trains_no_more(
    prepared_small: Path, tmp_path: Path
) -> None:
    # a sweep's driver killed after a trial's last checkpoint, before Tune's snapshot took it in:
    # the resumed trial's run restarts completed, and Tune holds an epoch whose checkpoint is gone
    cfg = TrainConfig(
        model="mobilenetv2", data=str(prepared_small), epochs=2, batch_size=16, bootstrap=100
    ).with_manifest()
    first = trainer_for(cfg, str(tmp_path), "restart").fit()
    again = trainer_for(cfg, str(tmp_path), "restart").fit()
    assert again.metrics["completed"] is True and again.metrics["epoch"] == 2
    assert [h["epoch"] for h in again.metrics["history"]] == [1, 2]  # every epoch re-sent
    assert again.metrics["best_val_auc"] == first.metrics["best_val_auc"]
    assert again.checkpoint.path != first.checkpoint.path
    assert not Path(first.checkpoint.path).exists()  # num_to_keep=1: only the last is kept
    assert (Path(again.checkpoint.path) / BEST_FILE).is_file()
    assert read_checkpoint(again.checkpoint.path)["starts"] == [0]  # no attempt trained again


def _checkpointed(home: Path) -> bool:
    return any((home / "ray_results").glob("train-*/checkpoint_manager_snapshot.json"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("model: vgg16\nlearning_rate: 0.1\n", "unknown TrainConfig keys ['learning_rate']"),
        ("[1, 2]\n", "not a mapping of TrainConfig fields"),
        ("model: [unclosed\n", "not valid YAML"),
        ("epochs: 3\n", "no model: give MODEL or --config"),
    ],
)
def test_a_bad_config_file_fails_at_once_naming_it(
    prepared_small: Path, tmp_path: Path, body: str, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(body)
    args = ["train", "--config", str(config), "--data", str(prepared_small)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mobilenetv2", "--pretrained"], "mobilenetv2"),
        (["no_such_net"], "vgg16"),
        (["unet"], "segmentation model"),
    ],
)
def test_bad_jobs_fail_at_once_with_a_clear_error(
    prepared_small: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    env = {"MAMMOBENCH_WEIGHTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["train", *args, "--data", str(prepared_small)], env=env)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output


@pytest.mark.parametrize(
    ("command", "split"), [("train", "train"), ("train", "val"), ("tune", "val")]
)
def test_a_job_with_an_empty_split_fails_at_once_naming_the_data_and_split(
    prepared_small: Path, tmp_path: Path, command: str, split: str
) -> None:
    data = tmp_path / "prepared"
    shutil.copytree(prepared_small, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["tasks"]["classification"]["shards"][split] = []
    (data / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, [command, "mobilenetv2", "--data", str(data)])
    assert result.exit_code == 2, result.output  # before Ray starts, not a traceback
    assert f"{data}: the {split} split of classification is empty" in result.output
    del manifest["tasks"]["classification"]["shards"]  # a manifest cut short
    (data / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, [command, "mobilenetv2", "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert f"{data / 'manifest.json'} lists no train shards of classification" in result.output
