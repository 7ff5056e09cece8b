"""``benchmark --dry-run``: the plan of the shipped study and of small configs, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models import ModelSpec, available_models
from models.registry import get_entry
from orchestration.cli import app
from orchestration.dry_run import plan_benchmark
from search_spaces.benchmarks import load_benchmark

runner = CliRunner()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every architecture's weights file name present (the dry run looks, it does not load)."""
    folder = tmp_path_factory.mktemp("weights")
    for name in available_models():
        (folder / f"{get_entry(name).weights_source(ModelSpec(name=name)).stem}.pth").touch()
    return str(folder)


def test_the_study_plan_adds_up_by_its_cost_model(weights_dir: str) -> None:
    plan = plan_benchmark(load_benchmark("study"), None, weights_dir)
    sweeps = {s["sweep"]: s for s in plan["sweeps"]}
    assert len(sweeps) == 39 and {s["status"] for s in sweeps.values()} == {"run"}
    # 8 trials x (50 epochs x 0.25 x 15 s + 60 s start-up) on 1 GPU = 8 x 247.5 s = 0.55 GPU-h
    vgg = sweeps["vgg16-scratch"]
    assert (vgg["trials"], vgg["expected_epochs"], vgg["gpu_hours"]) == (8, 12.5, 0.55)
    # the detector: 4 trials x (30 x 0.25 x 330 s + 60 s) = 4 x 2535 s = 2.82 GPU-h
    assert sweeps["fasterrcnn-pretrained"]["gpu_hours"] == 2.817
    total = sum(s["gpu_hours"] for s in sweeps.values())
    assert plan["cost"]["gpu_hours"] == round(total, 1) and plan["runnable"]
    assert plan["cost"]["wall_hours"] == round(plan["cost"]["gpu_hours"] / 8, 1)
    assert plan["cost"]["trials"] == sum(s["trials"] for s in sweeps.values()) == 296


def test_without_weights_pretrained_rows_are_skipped_with_the_reason(tmp_path: Path) -> None:
    plan = plan_benchmark(load_benchmark("study"), None, str(tmp_path))
    skipped = [s for s in plan["sweeps"] if s["status"] == "skip"]
    assert skipped and all(s["setting"] == "pretrained" for s in skipped)
    assert all("vgg16.pth" in s["reason"] for s in skipped if s["model"] == "vgg16")
    not_run = sum(4 if s["task"] == "detection" else 8 for s in skipped)  # their trials
    assert plan["runnable"] and plan["cost"]["trials"] == 296 - not_run


CONFIG = """runs:
  - {model: mobilenetv2, task: classification, settings: [scratch], scheduler: fifo,
     max_epochs: 4, seeds: 3, gpus_per_trial: 0.5}
  - {model: mobilenetv2, task: classification, settings: [scratch], input: whole}
cost: {gpus: 2, epoch_s: {classification: 30}, startup_s: 60}
"""


def test_a_download_is_catalogued_and_seed_repeats_are_costed(
    synthetic_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "b.yaml").write_text(CONFIG)
    plan = plan_benchmark(load_benchmark(tmp_path / "b.yaml"), synthetic_data, None)
    assert plan["splits"]["classification"]["test"] > 0 and plan["runnable"]
    crop = plan["sweeps"][0]
    # fifo: 1 trial x (4 x 30 + 60) s + 2 repeats x the same, each on half a GPU: 540 s x 0.5
    assert crop["trials"] == 1 and crop["gpu_hours"] == 0.075


def test_rows_that_cannot_run_fail_the_dry_run(tmp_path: Path) -> None:
    prepared = tmp_path / "prep"  # crop shards only, and an empty validation split
    prepared.mkdir()
    manifest = {
        "config": {"cls_input": "crop"},
        "tasks": {"classification": {"splits": {"train": 40, "val": 0, "test": 20}}},
    }
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "b.yaml").write_text(CONFIG)
    args = ["benchmark", "--config", str(tmp_path / "b.yaml"), "--data", str(prepared)]
    result = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert result.exit_code == 1, result.output
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    crop, whole = plan["sweeps"]
    assert crop["status"] == "error" and "empty val split(s) of classification" in crop["reason"]
    assert whole["status"] == "error" and "no classification-whole rows" in whole["reason"]
    assert "some rows cannot run" in result.stdout


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_a_download_without_its_images_fails_the_dry_run(
    real_csv_dir: Path, where: str, request
) -> None:
    """The four real case CSVs and none of the 10,239 files they name, on a disk or in a
    bucket (what `aws s3 sync` of the CSVs alone leaves): not runnable."""
    data = str(real_csv_dir)
    if where == "bucket":
        import pyarrow.fs as pafs

        from data_pipeline.storage import Store
        from tests.conftest import make_bucket

        bucket = Store.at(f"{make_bucket(request.getfixturevalue('s3_endpoint'), 'csvs-only')}/d")
        pafs.copy_files(data, bucket.fs_path(), destination_filesystem=bucket.fs)
        data = bucket.root
    result = runner.invoke(app, ["benchmark", "--data", data, "--dry-run", "--json"])
    assert result.exit_code == 1, result.output
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert plan["data_problem"].startswith("10239 files the CSVs name are missing and 0 unreadable")
    assert "(first: Calc-Test_P_00038_LEFT_CC/" in plan["data_problem"]
    assert "error data: 10239 files" in result.stdout and not plan["runnable"]
