"""Every shipped search space runs one real trial (STYLE §6): Tune samples it, Ray Train trains
one epoch on the tiny shards, the best trial is tested and registered, MLflow records it all.

One benchmark holds a sweep per space, two at a time on the session's cluster; pretrained trials
are left out (no weights here), so each sweep is the space's scratch half, sampled once.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from models import available_models
from orchestration.benchmark import BenchmarkJob, run_benchmark
from orchestration.settings import Settings
from search_spaces import available_spaces, default_space
from search_spaces.benchmarks import load_benchmark

TASK_OF = {"segmentation": "segmentation", "detection": "detection"}


def _model_of(space: str) -> tuple[str, str]:
    """The first registered architecture whose family's space is ``space``, and its task."""
    task = TASK_OF.get(space, "classification")
    return next(m for m in available_models(task) if default_space(task, m) == space), task


def _smoke_config(folder: Path) -> Path:
    runs = []
    for space in available_spaces():
        model, task = _model_of(space)
        runs.append({"model": model, "task": task, "space": space, "settings": ["scratch"]})
    config = {
        "description": "one trial of every shipped space",
        "parallel_sweeps": 2,
        "defaults": {
            "samples": 1,
            "max_epochs": 1,
            "scheduler": "fifo",
            "train": {"bootstrap": 20},
        },
        "runs": runs,
    }
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_shipped_space_runs_one_trial(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    bench = load_benchmark(_smoke_config(tmp_path))
    settings = Settings.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "rr"))
    settings = Settings(tmp_path, settings.tracking_uri, settings.storage, None)
    result = run_benchmark(BenchmarkJob(bench, prepared_small, name="smoke"), settings, print)

    assert result["failed"] == []
    client = MlflowClient(settings.tracking_uri)
    sweeps = client.search_runs(
        [client.get_experiment_by_name("benchmark-smoke").experiment_id],
        "tags.`mammobench.kind` = 'sweep'",
    )
    used = {}
    for sweep in sweeps:
        trials = client.search_runs(
            [sweep.info.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'"
        )
        assert sweep.info.status == "FINISHED", sweep.data.tags
        assert [t.info.status for t in trials] == ["FINISHED"]
        assert trials[0].data.params["pretrained"] == "False"
        assert "epoch" in trials[0].data.metrics
        space = yaml.safe_load(
            Path(
                client.download_artifacts(sweep.info.run_id, "space.yaml", str(tmp_path))
            ).read_text()
        )
        _assert_sampled_from(space["params"], trials[0].data.params)
        used[space["name"]] = sweep.data.tags["mammobench.model"]
    assert sorted(used) == available_spaces()


def _assert_sampled_from(params: dict, logged: dict[str, str]) -> None:
    """The trial's settings are draws of the space (ranges and choices), not defaults."""
    for key, dist in params.items():
        (kind, values), value = next(iter(dist.items())), logged[key]
        if kind in ("uniform", "loguniform"):
            assert values[0] <= float(value) <= values[1], (key, value)
        elif kind == "choice" and key != "unfreeze":  # scratch trials train every stage
            assert value in {str(v) for v in values}, (key, value)
