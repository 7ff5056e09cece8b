"""Training overhead: the same model, data, batch size, augmentation and torch threads trained by
(a) a plain PyTorch loop over in-memory tensors and (b) the project's Train job (Ray Train, one
worker, Ray Data ingestion with augmentation), side by side in one run.

(a) decodes the training split once into memory, then every epoch draws a random order and applies
the study's augmentation per image in the loop; (b) streams and augments through Ray Data as
``mammobench train`` does. Both step through ``orchestration.train.steps.train_step``. Reported:
steady-state training images/s of each (median over the epochs after the first) and ``ratio`` =
(b) / (a). Class balancing is off in both (it changes the rows per epoch). A benchmark, not a test.

    .venv/bin/python bench/train_overhead.py [--patients 60] [--size 64] [--epochs 4]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import prepared_classification, training_parser


def plain(cfg, epochs: int, threads: int) -> list[float]:
    """Images/s of each epoch of a bare loop over decoded, in-memory rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_pipeline.augment import decode_batch, study_augmentation
    from models import build_model
    from orchestration.train.config import shard_paths
    from orchestration.train.steps import make_optimizer, train_step
    from orchestration.train.tasks import collate, make_task

    torch.set_num_threads(threads)
    columns = ["image", "label", "patient_id"]
    table = pa.concat_tables(
        [pq.read_table(p, columns=columns) for p in shard_paths(cfg.data, cfg.task, "train")]
    )
    rows = {name: table.column(name).to_numpy(zero_copy_only=False) for name in columns}
    decoded = decode_batch(rows, cfg.task)  # once: (N, 1, H, W) uint8 in memory
    images, labels = decoded["image"], np.asarray(rows["label"])
    augment = study_augmentation(cfg.task) if cfg.augment else None
    model = build_model(cfg.model_spec())
    optimizer, task = make_optimizer(cfg, model), make_task(cfg.task, cfg.in_chans)
    model.train()
    rates, rng = [], np.random.default_rng(cfg.seed)
    for _ in range(epochs):
        order, start, seen = rng.permutation(len(labels)), time.perf_counter(), 0
        for first in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):  # drop_last
            pick = order[first : first + cfg.batch_size]
            batch = {"image": _augmented(images[pick], augment), "label": labels[pick]}
            batch["patient_id"] = rows["patient_id"][pick]
            train_step(task, model, optimizer, collate(batch))
            seen += len(pick)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def _augmented(images: np.ndarray, augment) -> np.ndarray:
    if augment is None:
        return images
    return np.stack([augment(image=image[0])["image"][None] for image in images])


def through_train(cfg, storage: str) -> list[dict]:
    """Every epoch's metrics of the Train job (``train_images_per_s``, ``epoch_first_batch_s``)."""
    from orchestration.train.driver import trainer_for
    from orchestration.train.report_log import ReportLog, read_report_log

    log = Path(storage) / "overhead.jsonl"
    trainer_for(cfg, storage, "overhead", [ReportLog(log)]).fit()
    return read_report_log(log)


def main() -> None:
    parser = training_parser(__doc__, patients=60, size=64, epochs=4)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    args = parser.parse_args()

    from orchestration.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepared_classification(root, args.patients, args.size, shard_size=32)
        cfg = TrainConfig(
            model=args.model,
            data=str(data),
            epochs=args.epochs,
            batch_size=args.batch_size,
            cpus_per_worker=args.cpus_per_worker,
            patience=args.epochs,
        )
        cfg = replace(cfg.with_manifest(), balance="none")
        records = through_train(cfg, str(root / "storage"))
        ours = [r["train_images_per_s"] for r in records]
        bare = plain(cfg, args.epochs, args.cpus_per_worker)
    steady = {"plain": _steady(bare), "train": _steady(ours)}
    for name, rates in (("plain", bare), ("train", ours)):
        print(f"{name:>6}: " + ", ".join(f"{r:.1f}" for r in rates) + " images/s per epoch")
    result = {
        "model": args.model,
        "size": args.size,
        "batch_size": args.batch_size,
        "torch_threads": args.cpus_per_worker,
        "plain_images_per_s": round(steady["plain"], 2),
        "train_images_per_s": round(steady["train"], 2),
        "train_epoch_first_batch_s": round(_steady([r["epoch_first_batch_s"] for r in records]), 3),
        "ratio": round(steady["train"] / steady["plain"], 3),
    }
    print(json.dumps(result))


def _steady(rates: list[float]) -> float:
    """The median over the epochs after the first (warm caches, planned pipeline)."""
    return statistics.median(rates[1:] or rates)


if __name__ == "__main__":
    main()
