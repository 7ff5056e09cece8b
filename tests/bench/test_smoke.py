"""Each benchmark runs from a clean checkout at a tiny size and ends with its JSON line.

Benchmarks assert nothing themselves; these check that their figures exist and hang together (a
stage of start-up never longer than the whole), not how fast anything is.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.bench_run import REPO, WITHOUT_RAY, last_json, run_in_process


def measured_ratio(result: dict, top: str, bottom: str) -> float:
    """``top`` / ``bottom`` of a JSON line, both measured (above 0)."""
    assert result[top] > 0 and result[bottom] > 0, (top, bottom)
    return result[top] / result[bottom]


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
    args = ["--patients", "16", "--size", "32", "--repeats", "1", "--batch-size", "8", "--cpu"]
    result = run_in_process("trial_startup.py", args, capsys, monkeypatch)
    cpu = result["cold_trial_cpu_s"]  # every process the start-up ran beside, by kind
    assert cpu["ray::RayTrainWorker"] > 0 and cpu["ray::TrainController"] > 0, cpu
    total = result["train_to_first_step_s"]
    stages = [v for k, v in result.items() if k.startswith("train_startup_")]
    assert len(stages) == 6 and all(v >= 0 for v in stages)
    assert sum(stages) <= total + 0.5  # the stages are parts of the whole (rounding aside)
    assert result["bare_trainer_first_step_s"] > 0 and result["trial_to_first_step_s"] > 0
    # a trial is timed from its actor's start; so is the bare trial, Ray's floor for one
    assert 0 < result["trial_startup_trial_actor_s"] < result["trial_to_first_step_s"]
    assert result["bare_trial_first_step_s"] > result["bare_to_worker_s"]
    assert result["ratio"] == pytest.approx(
        measured_ratio(result, "trial_to_first_step_s", "bare_trial_first_step_s"), abs=0.01
    )


@pytest.mark.slow
def test_train_overhead_measures_both_loops(ray_local, capsys, monkeypatch) -> None:
    args = ["--patients", "16", "--size", "32", "--epochs", "2", "--batch-size", "8"]
    result = run_in_process("train_overhead.py", args, capsys, monkeypatch)
    assert result["ratio"] == pytest.approx(
        measured_ratio(result, "train_images_per_s", "plain_images_per_s"), rel=0.01
    )


@pytest.mark.slow
def test_tracking_overhead_times_both_and_the_mlflow_calls(ray_local, capsys, monkeypatch) -> None:
    args = ["--patients", "16", "--size", "32", "--epochs", "2", "--repeats", "1"]
    result = run_in_process("tracking_overhead.py", args, capsys, monkeypatch)
    assert result["ratio"] == pytest.approx(
        measured_ratio(result, "tracked_epoch_s", "plain_epoch_s"), abs=0.01
    )
    calls = result["mlflow_calls_by_method_s"]  # the tracker's own client was timed
    assert calls["log_batch"] > 0 and calls["create_run"] > 0 and calls["set_terminated"] > 0
    assert 0 < result["mlflow_log_batch_s_per_epoch"] * 2 <= result["mlflow_s_per_trial"]


@pytest.mark.slow
def test_sweep_efficiency_runs_the_same_trials_twice(ray_local, capsys, monkeypatch) -> None:
    """One trial at a time, so that a trial ASHA stopped is followed by another (with actor
    reuse, that next trial errored and the sweep hung)."""
    args = ["--patients", "16", "--size", "32", "--epochs", "2", "--lrs", "1e-4", "3e-2"]
    args += ["--optimizers", "adam", "adamw", "--max-concurrent", "1"]
    result = run_in_process("sweep_efficiency.py", args, capsys, monkeypatch)
    assert result["trials"] == 4 and result["errored_trials"] == 0
    assert result["fifo_epochs"] == 8  # FIFO runs every trial to the end
    assert 4 <= result["asha_epochs"] <= 8
    assert result["ratio"] == pytest.approx(result["asha_epochs"] / 8, abs=0.001)
    order = result["asha_trials_in_start_order"]  # "lr/optimizer:epochs", as Tune started them
    assert sorted(o.split(":")[0] for o in order) == [
        "0.0001/adam",
        "0.0001/adamw",
        "0.03/adam",
        "0.03/adamw",
    ]
    assert sum(int(o.split(":")[1]) for o in order) == result["asha_epochs"]
    for key in ("asha_best_val_auc", "fifo_best_val_auc"):
        assert 0 <= result[key] <= 1
    assert [len(curve) for curve in result["fifo_curves"]] == [2] * 4
    assert result["replay_orders"] == 1000 and result["replay_concurrent"] == 1
    low, high = result["replay_ratio_p10_p90"]  # every trial runs its first epoch
    assert 0.5 <= low <= high <= 1 and 0.5 <= result["replay_ratio_mean"] <= 1


@pytest.mark.slow
def test_demo_time_breaks_a_benchmark_down(tmp_path, capsys, monkeypatch) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "synth: {patients: 16, seed: 0}\n"
        "parallel_sweeps: 1\n"
        "prepare: {cls_size: 32, seg_size: 32, det_size: 64, shard_size: 16, val_fraction: 0.3}\n"
        "defaults: {samples: 1, max_epochs: 2, scheduler: fifo,"
        " fix: {lr: 1.0e-3, batch_size: 8}, train: {bootstrap: 20}}\n"
        "runs:\n  - {model: mobilenetv2, task: classification, settings: [scratch]}\n"
    )
    args = ["--config", str(config), "--home", str(tmp_path / "home")]
    result = run_in_process("demo_time.py", args, capsys, monkeypatch)
    assert result["sweeps"] == 1 and result["sweeps_trials"] == 1 and result["sweeps_epochs"] == 2
    stages = ("synth", "prepare", "sweeps", "leaderboard")
    assert all(result[f"stage_{s}_s"] > 0 for s in stages[:3])  # the leaderboard may round to 0
    assert result["stage_leaderboard_s"] >= 0
    assert sum(result[f"stage_{s}_s"] for s in stages) <= result["wall_s"]
    assert result["sweeps_tune_s"] <= result["sweeps_wall_s"] <= result["stage_sweeps_s"] + 1
    # the first step is in both start-up and the first epoch
    assert result["sweeps_startup_s"] + result["sweeps_epochs_s"] <= result["sweeps_tune_s"] + 1
    assert result["sweeps_test_s"] > 0 and result["sweeps_register_s"] > 0
