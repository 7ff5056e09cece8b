"""The ``mammobench`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.settings import Settings

runner = CliRunner()
VERBS = ("catalog", "synth", "prepare", "train", "tune", "benchmark", "report", "models", "ui")


def test_help_lists_every_verb() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.output
    for option in ("--tracking-uri", "--storage", "--address"):
        assert option in result.output


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str) -> None:
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "mammobench"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "catalog" in out


def test_catalog_json_on_real_csvs(real_csv_dir: Path) -> None:
    result = runner.invoke(app, ["catalog", str(real_csv_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["abnormalities"], summary["images"], summary["patients"]) == (3568, 3032, 1566)
    assert summary["duplicate_views"] == 71  # views listed under both a Mass and a Calc series
    assert set(summary["by_split"]) == {"train", "val", "test", "excluded"}
    assert summary["missing_files"] == 10239 and summary["rejected_rows"] == 0


def test_synth_then_catalog_with_csv_option(tmp_path: Path) -> None:
    data = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(data), "--patients", "6", "--size", "160", "96"])
    assert result.exit_code == 0, result.output
    text = runner.invoke(app, ["catalog", str(data), "--csv", str(data)])
    assert text.exit_code == 0, text.output
    assert "missing files  0" in text.output and "patients       6" in text.output


def test_missing_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["catalog", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "DATA folder not found" in str(result.exception)


def test_global_options_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MAMMOBENCH_HOME", str(tmp_path / "home"))
    local = Settings.resolve()
    assert local.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert local.storage == str(tmp_path / "home" / "ray_results") and local.address is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    remote = Settings.resolve(storage="s3://bucket/results")
    assert remote.tracking_uri == "http://127.0.0.1:5000" and remote.address == "ray://head:10001"
    assert remote.storage == "s3://bucket/results"
    assert Settings.resolve(tracking_uri="sqlite:///x.db").tracking_uri == "sqlite:///x.db"


def test_global_options_before_the_verb(tmp_path: Path) -> None:
    env = {**os.environ, "MAMMOBENCH_HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "mammobench"
    args = [exe, "--tracking-uri", "sqlite:///t.db", "--storage", str(tmp_path), "synth", "--help"]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_models_json_lists_the_registry() -> None:
    from models import available_models

    result = runner.invoke(app, ["models", "--json", "--input-size", "32"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(available_models())
    for row in rows:
        assert set(row) >= {"name", "task", "library", "input_size", "params", "unfreeze_choices"}
        assert row["params"] > 0 and row["unfreeze_choices"][-1] == "all"
    tasks = {r["name"]: r["task"] for r in rows}
    assert tasks["unet"] == "segmentation" and tasks["fasterrcnn"] == "detection"
    text = runner.invoke(app, ["models"])
    assert "vit_b16" in text.output and "deeplabv3plus" in text.output
