"""What the benchmarks share: a prepared synthetic classification set (``python bench/X.py``
puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path


def prepared_classification(root: Path, patients: int, size: int, shard_size: int = 32) -> Path:
    """Synthesise ``patients`` under ``root``/synth and prepare their lesion crops at ``size``
    px into ``root``/prep (returned)."""
    from data_pipeline.catalog import build_catalog
    from data_pipeline.convert import prepare
    from data_pipeline.prepare_plan import PrepareConfig
    from data_pipeline.synth import SynthConfig, make_synthetic

    data = make_synthetic(root / "synth", SynthConfig(patients=patients, seed=0))
    cfg = PrepareConfig(tasks=("classification",), cls_size=size, shard_size=shard_size)
    prepare(build_catalog(data), root / "prep", cfg, print_fn=lambda *_: None)
    return root / "prep"
