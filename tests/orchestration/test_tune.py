"""``mammobench tune``: Ray Tune sweeps on a real local cluster, tracked in a real MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.sweep_config import SweepConfig
from orchestration.train.config import TrainConfig
from orchestration.train.data import data_config
from orchestration.tune import (
    ClusterTooSmall,
    _concurrency,
    _register_trainable,
    _scheduler,
    _search,
    max_concurrent_trials,
    param_space,
    ranked_by,
)
from search_spaces import load_space
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


def test_two_cpu_local_cluster_runs_a_sweep_without_hanging(
    prepared_small: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"MAMMOBENCH_NUM_CPUS": "2", "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [
        str(Path(sys.executable).parent / "mammobench"),
        "tune",
        "mobilenetv2",
        "--data",
        str(prepared_small),
        "--space",
        str(_space(tmp_path)),
        "--max-epochs",
        "1",
        "--samples",
        "1",
        "--batch-size",
        "16",
        "--name",
        "two-cpus",
        "--json",
    ]
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


def test_each_trial_gets_its_share_of_the_cpus_its_workers_leave_free(prepared_small) -> None:
    sweep = SweepConfig(model="mobilenetv2", data=str(prepared_small))
    base = sweep.base()
    assert _concurrency(sweep, base, {"CPU": 4.0}) == (2, replace(base, data_cpus=1.0))
    one_gpu = replace(sweep, gpus_per_trial=1.0)
    concurrent, job = _concurrency(one_gpu, one_gpu.base(), {"CPU": 16.0, "GPU": 1.0})
    assert (concurrent, job.data_cpus) == (1, 15.0)  # one trial: every CPU its worker leaves
    concurrent, job = _concurrency(one_gpu, one_gpu.base(), {"CPU": 64.0, "GPU": 8.0})
    assert (concurrent, job.data_cpus) == (8, 7.0)
    # --max-concurrent (an autoscaling cluster, nodes not up yet): no share, no limit
    assert _concurrency(replace(sweep, max_concurrent=3), base, {"CPU": 4.0}) == (3, base)
    options = data_config(replace(base, data_cpus=1.5))._resolve_execution_options("train")
    assert options.resource_limits.cpu == 1.5
    assert options.resource_limits.object_store_memory == float("inf")  # only CPUs held


def test_asha_judges_a_trial_at_a_rung_by_its_best_epoch_so_far() -> None:
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    sweep = SweepConfig(model="mobilenetv2", data=".", max_epochs=4, reduction_factor=2)
    asha = _scheduler(sweep)  # rungs at epochs 1 and 2
    assert asha.set_search_properties(ranked_by(TrainConfig(model="mobilenetv2", data=".")), "max")
    steady, dipped = Trial("steady", stub=True), Trial("dipped", stub=True)
    for trial in (steady, dipped):
        asha.on_trial_add(None, trial)

    def report(trial: Trial, epoch: int, auc: float, best: float) -> str:
        result = {"epoch": epoch, "val_auc": auc, "best_val_auc": best}
        return asha.on_trial_result(None, trial, result)

    report(steady, 1, 0.70, 0.70)
    report(dipped, 1, 0.90, 0.90)
    assert report(steady, 2, 0.80, 0.80) == TrialScheduler.CONTINUE  # first at the rung
    # one noisy epoch below the steady trial's 0.80: kept on its best epoch, 0.90
    assert report(dipped, 2, 0.60, 0.90) == TrialScheduler.CONTINUE
    # and stopped where its best is below: the rung's cut-off is live
    late = Trial("late", stub=True)
    asha.on_trial_add(None, late)
    report(late, 1, 0.95, 0.95)
    assert report(late, 2, 0.70, 0.75) == TrialScheduler.STOP


ASCENDING = """task: classification
params:
  lr: {grid: [1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]}
  weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
"""


def test_a_grid_runs_in_an_order_drawn_from_the_sweeps_seed_not_as_written(tmp_path: Path) -> None:
    path = tmp_path / "ascending.yaml"
    path.write_text(ASCENDING)
    space = load_space(path)
    written = space.params["lr"]["grid"]

    def order(seed: int) -> list[float]:
        return param_space(space, "random", seed)["lr"]["grid_search"]

    assert sorted(order(0)) == written  # every value, once
    assert order(0) != written  # ASHA would promote each trial that beats the ones before it
    assert order(0) == order(0)
    assert any(order(seed) != order(0) for seed in (1, 2, 3))
    assert param_space(space, "optuna", 0)["lr"].categories == written  # Optuna draws them


def test_a_random_sweep_draws_the_same_trials_from_the_same_seed(tmp_path: Path) -> None:
    from ray.tune.experiment import Experiment

    path = tmp_path / "ascending.yaml"
    path.write_text(ASCENDING)
    space = load_space(path)

    def trials(seed: int) -> list[dict]:
        search = _search(SweepConfig(model="mobilenetv2", data=".", seed=seed), concurrent=1)
        config = param_space(space, "random", seed)
        search.add_configurations(Experiment("x", print, config=config, storage_path=str(tmp_path)))
        drawn = []
        while (trial := search.next_trial()) is not None:
            drawn.append(trial.config)
            search.on_trial_complete(trial.trial_id)
        return drawn

    assert len(trials(0)) == 6
    assert trials(0) == trials(0)  # the weight decays too: Tune's draws are seeded
    assert trials(1) != trials(0)


def test_an_optuna_sweep_is_seeded_and_holds_to_its_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "ascending.yaml"
    path.write_text(ASCENDING)
    space = param_space(load_space(path), "optuna", 0)

    def suggestions(seed: int) -> list[dict]:
        sweep = SweepConfig(model="mobilenetv2", data=".", search="optuna", seed=seed)
        search = _search(sweep, concurrent=2)
        assert search.set_search_properties("best_val_auc", "max", space)
        first = [search.suggest("a"), search.suggest("b")]
        assert search.suggest("c") is None  # two at a time
        search.on_trial_complete("a", {"best_val_auc": 0.7})
        return [*first, search.suggest("c")]

    drawn = suggestions(0)
    assert all(d is not None and d["lr"] in space["lr"].categories for d in drawn)
    assert suggestions(0) == drawn
    assert suggestions(1) != drawn


def test_bad_space_file_fails_naming_file_and_key(prepared_small: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\nparams:\n  lr: {loguniform: [0.1, 0.001]}\n")
    result = runner.invoke(
        app, ["tune", "mobilenetv2", "--data", str(prepared_small), "--space", str(bad)]
    )
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
