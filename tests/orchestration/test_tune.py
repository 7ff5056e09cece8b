"""``mammobench tune``: Ray Tune sweeps on a real local cluster, tracked in a real MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.train_config import TrainConfig
from orchestration.tune import ClusterTooSmall, _register_trainable, max_concurrent_trials
from tests.orchestration.test_train import last_json

runner = CliRunner()
TWO_LRS = """task: classification
params:
  pretrained: {grid: [true, false]}
  unfreeze: {choice: [0, study]}
  lr: {grid: [3.0e-3, 1.0e-4]}
"""


def _space(folder: Path) -> Path:
    path = folder / "two-lrs.yaml"
    path.write_text(TWO_LRS)
    return path


def _store(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _runs(client: MlflowClient, sweep: str) -> tuple[object, list]:
    exp = client.get_experiment_by_name("mammobench-classification")
    parents = client.search_runs([exp.experiment_id], f"tags.`mammobench.sweep` = '{sweep}'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, children


def _epochs(client: MlflowClient, run) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]


def test_killed_sweep_resumes_once_and_is_tracked_in_mlflow(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [str(Path(sys.executable).parent / "mammobench"), "tune", "mobilenetv2", "--data",
           str(prepared_small), "--space", str(_space(tmp_path)), "--max-epochs", "3",
           "--samples", "1", "--batch-size", "16", "--name", "killed", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = tmp_path / "ray_results"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not _resumable(storage):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _resumable(storage), "the sweep never checkpointed before the deadline"
    client = _store(tmp_path)
    assert any(r.info.status == "RUNNING" for r in _runs(client, "killed")[1])
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(last_json(done.stdout)["trials"]) == 2
    parent, children = _runs(client, "killed")
    assert parent.info.status == "FINISHED" and len(children) == 2  # reopened, not duplicated
    _check_parent(client, parent)
    starts = []
    for run in children:
        _check_trial(client, run, max_epochs=3)
        starts += [m.value for m in client.get_metric_history(run.info.run_id, "start_epoch")]
    assert max(starts) >= 1  # an interrupted trial continued from its checkpoint's epoch


def _check_parent(client: MlflowClient, parent) -> None:
    tags = parent.data.tags
    assert "offline" in tags["mammobench.skipped_pretrained"]  # no ImageNet weights here
    assert tags["mammobench.dataset_fingerprint"] and tags["version.ray"]
    assert tags["mlflow.source.git.commit"]
    assert {"test_auc", "test_auc_ci_low", "test_auc_ci_high"} <= set(parent.data.metrics)
    assert parent.data.params["space.lr.grid"] == "[0.003, 0.0001]"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/trials_comparison.png", "plots/learning_curves.png"}
    version = client.get_model_version("mammobench-mobilenetv2-classification", "1")
    assert version.run_id == parent.info.run_id and "test_auc" in version.tags


def _check_trial(client: MlflowClient, run, max_epochs: int) -> None:
    """FINISHED (ASHA-stopped too, then tagged), every epoch logged once, artifacts present."""
    assert run.info.status == "FINISHED" and run.data.params["pretrained"] == "False"
    epochs = _epochs(client, run)
    stopped = run.data.tags["mammobench.stopped_early"] == "true"
    # Nothing ran twice. (An epoch whose result reached the Train checkpoint but not the killed
    # driver is not re-run after the resume, so it may be missing from the history.)
    assert epochs == sorted(set(epochs)) and epochs
    assert (epochs[-1] < max_epochs) == stopped
    assert int(run.data.params["trainable_params"]) > 0
    assert {"config.yaml", "checkpoint", "plots"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/roc_curve.png"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
        "checkpoint/best_model.pt"
    ]


def _resumable(storage: Path) -> bool:
    """The sweep saved its state and some trial's Train run has a checkpoint."""
    return any(storage.glob("killed/experiment_state*.json")) and any(
        storage.glob("killed-*/checkpoint_manager_snapshot.json")
    )


def test_two_cpu_local_cluster_runs_a_sweep_without_hanging(
    prepared_small: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"MAMMOBENCH_NUM_CPUS": "2", "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [str(Path(sys.executable).parent / "mammobench"), "tune", "mobilenetv2", "--data",
           str(prepared_small), "--space", str(_space(tmp_path)), "--max-epochs", "1",
           "--samples", "1", "--batch-size", "16", "--name", "two-cpus", "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = last_json(done.stdout)
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED", "TERMINATED"]


def test_concurrency_follows_the_cluster() -> None:
    assert max_concurrent_trials({"CPU": 2.0}, 1, 1.0, 0.0) == 1
    assert max_concurrent_trials({"CPU": 4.0}, 1, 1.0, 0.0) == 2
    assert max_concurrent_trials({"CPU": 32.0, "GPU": 4.0}, 1, 4.0, 1.0) == 4
    assert max_concurrent_trials({"CPU": 32.0, "GPU": 4.0}, 2, 2.0, 1.0) == 2
    with pytest.raises(ClusterTooSmall, match="needs 3"):
        max_concurrent_trials({"CPU": 2.0}, 2, 1.0, 0.0)
    with pytest.raises(ClusterTooSmall, match="GPUs"):
        max_concurrent_trials({"CPU": 8.0}, 1, 1.0, 1.0)


def test_bad_space_file_fails_naming_file_and_key(prepared_small: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\nparams:\n  lr: {loguniform: [0.1, 0.001]}\n")
    result = runner.invoke(app, ["tune", "mobilenetv2", "--data", str(prepared_small),
                                 "--space", str(bad)])  # fmt: skip
    assert result.exit_code == 2
    assert f"{bad}: params.lr: loguniform needs" in result.output


def test_dry_run_prints_the_resolved_space() -> None:
    result = runner.invoke(app, ["tune", "--space", "cnn-classification", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "loguniform" in result.output and "pretrained" in result.output
    resolved = runner.invoke(app, ["tune", "mobilenetv2", "--dry-run"], env={"HF_HUB_OFFLINE": "1"})
    assert "pretrained half skipped" in resolved.output and "unfreeze" not in resolved.output


def test_sweeps_started_together_register_their_own_trainables(
    ray_local: str, tmp_path: Path
) -> None:
    """A benchmark starts sweeps in threads of one process; Tune's registries are process-global."""
    from ray.tune.registry import get_trainable_cls

    def register(i: int) -> str:
        base = TrainConfig(model="mobilenetv2", data=str(tmp_path), lr=10.0**-i)
        return _register_trainable(base, str(tmp_path), f"race_{i}")

    for _ in range(5):  # unguarded, a flush iterating a registry that another thread adds to fails
        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(register, range(8)))
        assert keys == [f"trial_race_{i}" for i in range(8)]
        assert all(get_trainable_cls(key).default_resource_request({}) for key in keys)
