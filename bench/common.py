"""What the benchmarks share: a prepared synthetic classification set (``python bench/X.py``
puts this folder on ``sys.path``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_pipeline.catalog import Catalog


def prepared_classification(root: Path, patients: int, size: int, shard_size: int = 32) -> Path:
    """Synthesise ``patients`` under ``root``/synth and prepare their lesion crops at ``size``
    px into ``root``/prep (returned), on the project's local cluster (``init_ray``: started
    here when none is up, as Ray Data would otherwise start one with a CPU per core, where a
    trial's driver and Train worker leave Ray Data nothing and the sweep hangs)."""
    from data_pipeline.catalog import build_catalog
    from data_pipeline.convert import prepare
    from data_pipeline.prepare_plan import PrepareConfig
    from data_pipeline.synth import SynthConfig, make_synthetic
    from orchestration.ray_cluster import init_ray

    init_ray()
    data = make_synthetic(root / "synth", SynthConfig(patients=patients, seed=0))
    cfg = PrepareConfig(tasks=("classification",), cls_size=size, shard_size=shard_size)
    prepare(build_catalog(data), root / "prep", cfg, print_fn=lambda *_: None)
    return root / "prep"


def repeated_catalog(catalog: Catalog, times: int) -> Catalog:
    """The same files listed ``times`` over under new keys, lesions and whole images alike (so
    every task's workload grows): a bigger dataset without writing more full-size files."""

    def key(name: str, i: int) -> str:
        return f"{name}-r{i}"

    abns = [
        replace(a, key=key(a.key, i), image_key=key(a.image_key, i))
        for i in range(times)
        for a in catalog.abnormalities
    ]
    images = [
        replace(
            image,
            image_key=key(image.image_key, i),
            abnormality_keys=tuple(key(k, i) for k in image.abnormality_keys),
        )
        for i in range(times)
        for image in catalog.images
    ]
    return replace(catalog, abnormalities=abns, images=images)


def training_parser(doc: str, patients: int, size: int, epochs: int | None = None):
    """An ``argparse`` parser with the options of a bench that trains on a prepared synthetic
    set: ``--patients``, ``--size`` (px), ``--model``, ``--batch-size`` (and ``--epochs``)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--patients", type=int, default=patients)
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--batch-size", type=int, default=16)
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=epochs)
    return parser
