"""The sweep's parent run in a real (sqlite) MLflow store."""

from __future__ import annotations

from pathlib import Path

from orchestration.results.tracking import client_for, experiment_id


def test_experiments_are_tagged_as_model_training_for_the_ui(tmp_path: Path) -> None:
    # without the tag MLflow 3's UI opens an experiment in its GenAI view (traces, tokens)
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    made = experiment_id(client, "sweeps", tmp_path / "artifacts")
    older = client.create_experiment("made-before-the-tag")
    assert experiment_id(client, "made-before-the-tag", None) == older
    for exp in (made, older):
        tags = client.get_experiment(exp).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
