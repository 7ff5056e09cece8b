"""Run figures from the records a trial's checkpoint holds (as the Train worker writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestration.results.plots import validation_figures


def _record(task: str) -> dict:
    rng = np.random.default_rng(0)
    if task == "classification":
        probs = torch.softmax(torch.from_numpy(rng.normal(size=(20, 2))), 1)
        labels = torch.tensor([0, 1] * 10)
        patients = [f"P_{i}" for i in range(20)]
        return {"outputs": {"probs": probs, "label": labels, "patient_id": patients}, "preview": {}}
    images = torch.from_numpy(rng.integers(0, 255, (3, 32, 32), dtype=np.uint8))
    if task == "segmentation":
        masks = torch.zeros(3, 32, 32, dtype=torch.uint8)
        masks[:, 8:20, 8:20] = 255
        return {"outputs": {}, "preview": {"image": images, "mask": masks, "pred": masks.flip(1)}}
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 20.0]]) for _ in range(3)]
    scores = [torch.tensor([0.9])] * 3
    preview = {"image": images, "boxes": boxes, "pred_boxes": boxes, "pred_scores": scores}
    return {"outputs": {}, "preview": preview}


@pytest.mark.parametrize(
    ("task", "names"),
    [
        ("classification", ["confusion_matrix.png", "roc_curve.png"]),
        ("segmentation", ["mask_overlays.png"]),
        ("detection", ["detections.png"]),
    ],
)
def test_each_task_gets_its_figures(task: str, names: list[str], tmp_path: Path) -> None:
    figures = list(validation_figures(task, _record(task)))
    assert [name for name, _ in figures] == names
    for name, figure in figures:
        figure.savefig(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 5_000  # a rendered image, not an empty canvas


def test_no_predictions_no_figures() -> None:
    assert list(validation_figures("segmentation", {})) == []
