"""Log a trained network as an MLflow pyfunc model from code: its weights as safetensors, its
``spec.json`` (architecture, preprocessing, labels, validation threshold), the code of
``models`` and ``data_pipeline``, a signature and an input example. Nothing is pickled."""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array
from safetensors.torch import save_model
from torch import nn

from data_pipeline.prepare_plan import LABEL_MAPS
from data_pipeline.transforms import encode_png
from orchestration.serving import pyfunc_model
from orchestration.train.config import TrainConfig, read_manifest

REPO = Path(__file__).resolve().parents[2]
CODE = [REPO / "models", REPO / "data_pipeline"]  # what pyfunc_model.py imports
REQUIREMENTS = (
    "torch",
    "torchvision",
    "timm",
    "segmentation-models-pytorch",
    "safetensors",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "opencv-python-headless",
    "numpy",
    "pandas",
    "mlflow",
)
SPEC_FORMAT = 1


def class_names(cfg: TrainConfig) -> list[str]:
    """The model's output names in index order (detectors: their foreground classes)."""
    if cfg.lesion_detector:
        return ["LESION"]
    label_map = read_manifest(cfg.data, cfg.task)["config"]["label_map"]
    names: dict[int, str] = {}
    for name, index in LABEL_MAPS[label_map].items():
        names.setdefault(index, name)  # binary: BENIGN_WITHOUT_CALLBACK counts as BENIGN
    return [names[i] for i in sorted(names)]


def model_document(cfg: TrainConfig, threshold: float | None) -> dict[str, Any]:
    """``spec.json``: everything the model's code needs besides its weights."""
    manifest = read_manifest(cfg.data, cfg.task)
    prepared = manifest["config"]
    spec = replace(cfg.model_spec(), pretrained=False, weights_dir=None).to_dict()
    whole = cfg.task == "detection" or prepared.get("cls_input") == "whole"
    return {
        "format": SPEC_FORMAT,
        "task": cfg.task,
        "model": spec,
        "preprocess": {
            "size": cfg.image_size,
            "clip_limit": prepared["clahe_clip"],
            "input": "whole mammogram" if whole else "lesion region (a crop around the lesion)",
            "resize": "long side" if cfg.task == "detection" else "square",
        },
        "labels": class_names(cfg),
        "threshold": threshold if cfg.task == "classification" else None,
        "threshold_rule": cfg.threshold_rule,
        "data_fingerprint": manifest.get("fingerprint"),
        "train_config": cfg.to_dict(),
    }


def signature(task: str, labels: list[str]) -> ModelSignature:
    """Input: one file's bytes per row; output: the task's columns."""
    outputs = {
        "classification": [ColSpec(DataType.double, f"prob_{n.lower()}") for n in labels]
        + [
            ColSpec(DataType.double, "malignant_probability"),
            ColSpec(DataType.double, "threshold"),
            ColSpec(DataType.string, "label"),
        ],
        "segmentation": [
            ColSpec(DataType.double, "lesion_fraction"),
            ColSpec(DataType.binary, "mask_png"),
        ],
        "detection": [
            ColSpec(Array(Array(DataType.double)), "boxes"),
            ColSpec(Array(DataType.double), "scores"),
            ColSpec(Array(DataType.string), "labels"),
        ],
    }[task]
    return ModelSignature(Schema([ColSpec(DataType.binary, "image")]), Schema(outputs))


def input_example(size: int) -> pd.DataFrame:
    """A grey PNG with a bright blob: what a caller passes (a file's bytes)."""
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size * size / 16))
    return pd.DataFrame({"image": [encode_png((60 + 150 * blob).astype(np.uint8))]})


def log_pyfunc(
    model: nn.Module,
    cfg: TrainConfig,
    threshold: float | None,
    registered_model_name: str | None = None,
) -> Any:
    """Log ``model`` on the active run as ``best_model`` (and register it); MLflow's ModelInfo."""
    document = model_document(cfg, threshold)
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, weights_path = Path(tmp) / "spec.json", Path(tmp) / "model.safetensors"
        spec_path.write_text(json.dumps(document, indent=2))
        save_model(model.cpu(), str(weights_path))
        return mlflow.pyfunc.log_model(
            name="best_model",
            python_model=pyfunc_model.__file__,
            artifacts={pyfunc_model.SPEC: str(spec_path), pyfunc_model.WEIGHTS: str(weights_path)},
            code_paths=[str(p) for p in CODE],
            signature=signature(cfg.task, document["labels"]),
            input_example=input_example(min(cfg.image_size, 64)),
            pip_requirements=[f"{p}=={importlib.metadata.version(p)}" for p in REQUIREMENTS],
            registered_model_name=registered_model_name,
        )
