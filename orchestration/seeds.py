"""Seed repeats: a sweep's best configuration trained again with other training seeds.

One sweep picks one configuration from one training run of each; how much of its test figure is
the seed's luck is the question a reviewer asks next. With ``seeds: N`` the best trial's params
are trained N - 1 more times (seeds ``sweep.seed + 1`` ...), each a trial of the same trainable
(one Ray Train job, a child run in MLflow), each tested once on the same test split. With
``split_data`` the repeat of seed k also trains on shards prepared with validation-split seed k
(``vary_split``): the variance then includes the split's. The figures reported are the mean and
sample standard deviation over the N seeds, and each seed's.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

from orchestration.results.leaderboard import PRIMARY
from orchestration.sweep_config import SweepConfig
from orchestration.train.config import TASK_METRIC, TrainConfig
from orchestration.train.driver import evaluate_checkpoint, open_checkpoint


def run_seed_repeats(
    sweep: SweepConfig,
    base: TrainConfig,
    best: dict[str, Any],
    trainable: str,
    storage: str,
    name: str,
    callbacks: list,
    concurrent: int,
) -> list[dict[str, Any]]:
    """Train the best params with ``sweep.seeds - 1`` other seeds and test each, at most
    ``concurrent`` at once (what the cluster fits, as for the sweep's own trials); one dict a
    seed: ``{"seed", "test"}`` or ``{"seed", "error"}``. A resumed sweep restores them."""
    from ray import tune

    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        seeds = [sweep.seed + k for k in range(1, sweep.seeds)]
        tuner = tune.Tuner(
            trainable,
            param_space={**best["params"], **repeat_space(seeds, sweep.split_data)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=min(concurrent, len(seeds)), reuse_actors=True
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            ),
        )
    return [_tested(result, base, storage) for result in tuner.fit()]


def repeat_space(seeds: list[int], split_data: dict[int, str]) -> dict[str, Any]:
    """One trial per seed; with ``split_data`` (seed -> shards prepared with that validation
    split's seed) each trial also trains and selects on its own split."""
    from ray import tune

    if not split_data:
        return {"seed": tune.grid_search(seeds)}
    missing = [s for s in seeds if s not in split_data]
    if missing:
        raise ValueError(f"no shards prepared with the validation split of seed(s) {missing}")
    by_data = {split_data[s]: s for s in seeds}
    return {
        "data": tune.grid_search([split_data[s] for s in seeds]),
        "seed": tune.sample_from(functools.partial(_seed_of, by_data)),
    }


def _seed_of(by_data: dict[str, int], spec) -> int:
    return by_data[spec.config["data"]]


def _tested(result, base: TrainConfig, storage: str) -> dict[str, Any]:
    seed = result.config["seed"]
    checkpoint = (result.metrics or {}).get("checkpoint_path")
    if result.error or not checkpoint:
        return {"seed": seed, "error": str(result.error or "no checkpoint")}
    cfg = base.with_params(result.config)
    test = evaluate_checkpoint(cfg, open_checkpoint(checkpoint, storage))
    test.pop("predictions", None)
    return {"seed": seed, "test": test}


def seed_figures(task: str, seed: int, first: dict[str, Any], repeats: list[dict]) -> dict:
    """Mean, sample sd and per-seed values of the task's test metric (and a classifier's AUC)
    over the best trial (``seed``) and its repeats; failed repeats are left out, counted."""
    tested = [(seed, first), *((r["seed"], r["test"]) for r in repeats if "test" in r)]
    out: dict[str, Any] = {"seeds": len(tested), "seeds_failed": len(repeats) + 1 - len(tested)}
    metrics = {PRIMARY[task], TASK_METRIC[task]}
    for metric in sorted(metrics):
        pairs = {s: float(test[metric]) for s, test in tested if test.get(metric) is not None}
        if not pairs:
            continue
        values = list(pairs.values())
        out[f"seed_mean_{metric}"] = statistics.fmean(values)
        out[f"seed_sd_{metric}"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"seed_values_{metric}"] = pairs
    return out
