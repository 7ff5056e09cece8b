"""The detectors learn on prepared detection shards: each one's loss falls over a few steps on
the same synthetic mammograms, built as training builds it (size, classes, anchors from the
manifest), the study's GPU detector (ResNet-50 FPN) at a tiny size included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data_pipeline.augment import decode_batch
from models import build_model
from orchestration.train.config import TrainConfig, shard_paths
from orchestration.train.tasks import collate, make_task

STEPS = 8


def _batch(prepared: Path, rows: int = 4) -> dict:
    """The first training images that hold lesions, decoded and collated as training does."""
    table = pq.read_table(shard_paths(prepared, "detection", "train")[0])
    data = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    keep = [i for i, boxes in enumerate(data["boxes"]) if len(boxes)][:rows]
    picked = {name: values[keep] for name, values in data.items()}
    decoded = decode_batch(picked, "detection")
    return collate({**decoded, "patient_id": picked["patient_id"]})


@pytest.mark.parametrize("name", ["fasterrcnn", "fasterrcnn_efficientnet_lite0"])
def test_the_detection_loss_falls_on_prepared_mammograms(name: str, prepared_small: Path) -> None:
    cfg = TrainConfig(model=name, data=str(prepared_small), task="detection").with_manifest()
    assert cfg.anchor_sizes, "anchors come from the training boxes"
    torch.manual_seed(0)
    model = build_model(cfg.model_spec()).train()
    task = make_task("detection", cfg.in_chans)
    batch = _batch(prepared_small)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-2:]) / 2 < 0.7 * losses[0], losses
