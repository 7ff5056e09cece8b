"""``mammobench predict`` and ``mammobench evaluate``: a registered model on new cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ModelUri = Annotated[
    str,
    typer.Argument(
        help="models:/mammobench-<model>-<task>/<version>, runs:/<id>/best_model or a path."
    ),
]


def predict(
    ctx: typer.Context,
    model_uri: ModelUri,
    files: Annotated[list[Path], typer.Argument(help="DICOM or image files (PNG, JPEG, TIFF).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for segmentation masks [default: inline base64].")
    ] = None,
) -> None:
    """Run a registered model on files: one JSON line per file (class probabilities and the
    label at the model's validation threshold, a mask, or boxes). A file it cannot read gets
    a line with its error, and the exit code is 1."""
    from data_pipeline.inference import InputError
    from orchestration.cli import user_errors
    from orchestration.serving.evaluate import load, predict_file

    with user_errors():
        model = load(model_uri, ctx.obj)
    failed = 0
    for path in files:
        try:
            line = predict_file(model, path, out)
        except (OSError, InputError) as exc:
            failed += 1
            line = {"file": str(path), "error": str(exc)}
        typer.echo(json.dumps(line))
    raise typer.Exit(1 if failed else 0)


def evaluate(
    ctx: typer.Context,
    model_uri: ModelUri,
    data: Annotated[str, typer.Option(help="Prepared data, folder or URI (`mammobench prepare`).")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples for the CIs [default: the model's].")
    ] = None,
) -> None:
    """External validation: the model on other prepared data at its stored threshold, with the
    leaderboard's metrics and CIs; logged to the `external-validation` experiment."""
    from orchestration.cli import user_errors
    from orchestration.results.report_text import evaluation_text
    from orchestration.serving.evaluate import evaluate as run

    with user_errors():
        result = run(model_uri, data, ctx.obj, split, bootstrap)
    typer.echo(evaluation_text(result))
    typer.echo(json.dumps(result, default=float))
