"""The ``mammobench`` command line: argument parsing only; each verb calls into the packages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from orchestration.settings import Settings

app = typer.Typer(
    help="Distributed experiment orchestration on Ray for breast-cancer deep learning on CBIS-DDSM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [default: ...] literally
)


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
    ctx.obj = Settings.resolve(tracking_uri, storage, address)


@app.command()
def catalog(
    data: Annotated[
        Path, typer.Argument(help="CBIS-DDSM download (or `mammobench synth` output).")
    ],
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Folder of the case-description CSVs.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of train patients in val.")] = 0.15,
) -> None:
    """Read the case CSVs, find every DICOM, make patient-level splits and summarise."""
    from data_pipeline.catalog import build_catalog
    from orchestration.report_text import catalog_text

    summary = build_catalog(data, csv, val_fraction=val_fraction, seed=seed).summary()
    typer.echo(json.dumps(summary) if as_json else catalog_text(summary))


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic download to.")],
    patients: Annotated[int, typer.Option(min=2, help="Number of patients.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    size: Annotated[tuple[int, int], typer.Option(help="Full image rows and columns (H W).")] = (
        320,
        192,
    ),
    layout: Annotated[
        str, typer.Option(help="nbia | nbia-no-metadata | csv (folder layout to write).")
    ] = "nbia",
) -> None:
    """Write a small CBIS-DDSM-shaped download (NBIA tree, CSVs, DICOMs) with learnable lesions."""
    from data_pipeline.synth import SynthConfig, make_synthetic

    cfg = SynthConfig(patients=patients, seed=seed, size=tuple(size), layout=layout)
    make_synthetic(out, cfg)
    typer.echo(f"wrote a synthetic CBIS-DDSM download for {patients} patients to {out}")


@app.command()
def prepare(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="CBIS-DDSM download or `mammobench synth` output.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for shards and manifest.json.")],
    task: Annotated[str, typer.Option(help="classification|segmentation|detection|all")] = "all",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel conversion tasks [default: all CPUs].")
    ] = None,
    cls_size: Annotated[int, typer.Option(min=1, help="Classification image side.")] = 224,
    seg_size: Annotated[int, typer.Option(min=1, help="Segmentation crop side.")] = 512,
    det_size: Annotated[int, typer.Option(min=1, help="Detection image long side.")] = 1024,
    lesion_type: Annotated[str, typer.Option(help="mass|calc|all")] = "all",
    cls_input: Annotated[
        str, typer.Option("--input", help="crop (lesion crop) | whole (full image, the seed's).")
    ] = "crop",
    label_map: Annotated[str, typer.Option(help="binary | 3class")] = "binary",
    shard_size: Annotated[int, typer.Option(min=1, help="Rows per Parquet shard.")] = 64,
    max_quarantine: Annotated[
        float,
        typer.Option(min=0, max=1, help="Fail (exit 1) when more than this share is quarantined."),
    ] = 0.05,
    csv: Annotated[Path | None, typer.Option("--csv", help="Folder of the case CSVs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    val_fraction: Annotated[
        float, typer.Option(help="Share of training patients in validation.")
    ] = 0.15,
) -> None:
    """Convert DICOMs into Parquet shards with Ray Data: resumable, nothing lost, no PHI."""
    from data_pipeline.catalog import build_catalog
    from data_pipeline.convert import prepare as run_prepare
    from data_pipeline.prepare_plan import TASKS, PrepareConfig
    from orchestration.ray_cluster import init_ray
    from orchestration.report_text import prepare_text

    tasks = TASKS if task == "all" else (task,)
    with user_errors():  # bad option values, missing DATA or CSVs fail before Ray starts
        cfg = PrepareConfig(
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
        catalog = build_catalog(data, csv, val_fraction=cfg.val_fraction, seed=seed)
    init_ray(ctx.obj.address)
    manifest = run_prepare(catalog, out, cfg, workers=workers, print_fn=typer.echo)
    text, share = prepare_text(manifest, out, tasks)
    typer.echo(text)
    if share > max_quarantine:
        typer.echo(f"quarantined share {share:.1%} exceeds --max-quarantine {max_quarantine:.1%}")
        raise typer.Exit(1)


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Architecture (see `mammobench models`).")],
    data: Annotated[Path, typer.Option(help="Prepared data folder (PREP).")],
    task: Annotated[
        str, typer.Option(help="classification|segmentation|detection")
    ] = "classification",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option(parser=_above_zero, help="Learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    pretrained: Annotated[
        bool, typer.Option("--pretrained/--scratch", help="ImageNet weights or random init.")
    ] = False,
    unfreeze: Annotated[
        str, typer.Option(help="With --pretrained: last N stages, or all.")
    ] = "all",
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers (DDP when > 1).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(min=0)] = 0.0,
    balance: Annotated[str, typer.Option(help="oversample|weighted|none")] = "oversample",
    schedule: Annotated[str, typer.Option(help="cosine|plateau|none")] = "cosine",
    patience: Annotated[int, typer.Option(min=0, help="Early-stopping patience (epochs).")] = 5,
    in_chans: Annotated[int, typer.Option(help="3: repeat grayscale; 1: adapt conv1.")] = 3,
    encoder: Annotated[str | None, typer.Option(help="Segmenter encoder.")] = None,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment")] = True,
    detection_classes: Annotated[
        str, typer.Option(help="Detection: lesion (class-agnostic) or pathology boxes.")
    ] = "lesion",
    max_failures: Annotated[int, typer.Option(min=0, help="Worker failures to retry.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
) -> None:
    """Train one architecture with Ray Train, then evaluate its best checkpoint on test."""
    from orchestration.ray_cluster import init_ray
    from orchestration.report_text import train_text
    from orchestration.train_config import TrainConfig
    from orchestration.train_driver import check_job, run_training

    with user_errors():  # bad values or names, missing data or weights fail before Ray starts
        cfg = TrainConfig(
            model=model,
            data=str(data.resolve()),
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
        )
        check_job(cfg.with_manifest())
    init_ray(ctx.obj.address)
    result = run_training(cfg, ctx.obj.storage)
    typer.echo(train_text(result))
    if as_json:
        typer.echo(json.dumps(result, default=str))


@app.command()
def tune(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="Architecture (see `mammobench models`).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Prepared data folder (PREP).")] = None,
    task: Annotated[
        str, typer.Option(help="classification|segmentation|detection")
    ] = "classification",
    space: Annotated[
        str | None, typer.Option(help="Space name or YAML path [default: the family's].")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Samples per grid point.")] = 2,
    max_epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial (ASHA's max_t).")] = 10,
    scheduler: Annotated[str, typer.Option(help="asha | fifo")] = "asha",
    search: Annotated[str, typer.Option(help="random | optuna")] = "random",
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers per trial.")] = 1,
    gpus_per_trial: Annotated[float, typer.Option(min=0)] = 0.0,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Trials at once [default: what the cluster fits now].")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Fixed batch size when the space has none.")
    ] = None,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    grace_epochs: Annotated[int, typer.Option(min=1, help="ASHA grace period.")] = 1,
    max_failures: Annotated[int, typer.Option(min=0, help="Retries of a failed trial.")] = 1,
    name: Annotated[
        str | None, typer.Option(help="Sweep name [default: tune-MODEL-TASK-<time>].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted sweep.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved space and stop.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
) -> None:
    """Sweep pretrained x unfrozen stages x learning rate with Ray Tune; track it in MLflow."""
    import yaml

    from orchestration.report_text import tune_text
    from orchestration.tune import resolve_space
    from search_spaces import SpaceError, default_space, load_space

    if dry_run:  # needs only --space (or MODEL for its family's space)
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
    from orchestration.tune import SweepConfig, run_sweep

    train = {"batch_size": batch_size} if batch_size else {}
    train |= {"weights_dir": weights_dir} if weights_dir else {}
    with user_errors(SpaceError):
        sweep = SweepConfig(
            model=model,
            data=str(data),
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
            max_failures=max_failures,
            seed=seed,
            train=train,
            max_concurrent=max_concurrent,
        )
        from orchestration.train_driver import check_job

        check_job(sweep.base())
        resolve_space(space, task, model, weights_dir)  # a bad space file fails before Ray starts
    init_ray(ctx.obj.address)
    with user_errors(SpaceError):
        summary = run_sweep(sweep, ctx.obj)
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
        Path | None, typer.Option(help="CBIS-DDSM download, or prepared shards (PREP).")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Synthesise a small dataset and run every architecture tiny.")
    ] = False,
    prep: Annotated[
        Path | None, typer.Option(help="Where to prepare DATA [default: <work dir>/prepared].")
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
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
) -> None:
    """Run the whole study: prepare, one sweep per architecture x setting, leaderboard, report."""
    from models import available_models
    from orchestration.benchmark import BenchmarkJob, run_benchmark
    from orchestration.ray_cluster import init_ray
    from orchestration.report import write_report
    from orchestration.report_text import benchmark_text
    from orchestration.tracking import client_for
    from search_spaces import TASKS, SpaceError
    from search_spaces.benchmarks import load_benchmark

    with user_errors(SpaceError):
        registry = {model: task for task in TASKS for model in available_models(task)}
        bench = load_benchmark(config or ("demo" if demo else "study"), registry)
        if data is None and not bench.synth:
            raise ValueError(f"{bench.path} has no synth section: pass --data")
    init_ray(ctx.obj.address)
    job = BenchmarkJob(bench, data, prep, name, resume, weights_dir)
    with user_errors(SpaceError):
        result = run_benchmark(job, ctx.obj, typer.echo)
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
    from orchestration.report import write_report
    from orchestration.tracking import client_for

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
    from orchestration.report_text import models_text

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

    from orchestration.ui import exposure_warning, ui_command, ui_url

    settings = ctx.obj
    if not settings.tracking_uri.startswith("sqlite:"):
        typer.echo(f"the tracking store is a server: open {settings.tracking_uri}")
        return
    warning = exposure_warning(host, port)
    if warning:
        typer.echo(warning, err=True)
    typer.echo(f"MLflow UI: {ui_url(host, port)}  (store {settings.tracking_uri}; Ctrl-C stops)")
    cmd = ui_command(settings, port, host)
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, "MLFLOW_HOST": host}))


if __name__ == "__main__":
    app()
