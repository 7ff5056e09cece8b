"""The ``mammobench`` command line: argument parsing only; each verb calls into the packages."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from data_pipeline import TASKS
from data_pipeline.catalog import build_catalog
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.storage import location_text
from data_pipeline.synth import SynthConfig
from orchestration.cli_serve import evaluate, predict
from orchestration.cli_weights import weights_app
from orchestration.console import captured, log_path
from orchestration.settings import Settings, set_offline_environment
from orchestration.sweep_config import SweepConfig
from orchestration.train.config import TrainConfig

VERBOSE_HELP = "Show Ray's, Ray Data's and the libraries' logs here too (always in the log file)."
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)]

app = typer.Typer(
    help="Distributed experiment orchestration on Ray for breast-cancer deep learning on CBIS-DDSM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [default: ...] literally
)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (None is "not given"), so a config's own defaults apply."""
    return {name: value for name, value in options.items() if value is not None}


def default(owner: type | Callable[..., Any], name: str) -> Any:
    """The default of ``name`` where it is defined: a dataclass field (its factory called) or a
    function's parameter."""
    if not dataclasses.is_dataclass(owner):
        return inspect.signature(owner).parameters[name].default
    field = {f.name: f for f in dataclasses.fields(owner)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    if field.default is dataclasses.MISSING:
        raise ValueError(f"{owner.__name__}.{name} has no default")
    return field.default


def option(
    owner: type | Callable[..., Any],
    name: str,
    text: str = "",
    *decls: str,
    show: Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``typer.Option`` that defaults to None ("not given") and whose help ends with
    ``[default: ...]``, the default of ``owner``'s ``name`` (see ``default``).

    A bool shows the flag in effect (from ``--on/--off`` in ``decls``), a tuple as it is typed.
    """
    value = default(owner, name)
    if show is not None:
        value = show(value)
    elif isinstance(value, bool):
        on, off = decls[0].split("/")
        value = on if value else off
    elif isinstance(value, tuple):
        value = " ".join(map(str, value))
    return typer.Option(*decls, help=f"{text} [default: {value}]".lstrip(), **kwargs)


def task_choice(tasks: tuple[str, ...]) -> str:
    """The ``prepare --task`` value that selects ``tasks``."""
    return "all" if tuple(tasks) == TASKS else ",".join(tasks)


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn a user's mistake (bad name, missing file or weights) into one line and exit code 2."""
    from models import WeightsNotFoundError

    try:
        yield
    except (FileNotFoundError, ValueError, WeightsNotFoundError, *extra) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _above_zero(text: str) -> float:
    """A number option that must be above 0 (typer's ranges are closed)."""
    value = float(text)
    if not value > 0:
        raise typer.BadParameter(f"{text} is not above 0")
    return value


@app.callback()
def main(
    ctx: typer.Context,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow tracking URI [default: sqlite store in the local work dir].",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Ray results dir or bucket URI [default: <work dir>/ray_results]."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(envvar="RAY_ADDRESS", help="Ray cluster address [default: local]."),
    ] = None,
) -> None:
    """Global options; the local work dir is ./runs or $MAMMOBENCH_HOME."""
    set_offline_environment()
    ctx.obj = Settings.resolve(tracking_uri, storage, address)


@app.command()
def catalog(
    data: Annotated[
        str,
        typer.Argument(help="CBIS-DDSM download (or `mammobench synth` output): a folder or URI."),
    ],
    csv: Annotated[
        str | None, typer.Option("--csv", help="Folder or URI of the case-description CSVs.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seed: Annotated[
        int | None, option(build_catalog, "seed", "Seed of the validation split.")
    ] = None,
    val_fraction: Annotated[
        float | None, option(build_catalog, "val_fraction", "Share of train patients in val.")
    ] = None,
) -> None:
    """Read the case CSVs, find every DICOM, make patient-level splits and summarise."""
    from orchestration.results.report_text import catalog_text

    summary = build_catalog(data, csv, **given(val_fraction=val_fraction, seed=seed)).summary()
    typer.echo(json.dumps(summary) if as_json else catalog_text(summary))


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic download to.")],
    patients: Annotated[
        int | None, option(SynthConfig, "patients", "Number of patients.", min=2)
    ] = None,
    seed: Annotated[
        int | None, option(SynthConfig, "seed", "Random seed (same seed, same bytes).")
    ] = None,
    size: Annotated[
        tuple[int, int] | None, option(SynthConfig, "size", "Full image rows and columns (H W).")
    ] = None,
    layout: Annotated[
        str | None,
        option(SynthConfig, "layout", "nbia | nbia-no-metadata | csv (folder layout to write)."),
    ] = None,
) -> None:
    """Write a small CBIS-DDSM-shaped download (NBIA tree, CSVs, DICOMs) with learnable lesions."""
    from data_pipeline.synth import make_synthetic

    shape = None if size is None else tuple(size)
    cfg = SynthConfig(**given(patients=patients, seed=seed, size=shape, layout=layout))
    make_synthetic(out, cfg)
    typer.echo(f"wrote a synthetic CBIS-DDSM download for {cfg.patients} patients to {out}")


@app.command()
def prepare(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Argument(help="CBIS-DDSM download or `mammobench synth` output: folder or URI.")
    ],
    out: Annotated[
        str, typer.Option("--out", help="Folder or s3:// / gs:// URI for shards and manifest.json.")
    ],
    task: Annotated[
        str | None, option(PrepareConfig, "tasks", "|".join((*TASKS, "all")), show=task_choice)
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel conversion tasks [default: all CPUs].")
    ] = None,
    cls_size: Annotated[
        int | None, option(PrepareConfig, "cls_size", "Classification image side.", min=1)
    ] = None,
    seg_size: Annotated[
        int | None, option(PrepareConfig, "seg_size", "Segmentation crop side.", min=1)
    ] = None,
    det_size: Annotated[
        int | None, option(PrepareConfig, "det_size", "Detection image long side.", min=1)
    ] = None,
    lesion_type: Annotated[
        str | None, option(PrepareConfig, "lesion_type", "mass|calc|all")
    ] = None,
    cls_input: Annotated[
        str | None,
        option(
            PrepareConfig,
            "cls_input",
            "crop (lesion crop) | whole (full image, the seed's).",
            "--input",
        ),
    ] = None,
    label_map: Annotated[str | None, option(PrepareConfig, "label_map", "binary | 3class")] = None,
    shard_size: Annotated[
        int | None,
        option(
            PrepareConfig,
            "shard_size",
            "Source images per shard (their rows of every task).",
            min=1,
        ),
    ] = None,
    max_quarantine: Annotated[
        float | None,
        option(
            PrepareConfig,
            "max_quarantine",
            "Fail (exit 1) when more than this share is quarantined.",
            min=0,
            max=1,
        ),
    ] = None,
    csv: Annotated[
        str | None, typer.Option("--csv", help="Folder or URI of the case CSVs.")
    ] = None,
    seed: Annotated[
        int | None, option(PrepareConfig, "seed", "Seed of the validation split.")
    ] = None,
    val_fraction: Annotated[
        float | None,
        option(PrepareConfig, "val_fraction", "Share of training patients in validation."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Convert DICOMs into Parquet shards with Ray Data: resumable, nothing lost, no PHI."""
    from data_pipeline.convert import prepare as run_prepare
    from orchestration.ray_cluster import init_ray
    from orchestration.results.report_text import prepare_text

    tasks = None if task is None else TASKS if task == "all" else (task,)
    with user_errors():  # bad option values, missing DATA or CSVs fail before Ray starts
        cfg = PrepareConfig(
            **given(
                tasks=tasks,
                cls_size=cls_size,
                seg_size=seg_size,
                det_size=det_size,
                lesion_type=lesion_type,
                cls_input=cls_input,
                label_map=label_map,
                shard_size=shard_size,
                seed=seed,
                max_quarantine=max_quarantine,
                val_fraction=val_fraction,
            )
        )
        catalog = build_catalog(data, csv, val_fraction=cfg.val_fraction, seed=cfg.seed)
    with captured(log_path(ctx.obj.home / "logs", "prepare"), verbose) as shown:
        init_ray(ctx.obj.address)
        manifest = run_prepare(catalog, out, cfg, workers=workers, print_fn=shown.say)
    text, share = prepare_text(manifest, out, cfg.tasks)
    typer.echo(text)
    if share > cfg.max_quarantine:
        typer.echo(
            f"quarantined share {share:.1%} exceeds --max-quarantine {cfg.max_quarantine:.1%}"
        )
        raise typer.Exit(1)


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(help="Architecture (see `mammobench models`) [default: --config's]."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Prepared data, folder or URI (PREP) [default: --config's].")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Re-run a logged config.yaml (an MLflow run's); options override it."),
    ] = None,
    task: Annotated[str | None, option(TrainConfig, "task", "|".join(TASKS))] = None,
    epochs: Annotated[int | None, option(TrainConfig, "epochs", min=1)] = None,
    lr: Annotated[
        float | None, option(TrainConfig, "lr", "Learning rate.", parser=_above_zero)
    ] = None,
    batch_size: Annotated[int | None, option(TrainConfig, "batch_size", min=1)] = None,
    pretrained: Annotated[
        bool | None,
        option(
            TrainConfig, "pretrained", "ImageNet weights or random init.", "--pretrained/--scratch"
        ),
    ] = None,
    unfreeze: Annotated[
        str | None, option(TrainConfig, "unfreeze", "With --pretrained: last N stages, or all.")
    ] = None,
    workers: Annotated[
        int | None, option(TrainConfig, "workers", "Ray Train workers (DDP when > 1).", min=1)
    ] = None,
    gpus_per_worker: Annotated[float | None, option(TrainConfig, "gpus_per_worker", min=0)] = None,
    balance: Annotated[
        str | None, option(TrainConfig, "balance", "oversample|weighted|none")
    ] = None,
    schedule: Annotated[str | None, option(TrainConfig, "schedule", "cosine|plateau|none")] = None,
    patience: Annotated[
        int | None, option(TrainConfig, "patience", "Early-stopping patience (epochs).", min=0)
    ] = None,
    in_chans: Annotated[
        int | None, option(TrainConfig, "in_chans", "3: repeat grayscale; 1: adapt conv1.")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="Segmenter encoder.")] = None,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    augment: Annotated[
        bool | None, option(TrainConfig, "augment", "", "--augment/--no-augment")
    ] = None,
    detection_classes: Annotated[
        str | None,
        option(
            TrainConfig,
            "detection_classes",
            "Detection: lesion (class-agnostic) or pathology boxes.",
        ),
    ] = None,
    max_failures: Annotated[
        int | None, option(TrainConfig, "max_failures", "Worker failures to retry.", min=0)
    ] = None,
    seed: Annotated[int | None, option(TrainConfig, "seed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    verbose: Verbose = False,
) -> None:
    """Train one architecture with Ray Train, then evaluate its best checkpoint on test."""
    from orchestration.ray_cluster import init_ray
    from orchestration.results.report_text import train_text
    from orchestration.train.driver import check_job, run_training

    with user_errors():  # bad values or names, missing data or weights fail before Ray starts
        cfg = train_config(
            config,
            given(
                model=model,
                data=location_text(data) if data else None,
                task=task,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                pretrained=pretrained,
                unfreeze=unfreeze,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                balance=balance,
                schedule=schedule,
                patience=patience,
                in_chans=in_chans,
                encoder=encoder,
                weights_dir=weights_dir,
                augment=augment,
                max_failures=max_failures,
                seed=seed,
                detection_classes=detection_classes,
            ),
        )
        check_job(cfg.with_manifest())
    with captured(log_path(ctx.obj.home / "logs", "train"), verbose) as shown:
        shown.say(f"training {cfg.model} on {cfg.data} ({cfg.epochs} epochs at most)")
        init_ray(ctx.obj.address)
        result = run_training(cfg, ctx.obj.storage)
    typer.echo(train_text(result))
    if as_json:
        typer.echo(json.dumps(result, default=str))


def train_config(path: Path | None, options: dict[str, Any]) -> TrainConfig:
    """The job: a logged ``config.yaml`` (every field of a run's ``TrainConfig``), with the
    options given on the command line over it; without one, the options alone."""
    import yaml

    base: dict[str, Any] = {}
    if path is not None:
        try:
            base = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(base, dict):
            raise ValueError(f"{path}: not a mapping of TrainConfig fields")
    merged = {**base, **options}
    for key in ("model", "data"):
        if not merged.get(key):
            raise ValueError(
                f"no {key}: give {'MODEL' if key == 'model' else '--data'} or --config"
            )
    try:
        return TrainConfig.from_dict(merged)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path or 'options'}: {exc}") from None


@app.command()
def tune(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="Architecture (see `mammobench models`).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Prepared data, folder or URI (PREP).")] = None,
    task: Annotated[str | None, option(SweepConfig, "task", "|".join(TASKS))] = None,
    space: Annotated[
        str | None, typer.Option(help="Space name or YAML path [default: the family's].")
    ] = None,
    samples: Annotated[
        int | None, option(SweepConfig, "samples", "Samples per grid point.", min=1)
    ] = None,
    max_epochs: Annotated[
        int | None, option(SweepConfig, "max_epochs", "Epochs per trial (ASHA's max_t).", min=1)
    ] = None,
    scheduler: Annotated[str | None, option(SweepConfig, "scheduler", "asha | fifo")] = None,
    search: Annotated[str | None, option(SweepConfig, "search", "random | optuna")] = None,
    workers: Annotated[
        int | None, option(SweepConfig, "workers", "Ray Train workers per trial.", min=1)
    ] = None,
    gpus_per_trial: Annotated[float | None, option(SweepConfig, "gpus_per_trial", min=0)] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Trials at once [default: what the cluster fits now].")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Fixed batch size when the space has none.")
    ] = None,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    grace_epochs: Annotated[
        int | None, option(SweepConfig, "grace_epochs", "ASHA grace period.", min=1)
    ] = None,
    reduction_factor: Annotated[
        int | None,
        option(SweepConfig, "reduction_factor", "ASHA keeps 1 in this many at a rung.", min=2),
    ] = None,
    max_failures: Annotated[
        int | None, option(SweepConfig, "max_failures", "Retries of a failed trial.", min=0)
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Sweep name [default: tune-MODEL-TASK-<time>].")
    ] = None,
    resume: Annotated[
        bool | None,
        option(SweepConfig, "resume", "Continue an interrupted sweep.", "--resume/--no-resume"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved space and stop.")] = False,
    seed: Annotated[
        int | None,
        option(SweepConfig, "seed", "Seed of the sweep: its draws, its grid's order, training."),
    ] = None,
    seeds: Annotated[
        int | None,
        option(SweepConfig, "seeds", "Train the best params with this many seeds in all.", min=1),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    verbose: Verbose = False,
) -> None:
    """Sweep pretrained x unfrozen stages x learning rate with Ray Tune; track it in MLflow."""
    import yaml

    from orchestration.results.report_text import tune_text
    from orchestration.tune import SweepConfig, resolve_space
    from search_spaces import SpaceError, default_space, load_space

    if dry_run:  # needs only --space (or MODEL for its family's space)
        task = default(SweepConfig, "task") if task is None else task
        with user_errors(SpaceError):
            if model:
                resolved, skipped = resolve_space(space, task, model, weights_dir)
                if skipped:
                    note = f"pretrained half skipped: {skipped}".splitlines()
                    typer.echo("\n".join(f"# {line}" for line in note))
            else:
                resolved = load_space(space or default_space(task, ""))
            typer.echo(yaml.safe_dump(resolved.to_dict(), sort_keys=False))
        return
    if model is None or data is None:
        typer.echo("error: MODEL and --data are needed (only --dry-run works without)", err=True)
        raise typer.Exit(2)
    from orchestration.ray_cluster import init_ray
    from orchestration.train.driver import check_job
    from orchestration.tune import run_sweep, sweep_outcome

    train = {"batch_size": batch_size} if batch_size else {}
    train |= {"weights_dir": weights_dir} if weights_dir else {}
    with user_errors(SpaceError):
        sweep = SweepConfig(
            model=model,
            data=str(data),
            train=train,
            **given(
                task=task,
                space=space,
                samples=samples,
                max_epochs=max_epochs,
                scheduler=scheduler,
                search=search,
                workers=workers,
                gpus_per_trial=gpus_per_trial,
                name=name,
                resume=resume,
                grace_epochs=grace_epochs,
                reduction_factor=reduction_factor,
                max_failures=max_failures,
                seed=seed,
                seeds=seeds,
                max_concurrent=max_concurrent,
            ),
        )
        check_job(sweep.base())
        # a bad space file fails before Ray starts
        resolve_space(sweep.space, sweep.task, model, weights_dir)
    with (
        user_errors(SpaceError),
        captured(log_path(ctx.obj.home / "logs", "tune"), verbose) as shown,
    ):
        shown.plan(1)
        init_ray(ctx.obj.address)
        summary = run_sweep(sweep, ctx.obj)
        shown.sweep_done(f"{summary['sweep']}: {sweep_outcome(summary)}")
    typer.echo(tune_text(summary, ctx.obj))
    if as_json:
        typer.echo(json.dumps(summary, default=str))


@app.command()
def benchmark(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(help="Benchmark name or YAML path [default: study; demo with --demo]."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="CBIS-DDSM download, or prepared shards (PREP): a folder or URI."),
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Synthesise a small dataset and run every architecture tiny.")
    ] = False,
    prep: Annotated[
        str | None,
        typer.Option(help="Where to prepare DATA, folder or URI [default: <work dir>/prepared]."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Benchmark run name [default: CONFIG-<time>].")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted benchmark (finished sweeps are kept).")
    ] = False,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1, help="Train each row's best params with N seeds [default: the config's]."
        ),
    ] = None,
    vary_split: Annotated[
        bool | None,
        typer.Option(
            "--vary-split/--no-vary-split",
            help="Seed repeats also draw a new validation split [default: the config's].",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print every sweep, what is skipped and why, and the expected cost."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    verbose: Verbose = False,
) -> None:
    """Run the whole study: prepare, one sweep per architecture x setting, leaderboard, report."""
    from models import available_models
    from orchestration.benchmark import (
        BenchmarkJob,
        default_name,
        embedded_weights,
        run_benchmark,
    )
    from orchestration.ray_cluster import init_ray
    from orchestration.results.report import write_report
    from orchestration.results.report_text import benchmark_text
    from orchestration.results.tracking import client_for
    from search_spaces import SpaceError
    from search_spaces.benchmarks import load_benchmark

    with user_errors(SpaceError):
        registry = {model: task for task in TASKS for model in available_models(task)}
        bench = load_benchmark(config or ("demo" if demo else "study"), registry)
        if data is None and not bench.synth and not dry_run:
            raise ValueError(f"{bench.path} has no synth section: pass --data")
    if dry_run:
        _dry_run(bench, data, weights_dir or embedded_weights(bench, ctx.obj.home), seeds, as_json)
        return
    name = name or (None if resume else default_name(bench))
    logs = ctx.obj.home / ("benchmarks" if name else "logs")
    job = BenchmarkJob(bench, data, prep, name, resume, weights_dir, seeds, vary_split)
    with (
        user_errors(SpaceError),
        captured(log_path(logs / (name or ""), "benchmark"), verbose) as shown,
    ):
        init_ray(ctx.obj.address)
        result = run_benchmark(job, ctx.obj, shown.say)
        report = write_report(
            client_for(ctx.obj.tracking_uri),
            job.experiment,
            Path(result["folder"]),
            ctx.obj.home,
            result["run_id"],
        )
    typer.echo(benchmark_text(result, report, ctx.obj))
    if as_json:
        typer.echo(json.dumps(result | {"report": str(report)}, default=str))
    if result["failed"]:
        raise typer.Exit(1)


def _dry_run(bench, data: str | None, weights_dir: str | None, seeds, as_json: bool) -> None:
    """``benchmark --dry-run``: the plan, and exit 1 when a row the config asks for cannot run."""
    from orchestration.dry_run import plan_benchmark, plan_text

    with user_errors():
        plan = plan_benchmark(bench, data, weights_dir, seeds)
    typer.echo(plan_text(plan))
    if as_json:
        typer.echo(json.dumps(plan, default=str))
    if not plan["runnable"]:
        raise typer.Exit(1)


@app.command()
def report(
    ctx: typer.Context,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment [default: the newest benchmark's].")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.html [default: the benchmark's].")
    ] = None,
) -> None:
    """Write a self-contained HTML report (leaderboard, curves, ROC, overlays) from MLflow."""
    from orchestration.results.report import write_report
    from orchestration.results.tracking import client_for

    with user_errors():
        path = write_report(client_for(ctx.obj.tracking_uri), experiment, out, ctx.obj.home)
    typer.echo(f"report: {path}")


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    input_size: Annotated[
        int | None,
        typer.Option(help="Count parameters at this input side [default: each model's]."),
    ] = None,
) -> None:
    """List the architecture registry: task, library, parameters, unfreeze choices."""
    from models import models_table
    from orchestration.results.report_text import models_text

    rows = models_table(input_size)
    typer.echo(json.dumps(rows) if as_json else models_text(rows))


@app.command()
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but loopback exposes the unauthenticated "
            "store to whoever reaches it (a warning says so); prefer ssh -L."
        ),
    ] = "127.0.0.1",
) -> None:
    """Open the MLflow UI on the tracking store (bound to 127.0.0.1 unless --host says otherwise)."""
    import os
    import subprocess

    from orchestration.ui import exposure_warning, newest_experiment, ui_command, ui_url

    settings = ctx.obj
    if not settings.tracking_uri.startswith("sqlite:"):
        typer.echo(f"the tracking store is a server: open {settings.tracking_uri}")
        return
    warning = exposure_warning(host, port)
    if warning:
        typer.echo(warning, err=True)
    newest = newest_experiment(settings.tracking_uri)
    where = f"{newest[1]}'s runs; all: {ui_url(host, port)}; " if newest else ""
    typer.echo(
        f"MLflow UI: {ui_url(host, port, newest and newest[0])}  "
        f"({where}store {settings.tracking_uri}; Ctrl-C stops)"
    )
    cmd = ui_command(settings, port, host)
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, "MLFLOW_HOST": host}))


app.add_typer(weights_app, name="weights")
app.command()(predict)
app.command()(evaluate)

from orchestration.cli_doctor import doctor  # noqa: E402  (the verb lives in cli_doctor.py)

app.command()(doctor)

if __name__ == "__main__":
    app()
