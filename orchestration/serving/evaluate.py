"""``mammobench predict`` and ``evaluate``: a registered model on new files, and on other
prepared data (external validation at the threshold stored with the model)."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from data_pipeline.storage import location_text
from orchestration.results.tracking import (
    FINGERPRINT_TAG,
    client_for,
    experiment_id,
    scalar_metrics,
)
from orchestration.settings import Settings
from orchestration.train.config import TrainConfig, read_manifest

EVALUATION_EXPERIMENT = "external-validation"


def load(model_uri: str, settings: Settings) -> Any:
    """The pyfunc model at ``model_uri`` (``models:/NAME/VERSION``, ``runs:/...``, a path)."""
    mlflow.set_tracking_uri(settings.tracking_uri)  # the registry too, unless one is configured
    return mlflow.pyfunc.load_model(model_uri)


def predict_file(model: Any, path: Path, out: Path | None = None) -> dict[str, Any]:
    """One file's JSON-ready result; a mask written to ``out`` as a PNG (else inline base64)."""
    row = model.predict(pd.DataFrame({"image": [path.read_bytes()]})).iloc[0].to_dict()
    return {"file": str(path), **_json_ready(row, path, out)}


def _json_ready(row: dict[str, Any], path: Path, out: Path | None) -> dict[str, Any]:
    png = row.pop("mask_png", None)
    if png is None:
        return row
    if out is None:
        return row | {"mask_png_base64": base64.b64encode(png).decode()}
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{path.stem}_mask.png"
    target.write_bytes(png)
    return row | {"mask": str(target)}


def external_config(spec: dict[str, Any], data: str, bootstrap: int | None) -> TrainConfig:
    """The model's training config pointed at ``data``, checked to make the model's input."""
    cfg = TrainConfig.from_dict(spec["train_config"])
    cfg = replace(cfg, data=location_text(data), pretrained=False, weights_dir=None)
    cfg = cfg.with_manifest()
    size = spec["preprocess"]["size"]
    classes = cfg.num_classes != spec["model"]["num_classes"] and not cfg.lesion_detector
    if cfg.image_size != size or classes:
        raise ValueError(
            f"{data}: prepared at {cfg.image_size} px with {cfg.num_classes} classes; the model "
            f"takes {size} px and {spec['model']['num_classes']} classes: prepare it with the "
            f"model's settings (train_config in its spec.json)"
        )
    return cfg if bootstrap is None else replace(cfg, bootstrap=bootstrap)


def evaluate(
    model_uri: str,
    data: str | Path,
    settings: Settings,
    split: str = "test",
    bootstrap: int | None = None,
) -> dict[str, Any]:
    """The model's metrics with CIs on ``split`` of ``data`` at its stored threshold, logged as
    a run of the ``external-validation`` experiment."""
    from orchestration.train.driver import score_model

    wrapped = load(model_uri, settings).unwrap_python_model()
    cfg = external_config(wrapped.spec, data, bootstrap)
    result = score_model(cfg, wrapped.net, split, wrapped.spec.get("threshold"))
    result.pop("predictions", None)
    if not result["n"]:
        raise ValueError(f"{data}: its {split} split has no {cfg.task} rows")
    result["run_id"] = _log(settings, model_uri, cfg, split, result)
    return {"model_uri": model_uri, "data": str(data), "split": split, **result}


def _log(
    settings: Settings, model_uri: str, cfg: TrainConfig, split: str, result: dict[str, Any]
) -> str:
    client = client_for(settings.tracking_uri)
    exp = experiment_id(client, EVALUATION_EXPERIMENT, settings.artifact_root)
    fingerprint = read_manifest(cfg.data, cfg.task).get("fingerprint")
    run = client.create_run(
        exp,
        run_name=f"{model_uri.removeprefix('models:/')} on {cfg.data.rsplit('/', 1)[-1]}",
        tags={"mammobench.model_uri": model_uri, FINGERPRINT_TAG: fingerprint},
    )
    client.log_param(run.info.run_id, "data", cfg.data)
    client.log_param(run.info.run_id, "split", split)
    for key, value in scalar_metrics(result, f"{split}_").items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return run.info.run_id
