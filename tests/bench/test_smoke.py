"""Each benchmark runs from a clean checkout at a tiny size and ends with its JSON line.

Benchmarks assert nothing themselves; these check that their figures exist and hang together (a
stage of start-up never longer than the whole), not how fast anything is.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WITHOUT_RAY = (  # a GPU machine may have neither: the step functions must not need them
    "import sys, runpy; sys.modules['ray'] = sys.modules['mlflow'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def run_in_process(script: str, args: list[str], capsys, monkeypatch) -> dict:
    """Run a bench script here (on the session's Ray cluster), as ``python bench/SCRIPT`` would
    (its folder on ``sys.path``), and parse its JSON line."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    runpy.run_path(str(REPO / "bench" / script), run_name="__main__")
    return last_json(capsys.readouterr().out)


def test_gpu_check_runs_without_ray_or_mlflow() -> None:
    archs = ["mobilenetv2", "unet", "fasterrcnn"]
    script = str(REPO / "bench/gpu_check.py")
    args = [script, "--scale", "0.125", "--steps", "1", "--device", "cpu", "--archs", *archs]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, *args], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = last_json(done.stdout)
    assert result["device"] == "cpu" and result["amp"] == "off"
    rows = {row["arch"]: row for row in result["archs"]}
    assert list(rows) == archs
    for arch, row in rows.items():
        assert row["images_per_s"] > 0 and row["plain_images_per_s"] > 0, arch
        assert row["cpu_images_per_s_per_core"] > 0, arch
    assert [rows[a]["size"] for a in archs] == [32, 64, 128]  # the study's sizes / 8


@pytest.mark.slow
def test_trial_startup_reports_each_stage(ray_local, capsys, monkeypatch) -> None:
    args = ["--patients", "16", "--size", "32", "--repeats", "1", "--batch-size", "8"]
    result = run_in_process("trial_startup.py", args, capsys, monkeypatch)
    total = result["train_to_first_step_s"]
    stages = [v for k, v in result.items() if k.startswith("train_startup_")]
    assert len(stages) == 6 and all(v >= 0 for v in stages)
    assert sum(stages) <= total + 0.5  # the stages are parts of the whole (rounding aside)
    assert result["bare_trainer_first_step_s"] > 0 and result["trial_to_first_step_s"] > 0
    assert result["ratio"] > 0


@pytest.mark.slow
def test_train_overhead_measures_both_loops(ray_local, capsys, monkeypatch) -> None:
    args = ["--patients", "16", "--size", "32", "--epochs", "2", "--batch-size", "8"]
    result = run_in_process("train_overhead.py", args, capsys, monkeypatch)
    assert result["plain_images_per_s"] > 0 and result["train_images_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["train_images_per_s"] / result["plain_images_per_s"], rel=0.01
    )
