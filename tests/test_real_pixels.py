"""Every stage on real CBIS-DDSM pixels: prepare for every task, then one epoch of each task
through the CLI (detection batches of two real mammograms of different shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from data_pipeline.catalog import build_catalog
from orchestration.cli import app
from tests.realdata import VAL_FRACTION, make_real_tree

runner = CliRunner()
SIZES = ["--cls-size", "32", "--seg-size", "32", "--det-size", "128"]
TASKS = {
    "classification": "mobilenetv2",
    "segmentation": "unet",
    "detection": "fasterrcnn_mobilenet",
}


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_tree(tmp_path_factory.mktemp("real_tree"))


@pytest.fixture(scope="module")
def real_prepared(tmp_path_factory: pytest.TempPathFactory, real_tree: Path, ray_local) -> Path:
    prep = tmp_path_factory.mktemp("real_prep")
    args = ["prepare", str(real_tree), "--out", str(prep), "--task", "all", *SIZES]
    result = runner.invoke(app, [*args, "--val-fraction", str(VAL_FRACTION)])
    assert result.exit_code == 0, result.output
    return prep


def _last_json(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text[-2000:]
    return json.loads(lines[-1])


def test_real_tree_catalogs_real_rows_and_one_repeated_view(real_tree: Path) -> None:
    summary = build_catalog(real_tree, val_fraction=VAL_FRACTION).summary()
    assert summary["missing_files"] == 0 and summary["rejected_rows"] == 0, summary
    assert summary["roi_by_content"] == summary["abnormalities"] == 20  # every mask told by content
    assert summary["duplicate_views"] == 1  # P_00034 RIGHT CC, in the mass and the calc CSV
    assert summary["images_by_split"] == {"train": 5, "val": 4, "test": 8}, summary


def test_real_tree_prepares_every_task_without_quarantine(real_prepared: Path) -> None:
    manifest = json.loads((real_prepared / "manifest.json").read_text())
    for task in TASKS:
        summary = manifest["tasks"][task]
        assert summary["expected"] == summary["written"] + summary["quarantined"], summary
        assert summary["quarantined"] == 0, summary  # the real files all decode
        assert all(summary["splits"][split] > 0 for split in ("train", "val", "test")), summary
    detection = manifest["tasks"]["detection"]
    assert detection["splits"]["test"] == 8  # the eight real mammograms, each one image
    assert detection["boxes"]["count"] > 0  # lesion-box statistics for the anchors
    for split in ("train", "test"):  # ragged batches in training and in the test evaluation
        shapes = set()
        for name in detection["shards"][split]:
            table = pq.read_table(real_prepared / name, columns=["height", "width"]).to_pylist()
            shapes |= {(row["height"], row["width"]) for row in table}
        assert len(shapes) > 1 and all(max(s) == 128 for s in shapes), (split, shapes)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_one_epoch_of_each_task_on_real_pixels(
    real_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    monkeypatch.setenv("MAMMOBENCH_HOME", str(tmp_path / "home"))  # nothing lands in ./runs
    args = ["--storage", str(tmp_path), "train", TASKS[task], "--data", str(real_prepared)]
    args += ["--task", task, "--epochs", "1", "--batch-size", "2", "--json"]
    if task == "segmentation":
        args += ["--encoder", "resnet18"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    test = _last_json(result.stdout)["test"]
    metric = {"classification": "auc", "segmentation": "dice", "detection": "map50"}[task]
    assert test["n"] > 0 and metric in test, test
