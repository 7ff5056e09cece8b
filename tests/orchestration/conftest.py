"""Prepared synthetic data for the training tests (tiny sizes)."""

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
    """40 synthetic patients prepared for every task (12 validation rows per task)."""
    return _prepared(tmp_path_factory, patients=40)


@pytest.fixture(scope="session")
def prepared_cls(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    """60 patients for classification, about a third of the training patients held out: the best
    epoch is chosen on ~46 validation rows. On 12 rows (4 malignant) an epoch that had learnt
    nothing won by a lucky validation AUC in 2 of 4 local runs."""
    return _prepared(tmp_path_factory, patients=60, tasks=("classification",), val_fraction=0.35)


def _prepared(factory: pytest.TempPathFactory, patients: int, **options) -> Path:
    data = make_synthetic(factory.mktemp("synth"), SynthConfig(patients=patients, seed=5))
    cfg, out = PrepareConfig(**TINY, **options), factory.mktemp("prep")
    prepare(build_catalog(data, val_fraction=cfg.val_fraction), out, cfg, print_fn=lambda *_: None)
    return out
