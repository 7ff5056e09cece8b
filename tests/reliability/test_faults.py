"""Faults survived: a Train worker SIGKILLed mid-epoch, the sweep's driver SIGKILLed mid-sweep.

As Ray tests its own restores (``test_tuner_restore.py``, Train V2's fault-tolerance tests): real
processes killed for real, on the shared local cluster, then the outcome read back from the
storage and from the MLflow store: every trial finished, none from epoch 0, each epoch logged once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.settings import Settings
from orchestration.tune import SweepConfig, run_sweep
from tests.orchestration.test_train import last_json
from tests.orchestration.test_tune import TWO_LRS

ONE_TRIAL = """task: classification
params:
  pretrained: {value: false}
  lr: {value: 1.0e-3}
"""
TWO_TRIALS = TWO_LRS  # two scratch trials (the pretrained half is skipped offline)


def _store(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _children(client: MlflowClient, sweep: str) -> tuple[object, list]:
    exp = client.get_experiment_by_name("mammobench-classification")
    parents = client.search_runs([exp.experiment_id], f"tags.`mammobench.sweep` = '{sweep}'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    return parents[0], children


def _history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def _kill_train_worker(storage: Path, address: str, killed: list[int], deadline: float) -> None:
    """SIGKILL the trial's Train worker once its run has a checkpoint (it is then in epoch 2).

    The cluster is named: with another Ray instance on the machine, the state API refuses to pick
    one ("Found multiple active Ray instances")."""
    from ray.util.state import list_actors

    while time.monotonic() < deadline:
        if any(storage.glob("worker-kill-*/checkpoint_manager_snapshot.json")):
            alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
            for actor in list_actors(address=address, filters=alive):
                os.kill(actor.pid, signal.SIGKILL)
                killed.append(actor.pid)
            if killed:
                return
        time.sleep(0.2)


@pytest.mark.slow  # a kill and a resume: minutes
def test_killed_train_worker_resumes_from_its_checkpoint(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    space = tmp_path / "one.yaml"
    space.write_text(ONE_TRIAL)
    settings = Settings(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "rr"), None)
    sweep = SweepConfig(
        model="mobilenetv2",
        data=str(prepared_small),
        space=str(space),
        max_epochs=4,
        scheduler="fifo",
        name="worker-kill",
        fixed={"batch_size": 16},
        train={"bootstrap": 20},
    )
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_train_worker,
        args=(tmp_path / "rr", ray_local, killed, time.monotonic() + 300),
    )
    killer.start()
    summary = run_sweep(sweep, settings)
    killer.join()
    assert killed, "the Train worker was never killed"
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["epochs"] == 4
    client = _store(tmp_path)
    _, (run,) = _children(client, "worker-kill")
    assert run.info.status == "FINISHED"
    assert [step for step, _ in _history(client, run, "epoch")] == [1, 2, 3, 4]
    assert [step for step, _ in _history(client, run, "val_auc")] == [1, 2, 3, 4]
    starts = {value for _, value in _history(client, run, "start_epoch")}
    assert starts == {0.0, 1.0} or max(starts) >= 1  # the restart began at its checkpoint


@pytest.mark.slow  # a kill and a resume: minutes
def test_killed_driver_resumes_every_trial_and_logs_every_epoch(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    """``mammobench tune`` in its own process group, SIGKILLed (the group too) mid-sweep."""
    space = tmp_path / "two.yaml"
    space.write_text(TWO_TRIALS)
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [str(Path(sys.executable).parent / "mammobench"), "tune", "mobilenetv2", "--data"]
    cmd += [str(prepared_small), "--space", str(space), "--max-epochs", "3", "--samples", "1"]
    cmd += ["--batch-size", "16", "--name", "killed", "--json"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    storage = tmp_path / "ray_results"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not _resumable(storage):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    assert _resumable(storage), "the sweep never checkpointed before the deadline"
    client = _store(tmp_path)
    assert any(r.info.status == "RUNNING" for r in _children(client, "killed")[1])
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(last_json(done.stdout)["trials"]) == 2
    parent, children = _children(client, "killed")
    assert parent.info.status == "FINISHED" and len(children) == 2  # reopened, not duplicated
    _check_parent(client, parent)
    starts = []
    for run in children:
        _check_trial(client, run, max_epochs=3)
        starts += [value for _, value in _history(client, run, "start_epoch")]
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
    """FINISHED (ASHA-stopped too, then tagged), every epoch logged exactly once, artifacts."""
    assert run.info.status == "FINISHED" and run.data.params["pretrained"] == "False"
    epochs = [step for step, _ in _history(client, run, "epoch")]
    stopped = run.data.tags["mammobench.stopped_early"] == "true"
    assert epochs == list(range(1, len(epochs) + 1)) and epochs  # no gap, no duplicate
    assert [s for s, _ in _history(client, run, "train_loss")] == epochs
    assert (epochs[-1] < max_epochs) == stopped
    assert int(run.data.params["trainable_params"]) > 0
    assert {"config.yaml", "checkpoint", "plots"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/roc_curve.png"}


def _resumable(storage: Path) -> bool:
    """The sweep saved its state and some trial's Train run has a checkpoint."""
    return any(storage.glob("killed/experiment_state*.json")) and any(
        storage.glob("killed-*/checkpoint_manager_snapshot.json")
    )


def test_epochs_lost_with_a_killed_driver_are_logged_from_the_resent_history(
    tmp_path: Path,
) -> None:
    """The kill fell between Train's checkpoint of epoch 3 and the tracker's logging of it: the
    restarted run's first report re-sends epochs 1-4 and the run ends with each exactly once."""
    from types import SimpleNamespace

    from orchestration.results.tracking import SweepRun, TrialTracker, client_for, experiment_id
    from orchestration.train.config import TrainConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = experiment_id(client, "resend", tmp_path / "artifacts")
    parent = SweepRun.open(client, exp, "resend", resume=False).run_id
    base = TrainConfig(model="mobilenetv2", data=str(tmp_path)).to_dict()
    trial = SimpleNamespace(trial_id="t_00000", config={}, last_result={})
    results = [{"epoch": e, "train_loss": 1 / e, "val_auc": 0.5 + e / 100} for e in (1, 2, 3, 4)]
    first = TrialTracker(uri, exp, parent, base)
    for result in results[:2]:  # epoch 3 reached the checkpoint, not the tracker
        first.on_trial_result(0, [], trial, result)
    restarted = TrialTracker(uri, exp, parent, base)  # the resumed driver
    restarted.on_trial_result(0, [], trial, {**results[3], "history": results})
    (run,) = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")
    for key in ("epoch", "train_loss", "val_auc"):
        assert [step for step, _ in _history(client, run, key)] == [1, 2, 3, 4]
