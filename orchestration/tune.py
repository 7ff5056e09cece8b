"""Ray Tune sweeps (``mammobench tune``): pretrained vs scratch x unfrozen stages x learning rate.

Each trial runs ``orchestration.trial.train_driver_fn``, which builds the ``TorchTrainer`` of
``mammobench train`` (Train V2) named after the trial id, so a resumed trial's Train run restores
its own checkpoint.
``TuneReportCallback`` forwards each epoch's metrics to Tune, where ASHA may stop the trial and
``TrialTracker`` logs it to MLflow. The best trial (by validation metric) is tested once.
"""

from __future__ import annotations

import functools
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from models import ModelSpec, WeightsNotFoundError, model_info, weights_available
from orchestration.results import plots
from orchestration.results.model_card import model_card
from orchestration.results.tracking import (
    BENCH_TAG,
    INPUT_TAG,
    MODEL_TAG,
    SEEDS_TAG,
    SKIPPED_PRETRAINED_TAG,
    TASK_TAG,
    THRESHOLD_TAG,
    Artifact,
    SweepRun,
    TrialTracker,
    client_for,
    experiment_id,
    log_datasets,
    log_predictions,
    provenance_tags,
)
from orchestration.seeds import run_seed_repeats, seed_figures
from orchestration.settings import Settings
from orchestration.stopwatch import Stopwatch
from orchestration.sweep_config import SweepConfig
from orchestration.train.config import TASK_METRIC, TrainConfig, read_manifest
from orchestration.train.driver import (
    check_job,
    evaluate_checkpoint,
    load_best_model,
    open_checkpoint,
)
from orchestration.train.worker import BEST_FILE, BEST_VAL_FILE
from orchestration.trial import train_driver_fn
from search_spaces import Space, SpaceError, default_space, load_space

# A trial's driver only waits on its Train run: it reserves memory, not a CPU, so a trial needs
# its Train workers' CPUs plus one CPU left free for Ray Data (else ingestion never starts).
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}
DATA_CPUS = 1.0
_REGISTRY_LOCK = threading.Lock()  # see ``_register_trainable``


class ClusterTooSmall(RuntimeError):
    """The cluster cannot run one trial without starving its data pipeline."""


def max_concurrent_trials(
    resources: dict[str, float], workers: int, cpus_per_worker: float, gpus_per_worker: float
) -> int:
    """How many trials fit at once, each with its workers and one free CPU for Ray Data."""
    cpus = resources.get("CPU", 0.0)
    need = workers * cpus_per_worker + DATA_CPUS
    if cpus < need:
        raise ClusterTooSmall(
            f"the cluster has {cpus:g} CPUs; one trial needs {need:g} ({workers} Train "
            f"worker(s) x {cpus_per_worker:g} + {DATA_CPUS:g} for Ray Data): use fewer workers "
            "or a bigger cluster (on an autoscaling cluster, pass --max-concurrent)"
        )
    fit = int(cpus // need)
    if gpus_per_worker > 0:
        fit = min(fit, int(resources.get("GPU", 0.0) // (workers * gpus_per_worker)))
        if fit < 1:
            raise ClusterTooSmall(
                f"the cluster has {resources.get('GPU', 0):g} GPUs; one trial "
                f"needs {workers * gpus_per_worker:g}"
            )
    return max(1, fit)


def _concurrency(
    sweep: SweepConfig, base: TrainConfig, resources: dict[str, float]
) -> tuple[int, TrainConfig]:
    """Trials at once, and the job each runs with its share of the CPUs the Train workers leave
    free for Ray Data (derived with the concurrency; with ``--max-concurrent``, an autoscaling
    cluster's nodes are not up yet: no share, each pipeline plans for what is free)."""
    if sweep.max_concurrent:
        return sweep.max_concurrent, base
    concurrent = max_concurrent_trials(
        resources, base.workers, base.cpus_per_worker, base.gpus_per_worker
    )
    free = resources.get("CPU", 0.0) - concurrent * base.workers * base.cpus_per_worker
    return concurrent, replace(base, data_cpus=max(DATA_CPUS, free / concurrent))


def resolve_space(
    space_ref: str | None,
    task: str,
    model: str,
    weights_dir: str | None = None,
    fixed: dict[str, Any] | None = None,
) -> tuple[Space, str | None]:
    """The space fitted to an architecture, and why pretrained trials were skipped (if so).

    A space pinned to ``pretrained: true`` without obtainable weights is an error, not a skip.
    """
    space = load_space(space_ref or default_space(task, model)).fix(fixed or {})
    if space.task != task:
        raise SpaceError(f"{space.path}: a {space.task} space, but the sweep's task is {task}")
    info = model_info(model)
    skipped = None
    if True in (space.values("pretrained") or []):
        ok, reason = weights_available(
            ModelSpec(name=model, pretrained=True, weights_dir=weights_dir)
        )
        skipped = None if ok else reason
        if skipped and space.values("pretrained") == [True]:
            raise WeightsNotFoundError(reason)
    fitted = space.resolve(info["unfreeze_choices"], info["study_unfreeze"], skipped is None)
    return fitted, skipped


def param_space(space: Space, search: str, seed: int = 0) -> dict[str, Any]:
    """Tune distributions of a space (Optuna has no grid: grids become choices).

    A grid runs in an order drawn from ``seed``, not as written: Tune's ASHA is asynchronous and
    judges a trial at a rung against the trials that reached it before, so a grid written in
    ascending learning rates, each trial beating the last, had most trials promoted at every rung.
    """
    from ray import tune

    rng = random.Random(seed)
    make = {
        "grid": (lambda v: tune.grid_search(rng.sample(v, len(v))))
        if search == "random"
        else tune.choice,
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "value": lambda v: v,
    }
    return {
        key: make[kind](values)
        for key, dist in space.params.items()
        for kind, values in dist.items()
    }


def sweep_name(sweep: SweepConfig, storage: str) -> str:
    """The given name; on resume without one, the newest sweep of this model and task."""
    prefix = f"tune-{sweep.model}-{sweep.task}"
    if sweep.name:
        return sweep.name
    if sweep.resume:
        found = sorted(Path(storage).glob(f"{prefix}-*/tuner.pkl"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"no {prefix} sweep in {storage} to resume")
        return found[-1].parent.name
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def _scheduler(sweep: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    grace = min(sweep.grace_epochs, sweep.max_epochs)
    return ASHAScheduler(
        time_attr="epoch",
        max_t=sweep.max_epochs,
        grace_period=grace,
        reduction_factor=sweep.reduction_factor,
    )


def ranked_by(base: TrainConfig) -> str:
    """What Tune ranks a trial by, ASHA at each rung and Optuna at its end: the trial's best
    epoch so far (``best_val_auc``), the figure its best checkpoint and the sweep's best trial
    are chosen by; one epoch's figure dips by noise on a small validation split."""
    return f"best_{base.metric}"


def _stops_early(sweep: SweepConfig) -> bool:
    """Whether ASHA may stop a trial before its last epoch. Its actor is then not reused: the
    stopped trial's ``TorchTrainer.fit()`` still runs in the actor's thread, Tune's reset fails
    ("Could not re-use actor"), the next trial errors and the sweep hangs (seen). Otherwise
    actors are reused (on a 2-CPU cluster, a new actor per trial hung instead)."""
    return sweep.scheduler == "asha" and sweep.max_epochs > sweep.grace_epochs


def _search(sweep: SweepConfig, concurrent: int):
    """The search algorithm, seeded by ``sweep.seed``, limited to ``concurrent`` trials at once."""
    if sweep.search == "random":  # Tune's default (grid x random samples), its draws seeded
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=concurrent, random_state=sweep.seed)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    return ConcurrencyLimiter(OptunaSearch(seed=sweep.seed), max_concurrent=concurrent)


def _tuner(
    sweep: SweepConfig,
    space: Space,
    name: str,
    storage: str,
    tracker: TrialTracker,
    base: TrainConfig,
):
    import ray
    from ray import tune

    from orchestration.tune_progress import SweepProgress

    concurrent, base = _concurrency(sweep, base, ray.cluster_resources())
    trainable = _register_trainable(base, storage, name)
    path = f"{storage.rstrip('/')}/{name}"
    if sweep.resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    tune_config = tune.TuneConfig(
        metric=ranked_by(base),
        mode="max",
        scheduler=_scheduler(sweep),
        search_alg=_search(sweep, concurrent),
        num_samples=sweep.samples,
        reuse_actors=not _stops_early(sweep),
    )
    failures = tune.FailureConfig(max_failures=sweep.max_failures)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[tracker, SweepProgress(_label(sweep, name), base.metric)],
        failure_config=failures,
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(space, sweep.search, sweep.seed),
        tune_config=tune_config,
        run_config=run_config,
    )


def _label(sweep: SweepConfig, name: str) -> str:
    """The sweep as the console names it: without its benchmark's name in front."""
    bench = sweep.tags.get(BENCH_TAG)
    return name.removeprefix(f"{bench}-") if bench else name


def _register_trainable(base: TrainConfig, storage: str, sweep: str) -> str:
    """Register the sweep's trainable as ``trial_<sweep>``; Tune is then given that name.

    Tune keeps trainables and ``with_parameters`` values in process-global registries that are
    not thread-safe (a flush iterates a dict another thread adds to), and registers trainables
    by name in the cluster's KV store: a benchmark's sweeps run at once in one process, so each
    registers under its own key, one at a time.
    """
    from ray import tune

    with _REGISTRY_LOCK:
        with_args = tune.with_parameters(
            train_driver_fn, base=base.to_dict(), storage=storage, sweep=sweep
        )
        key = f"trial_{sweep}"
        tune.register_trainable(key, tune.with_resources(with_args, TRIAL_DRIVER_RESOURCES))
    return key


def run_sweep(sweep: SweepConfig, settings: Settings) -> dict[str, Any]:
    """Run (or resume) a sweep, test its best trial once and register the best model."""
    base = sweep.base()
    check_job(base)
    space, skipped = resolve_space(
        sweep.space, sweep.task, sweep.model, base.weights_dir, sweep.fixed
    )
    name = sweep_name(sweep, settings.storage)
    client = client_for(settings.tracking_uri)
    local = settings.tracking_uri.startswith("sqlite:")
    experiment = sweep.experiment or f"mammobench-{sweep.task}"
    exp_id = experiment_id(client, experiment, settings.artifact_root if local else None)
    parent = SweepRun.open(
        client,
        exp_id,
        name,
        resume=sweep.resume,
        parent=sweep.parent_run,
        tags=_tags(base, skipped) | sweep.tags,
    )
    parent.log_space(space.to_dict(), {"sweep": _settings(sweep)})
    artifacts = functools.partial(trial_artifacts, storage=settings.storage)
    tracker = TrialTracker(settings.tracking_uri, exp_id, parent.run_id, base.to_dict(), artifacts)
    clock = Stopwatch()
    with clock("tune"):
        results = _tuner(sweep, space, name, settings.storage, tracker, base).fit()
    summary = _summary(results, base, name, experiment, parent.run_id, skipped)
    summary["usage"] = _usage(summary["trials"], sweep.gpus_per_trial)
    if summary["best"]:
        with clock("test"):
            summary["best"]["test"] = _test_best(summary["best"], base, settings.storage)
        log_predictions(client, parent.run_id, summary["best"]["test"].pop("predictions", {}))
        log_datasets(client, parent.run_id, base, ("test",))
        if sweep.seeds > 1:
            with clock("seeds"):
                summary["seeds"] = _seeds(sweep, base, summary["best"], name, settings, tracker)
            parent.tag({SEEDS_TAG: json.dumps(summary["seeds"].pop("values"))})
        with clock("register"):
            summary["registered_model"] = _register(parent, summary["best"], base, settings)
    with clock("figures"):
        rows, histories = parent.trial_curves(base.metric)
        figures = plots.sweep_figures(rows, histories, base.metric) if histories else {}
    summary["timings"] = clock.seconds
    parent.finish(summary, "FINISHED" if summary["best"] else "FAILED", figures)
    return summary


def _register(
    parent: SweepRun, best: dict[str, Any], base: TrainConfig, settings: Settings
) -> dict[str, str]:
    """Log the best trial's model on the sweep's run and register it with its test figures."""
    name = registered_name(base)
    model = _best_model(best, base, settings.storage)
    cfg = base.with_params(best["params"])
    tags = {"model_card": model_card(cfg, best["test"])}
    if "threshold" in best["test"]:  # the operating point travels with the model
        tags |= {"threshold": repr(best["test"]["threshold"]), "threshold_rule": cfg.threshold_rule}
    return {"name": name, "version": parent.register_model(name, model, cfg, best["test"], tags)}


def registered_name(base: TrainConfig) -> str:
    """``mammobench-<model>-<task>``; a whole-image classifier, which takes other input than a
    lesion-crop one, is ``...-whole``."""
    whole = base.task == "classification" and _input_of(base) == "whole"
    return f"mammobench-{base.model}-{base.task}" + ("-whole" if whole else "")


def _input_of(base: TrainConfig) -> str:
    return str(read_manifest(base.data, base.task).get("config", {}).get("cls_input", "crop"))


def _seeds(
    sweep: SweepConfig,
    base: TrainConfig,
    best: dict[str, Any],
    name: str,
    settings: Settings,
    tracker: TrialTracker,
) -> dict[str, Any]:
    """The best params with ``sweep.seeds - 1`` more training seeds: mean, sd, each seed."""
    import ray

    concurrent, base = _concurrency(sweep, base, ray.cluster_resources())
    trainable = _register_trainable(base, settings.storage, name)
    repeats = run_seed_repeats(
        sweep, base, best, trainable, settings.storage, f"{name}-seeds", [tracker], concurrent
    )
    figures = seed_figures(base.task, base.seed, best["test"], repeats)
    values = {k: figures.pop(k) for k in list(figures) if k.startswith("seed_values_")}
    return figures | {"values": values}


def trial_artifacts(cfg: TrainConfig, checkpoint_path: str, storage: str) -> Iterator[Artifact]:
    """A finished trial's best model and the figures of its validation predictions."""
    with open_checkpoint(checkpoint_path, storage).as_directory() as folder:
        yield "checkpoint", Path(folder) / BEST_FILE
        record = torch.load(Path(folder) / BEST_VAL_FILE, weights_only=True)
    for name, figure in plots.validation_figures(cfg.task, record or {}):
        yield f"plots/{name}", figure


def _tags(base: TrainConfig, skipped: str | None) -> dict[str, str]:
    manifest = read_manifest(base.data, base.task)
    tags = provenance_tags(str(manifest.get("fingerprint", "")))
    tags |= {MODEL_TAG: base.model, TASK_TAG: base.task}
    if base.task == "classification":  # what the leaderboard's protocol column says
        tags[INPUT_TAG] = _input_of(base)
        tags[THRESHOLD_TAG] = base.threshold_rule
    if skipped:
        tags[SKIPPED_PRETRAINED_TAG] = skipped
    return tags


def _settings(sweep: SweepConfig) -> dict[str, Any]:
    keep = (
        "model",
        "task",
        "samples",
        "max_epochs",
        "scheduler",
        "search",
        "workers",
        "gpus_per_trial",
        "grace_epochs",
        "reduction_factor",
        "seeds",
        "max_failures",
        "seed",
    )
    return {k: v for k, v in asdict(sweep).items() if k in keep}


def _summary(
    results, base: TrainConfig, name: str, experiment: str, parent: str, skipped: str | None
) -> dict[str, Any]:
    best_key = ranked_by(base)
    trials = [_trial_row(result, best_key) for result in results]
    best = _best_trial(results, best_key)
    best_out = None
    if best:
        best_out = {
            "trial_id": best.metrics["trial_id"],
            "params": best.config,
            "val": {TASK_METRIC[base.task]: best.metrics[best_key]},
            "checkpoint": best.metrics["checkpoint_path"],
        }
    return {
        "sweep": name,
        "experiment": experiment,
        "parent_run_id": parent,
        "trials": trials,
        "best": best_out,
        "skipped_pretrained": skipped,
    }


def sweep_outcome(summary: dict[str, Any]) -> str:
    """``val auc 0.71, test auc 0.68`` of a sweep's best trial, or why there is none."""
    best = summary["best"]
    if best is None:
        return "no trial reported a validation metric (see the sweep's trials in MLflow)"
    words = [f"val {key} {value:.3f}" for key, value in best["val"].items()]
    test = best.get("test", {})
    words += [f"test {k} {test[k]:.3f}" for k in best["val"] if isinstance(test.get(k), float)]
    return "done: " + ", ".join(words)


def _trial_row(result, best_key: str) -> dict[str, Any]:
    metrics = result.metrics or {}
    return {
        "trial_id": metrics.get("trial_id"),
        "config": result.config,
        "status": "ERROR" if result.error else "TERMINATED",
        "stopped_early": bool(metrics) and not metrics.get("completed", False),
        "epochs": metrics.get("epoch"),
        best_key: metrics.get(best_key),
        "checkpoint_path": metrics.get("checkpoint_path"),
        "time_total_s": metrics.get("time_total_s"),
    }


def _best_trial(results, best_key: str):
    """The trial with the highest finite ``best_key``, or None when no trial reported one with a
    checkpoint (Tune returns a lone trial whatever its metric: checked here)."""
    try:
        best = results.get_best_result(best_key, "max", filter_nan_and_inf=True)
    except RuntimeError:  # no trial reported the metric
        return None
    metrics = best.metrics or {}
    value = metrics.get(best_key)
    usable = value is not None and math.isfinite(value) and metrics.get("checkpoint_path")
    return best if usable else None


def _usage(trials: list[dict[str, Any]], gpus_per_trial: float) -> dict[str, float]:
    """Trial wall-clock hours, and GPU-hours (each trial held ``gpus_per_trial`` GPUs)."""
    hours = sum(t.get("time_total_s") or 0.0 for t in trials) / 3600
    return {"trial_hours": hours, "gpu_hours": hours * gpus_per_trial}


def _test_best(best: dict[str, Any], base: TrainConfig, storage: str) -> dict[str, Any]:
    cfg = base.with_params(best["params"])
    return evaluate_checkpoint(cfg, open_checkpoint(best["checkpoint"], storage))


def _best_model(best: dict[str, Any], base: TrainConfig, storage: str) -> torch.nn.Module:
    cfg = base.with_params(best["params"])
    with open_checkpoint(best["checkpoint"], storage).as_directory() as folder:
        return load_best_model(cfg, folder)
