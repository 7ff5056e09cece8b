"""data_pipeline/ sits at the bottom of the import graph: Ray Data workers load it to decode and
convert DICOMs, so it imports no training, tracking or model code (and no torch)."""

from __future__ import annotations

import ast
from pathlib import Path

import data_pipeline
from tests.imports import violations

PACKAGE = Path(data_pipeline.__file__).parent


def test_package_never_imports_training_tracking_or_models() -> None:
    forbidden = (
        "mlflow",
        "ray.tune",
        "ray.train",
        "torch",
        "models",
        "search_spaces",
        "orchestration",
    )
    assert violations(PACKAGE, forbidden) == []


def test_the_vocabulary_module_imports_nothing() -> None:
    """``models`` and ``search_spaces`` import ``data_pipeline`` for its names: that must not
    pull in pydicom, OpenCV or Ray."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert set(data_pipeline.TASKS) == {"classification", "segmentation", "detection"}
