"""What the per-epoch shuffle of the training stream costs, beside the unshuffled stream.

Prepares a synthetic CBIS-DDSM download for classification (crops at ``--size``), then iterates
the training stream as a Train worker does, for a few epochs each way, in one run:
1. shuffled (this project's): shard files in a new order per epoch plus the 64 MiB buffer;
2. unshuffled (before issue 12): shards in catalog order, a buffer of four batches.
Reports the seconds per epoch and to the first batch of each, and ends with one JSON line. A
benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/shuffle_cost.py [--patients 60] [--size 224] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import prepared_classification

from orchestration.ray_cluster import init_ray
from orchestration.train.config import TrainConfig, shard_paths
from orchestration.train.data import _columns, _decode, build_datasets, epoch_batches


def _unshuffled(cfg: TrainConfig):
    """The training stream as it was: catalog order, no file shuffle."""
    from functools import partial

    import ray.data

    from orchestration.train.shard_source import ShardSource

    fn = partial(_decode, task=cfg.task, augment=cfg.augment)
    paths = shard_paths(cfg.data, cfg.task, "train")
    source = ShardSource(paths, _columns(cfg.task), cfg.batch_size)  # no seed: file order
    ds = ray.data.read_datasource(source)
    return ds.map_batches(fn, batch_format="numpy", batch_size=cfg.batch_size)


def _time_epochs(iterate, epochs: int) -> tuple[float, float, int]:
    """Mean seconds per epoch and to the first batch, and rows per epoch."""
    total, first, rows = 0.0, 0.0, 0
    for epoch in range(epochs):
        start, seen = time.perf_counter(), None
        rows = 0
        for batch in iterate(epoch):
            seen = seen or time.perf_counter() - start
            rows += len(batch["label"])
        total += time.perf_counter() - start
        first += seen or 0.0
    return total / epochs, first / epochs, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepared_classification(Path(tmp), args.patients, args.size)
        cfg = TrainConfig(model="mobilenetv2", data=str(prep), batch_size=args.batch_size)
        cfg = replace(cfg.with_manifest(), balance="none")
        shuffled = build_datasets(cfg)["train"].iterator()
        plain = _unshuffled(cfg).iterator()
        ours = _time_epochs(lambda e: epoch_batches(shuffled, cfg, e), args.epochs)
        old = _time_epochs(
            lambda e: plain.iter_batches(
                batch_size=cfg.batch_size,
                batch_format="numpy",
                local_shuffle_buffer_size=4 * cfg.batch_size,
            ),
            args.epochs,
        )
    for name, (epoch, first, rows) in (("shuffled", ours), ("unshuffled", old)):
        print(f"{name:>10}: {epoch:.2f} s/epoch, first batch after {first:.2f} s, {rows} rows")
    result = {
        "rows": ours[2],
        "size": args.size,
        "shuffled_s": round(ours[0], 3),
        "unshuffled_s": round(old[0], 3),
        "ratio": round(ours[0] / old[0], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
