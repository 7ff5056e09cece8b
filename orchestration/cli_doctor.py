"""``mammobench doctor``: the pre-flight checks of a cluster launch, one line each."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Annotated

import typer

from orchestration.doctor import DoctorJob

CONFIG = DoctorJob.config  # the default lives in the dataclass; the help only shows it


def doctor(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster (GCS host:6379) [default: the global --address, local]."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Results dir or bucket URI to probe [default: the global --storage]."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI to probe [default: the global --tracking-uri]."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="CBIS-DDSM download, or prepared shards (PREP): a folder or URI."),
    ] = None,
    weights_dir: Annotated[
        str | None, typer.Option(envvar="MAMMOBENCH_WEIGHTS_DIR", help="Local weights folder.")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(help=f"Benchmark whose rows are checked (name or YAML) [default: {CONFIG}]."),
    ] = None,
    prep: Annotated[
        str | None,
        typer.Option(
            help="Where the benchmark prepares DATA, folder or URI [default: <work dir>/prepared]."
        ),
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="Also an AMP step of each architecture on a GPU worker.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
) -> None:
    """Check the cluster, storage, tracking server, data and weights a benchmark needs, from a
    worker node: one PASS / WARN / FAIL line each with its fix; exit 1 on any FAIL."""
    from orchestration.cli import given, user_errors
    from orchestration.doctor import run_doctor
    from search_spaces import SpaceError

    settings = dataclasses.replace(
        ctx.obj, **given(address=address, storage=storage, tracking_uri=tracking_uri)
    )
    options = given(config=config, data=data, weights_dir=weights_dir, prep=prep)
    job = DoctorJob(settings, gpu=gpu, **options)
    with user_errors(SpaceError):  # an unknown config fails before anything is checked
        checks = run_doctor(job, typer.echo)
    counts = Counter(check.status for check in checks)
    typer.echo(", ".join(f"{counts[s]} {s}" for s in ("PASS", "WARN", "FAIL")))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(check) for check in checks]))
    if counts["FAIL"]:
        raise typer.Exit(1)
