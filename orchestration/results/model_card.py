"""A registered model version's card: what it was trained on, how it was chosen and tested,
what it scored, and what it is for (MLflow shows it as the version's ``model_card`` tag)."""

from __future__ import annotations

from typing import Any

from orchestration.train.config import TrainConfig, read_manifest


def model_card(cfg: TrainConfig, test: dict[str, Any]) -> str:
    """A registered version's short card: data, protocol, figures, intended use, licences."""
    manifest = read_manifest(cfg.data, cfg.task)
    prepared = manifest.get("config", {})
    start = "random initialisation"
    if cfg.pretrained:
        start = "ImageNet weights (check that checkpoint's licence: ImageNet's terms restrict"
        start += " commercial use)"
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
