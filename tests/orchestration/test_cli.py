"""The ``mammobench`` command line, run as a user runs it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
import typer
from typer.testing import CliRunner

from data_pipeline import TASKS
from data_pipeline.catalog import build_catalog
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.synth import SynthConfig
from orchestration.cli import app, given
from orchestration.settings import Settings
from orchestration.train.config import TrainConfig
from orchestration.tune import SweepConfig

runner = CliRunner()
VERBS = (
    *("catalog", "synth", "prepare", "train", "tune", "benchmark", "report", "models", "ui"),
    *("predict", "evaluate", "weights", "doctor"),
)
LONG_VERBS = ("prepare", "train", "tune", "benchmark")  # a console, their libraries' logs in a file


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


@pytest.mark.parametrize("verb", LONG_VERBS)
def test_long_verbs_can_show_the_libraries_logs(verb: str) -> None:
    result = runner.invoke(app, [verb, "--help"])
    assert "--verbose" in result.output


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
    uri = "http://127.0.0.1:5999"
    args = [exe, "--tracking-uri", uri, "--storage", str(tmp_path), "ui"]
    # a server URI makes `ui` print it and stop; had the URI been lost, it would start a UI
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"the tracking store is a server: open {uri}"


def test_global_options_reach_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAMMOBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "ray://from-env:10001")  # the option wins over it
    command = typer.main.get_command(app)
    args = ["--tracking-uri", "sqlite:///t.db", "--storage", "s3://b/r", "--address", "ray://h:1"]
    with command.make_context("mammobench", [*args, "models"]) as ctx:
        ctx.invoke(command.callback, **ctx.params)  # the group's callback, not the verb
    assert ctx.obj == Settings(tmp_path.resolve(), "sqlite:///t.db", "s3://b/r", "ray://h:1")


# The verbs whose options map onto a config's fields, and where those fields' defaults live
CONFIGS = {
    "catalog": build_catalog,
    "synth": SynthConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "tune": SweepConfig,
}
FIELD_OF = {("prepare", "task"): "tasks"}  # option -> field, where the names differ


def config_defaults(owner: Any) -> dict[str, Any]:
    """Every default of a config dataclass or a function, looked up independently of the CLI."""
    if not dataclasses.is_dataclass(owner):
        params = inspect.signature(owner).parameters.values()
        return {p.name: p.default for p in params if p.default is not p.empty}
    out = {}
    for field in dataclasses.fields(owner):
        if field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
        elif field.default is not dataclasses.MISSING:
            out[field.name] = field.default
    return out


def shown(option: Any, value: Any) -> str:
    """How ``--help`` should write a default: the flag in effect, a tuple as it is typed."""
    if isinstance(value, bool):
        return option.opts[0] if value else option.secondary_opts[0]
    if value == TASKS:
        return "all"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


@pytest.mark.parametrize("verb", list(CONFIGS))
def test_help_shows_the_configs_defaults(verb: str) -> None:
    defaults = config_defaults(CONFIGS[verb])
    options = [
        p
        for p in typer.main.get_command(app).commands[verb].params
        if isinstance(p, typer.core.TyperOption)
        and FIELD_OF.get((verb, p.name), p.name) in defaults
    ]
    result = runner.invoke(app, [verb, "--help"], terminal_width=200)  # no wrapped help texts
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # a long option name puts its help on the next line
    assert "[default: None]" not in text
    assert len(options) >= 2
    for option in options:
        assert option.default is None, f"{verb} {option.opts[0]} restates a default"
        value = defaults[FIELD_OF.get((verb, option.name), option.name)]
        if value is None:
            continue
        found = re.search(rf"(?<!\S){option.opts[0]}(?= )[^\[]*\[default: ([^\]]*)\]", text)
        assert found, f"{verb} {option.opts[0]} shows no default"
        assert found[1] == shown(option, value), f"{verb} {option.opts[0]}"


def test_options_not_given_are_left_out() -> None:
    assert given(seed=0, resume=False, size=(1, 2), name=None, lr=None) == {
        "seed": 0,
        "resume": False,
        "size": (1, 2),
    }


def test_synth_leaves_what_was_not_given_to_its_config(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(out), "--patients", "2"])
    assert result.exit_code == 0, result.output
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in out.rglob("*.dcm")]
    full = {(h.Rows, h.Columns) for h in headers if h.SeriesDescription == "full mammogram images"}
    assert full == {SynthConfig().size}
    assert (out / "metadata.csv").is_file() == (SynthConfig().layout == "nbia")


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


@pytest.mark.parametrize(("before", "after"), [(None, "true"), ("false", "false")])
def test_verbs_run_with_mlflow_telemetry_off_unless_the_user_says(
    monkeypatch: pytest.MonkeyPatch, before: str | None, after: str
) -> None:
    """Hospital clusters are offline: MLflow must not try to phone home (a user's value wins)."""
    if before is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", before)
    result = runner.invoke(app, ["tune", "--space", "cnn-classification", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == after
