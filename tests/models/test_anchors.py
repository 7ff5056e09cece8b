"""Detector anchors derived from the prepared lesion boxes, not torchvision's 32-512 px."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.convert import box_statistics
from models import ModelSpec, build_model
from models.detectors import anchors_from_boxes


def _results(sizes: list[list[float]], split: str = "train") -> list[dict]:
    return [{"split": split, "box_sizes": sizes}]


def test_box_statistics_are_percentiles_of_the_training_boxes_only() -> None:
    # Sides (sqrt of the area): 10, 20, 30, 40, 50; aspects (h / w): 1, 2, 1, 0.5, 1.
    sizes = [[10, 10], [10 * 2**0.5, 20 * 2**0.5], [30, 30], [40 * 2**0.5, 20 * 2**0.5], [50, 50]]
    stats = box_statistics(_results(sizes) + _results([[500, 500]], split="test"))
    assert stats["count"] == 5
    assert stats["side"]["p50"] == pytest.approx(30) and stats["side"]["p25"] == pytest.approx(20)
    assert stats["side"]["p5"] == pytest.approx(12) and stats["side"]["p95"] == pytest.approx(48)
    assert stats["aspect"]["p50"] == pytest.approx(1) and stats["aspect"]["p5"] == pytest.approx(
        0.6
    )
    assert box_statistics(_results([])) == {"count": 0}


def test_anchors_span_the_lesions_geometrically() -> None:
    stats = {
        "count": 9,
        "side": {"p5": 10.0, "p95": 40.0},
        "aspect": {"p5": 0.5, "p50": 1.0, "p95": 1.5},
    }
    sizes, aspects = anchors_from_boxes(stats)
    # From 0.8 x 10 to 1.25 x 40 in four equal ratios of (50 / 8) ** (1 / 4) = 1.581.
    assert sizes == (8.0, 12.6, 20.0, 31.6, 50.0)
    assert aspects == (0.5, 1.0, 1.5)
    assert anchors_from_boxes({"count": 0}) is None


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet", "fasterrcnn"])
def test_the_detector_uses_the_derived_anchors(name: str) -> None:
    sizes, aspects = (8.0, 12.0, 18.0, 27.0, 40.0), (0.8, 1.0, 1.25)
    spec = ModelSpec(name, num_classes=1, input_size=64, anchor_sizes=sizes, anchor_aspects=aspects)
    model = build_model(spec)
    generator = model.rpn.anchor_generator
    assert {round(s) for level in generator.sizes for s in level} <= {8, 12, 18, 27, 40}
    assert min(min(level) for level in generator.sizes) == 8.0
    assert max(max(level) for level in generator.sizes) == 40.0
    assert all(tuple(r) == aspects for r in generator.aspect_ratios)
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 40)])  # a portrait mammogram of the prepared size
    assert out["boxes"].shape[1] == 4
    assert model.roi_heads.box_predictor.cls_score.out_features == 2  # lesion + background
