"""Prepared synthetic data for the training tests (all three tasks, tiny sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.catalog import build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.synth import SynthConfig, make_synthetic

TINY = {"cls_size": 32, "seg_size": 32, "det_size": 64, "shard_size": 16}


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    """40 synthetic patients prepared for every task: enough lesions for a held-out AUC."""
    data = make_synthetic(tmp_path_factory.mktemp("synth40"), SynthConfig(patients=40, seed=5))
    out = tmp_path_factory.mktemp("prep40")
    prepare(build_catalog(data), out, PrepareConfig(**TINY), print_fn=lambda *_: None)
    return out
