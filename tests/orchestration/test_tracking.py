"""The sweep's parent run in a real (sqlite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import torch

from orchestration.results.tracking import SweepRun, client_for, experiment_id


def test_registering_the_best_model_leaves_the_sweep_running_until_finish(tmp_path: Path) -> None:
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = experiment_id(client, "sweeps", tmp_path / "artifacts")
    run = SweepRun.open(client, exp, "s1", resume=False)
    run.register_model("tiny", torch.nn.Linear(2, 2), {"auc": 0.7})
    # a kill here must not leave a "finished" sweep without its test metrics
    assert client.get_run(run.run_id).info.status == "RUNNING"
    run.finish({"best": {"test": {"auc": 0.7}}})
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics["test_auc"] == 0.7


def test_experiments_are_tagged_as_model_training_for_the_ui(tmp_path: Path) -> None:
    # without the tag MLflow 3's UI opens an experiment in its GenAI view (traces, tokens)
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    made = experiment_id(client, "sweeps", tmp_path / "artifacts")
    older = client.create_experiment("made-before-the-tag")
    assert experiment_id(client, "made-before-the-tag", None) == older
    for exp in (made, older):
        tags = client.get_experiment(exp).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
