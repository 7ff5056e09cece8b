"""Weights files and checkpoints are read weights-only: a crafted pickle runs nothing.

Each test writes a real ``torch.save`` file whose unpickling would run a shell command (touch a
marker file), loads it through the product's own loading path and checks that the load is
refused and the marker never appears. The control test shows the same file does run its payload
under a plain ``torch.load``, so a loader that lost ``weights_only=True`` would fail here.
"""

from __future__ import annotations

import ast
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from models import ModelSpec, build_model
from models.registry import REGISTRY
from orchestration.train.config import TrainConfig
from orchestration.train.driver import evaluate_local, read_checkpoint
from orchestration.train.worker import BEST_FILE, STATE_FILE

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("orchestration", "models", "data_pipeline")
# One registry entry per task, each loading its weights file through its own builder.
WEIGHTS_SPECS = {
    "mobilenetv2": {"input_size": 32},
    "unet": {"input_size": 64, "encoder": "resnet18"},
    "fasterrcnn_mobilenet": {"input_size": 64},
}


class Payload:
    """Unpickles by running ``touch marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_crafted(path: Path, state: dict) -> Path:
    """Saves ``state`` plus a payload entry to ``path``; returns the payload's marker file."""
    marker = path.parent / f"{path.name}.pwned"
    torch.save({**state, "payload": Payload(marker)}, path)
    return marker


def test_the_crafted_file_runs_its_payload_under_a_plain_load(tmp_path: Path) -> None:
    marker = write_crafted(tmp_path / "evil.pt", {"epoch": 1})
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", WEIGHTS_SPECS)
def test_a_crafted_weights_file_is_refused(name: str, tmp_path: Path) -> None:
    spec = ModelSpec(name=name, pretrained=True, weights_dir=str(tmp_path), **WEIGHTS_SPECS[name])
    path = tmp_path / f"{REGISTRY[name].weights_source(spec).stem}.pth"
    marker = write_crafted(path, {"conv_stem.weight": torch.zeros(1)})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        build_model(spec)
    assert not marker.exists()


def test_a_crafted_loop_state_is_refused(tmp_path: Path) -> None:
    marker = write_crafted(tmp_path / STATE_FILE, {"epoch": 3, "best": 0.5})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_checkpoint(str(tmp_path))
    assert not marker.exists()


def test_a_crafted_best_model_is_refused(tmp_path: Path) -> None:
    marker = write_crafted(tmp_path / BEST_FILE, {"head.weight": torch.zeros(1)})
    cfg = TrainConfig(model="mobilenetv2", data=str(tmp_path), image_size=32, num_classes=2)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        evaluate_local(cfg, str(tmp_path))
    assert not marker.exists()


def torch_loads(path: Path) -> dict[str, bool]:
    """``file:line`` of each ``torch.load(...)`` call in ``path`` -> whether it is weights-only."""
    calls = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            calls[f"{path.relative_to(REPO)}:{node.lineno}"] = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
    return calls


def test_every_torch_load_in_the_product_is_weights_only() -> None:
    calls = {}
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            calls |= torch_loads(path)
    assert [where for where, safe in calls.items() if not safe] == []
    assert len(calls) >= 6  # the scan saw the loaders: weights, loop states, best models
