"""The training stream: a new order every epoch, classes balanced, detection batches of any shape."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from ray.data import DataContext

from data_pipeline.augment import decode_batch, oversample, study_augmentation
from data_pipeline.dicom import read_image
from data_pipeline.transforms import detection_image, encode_png
from models import ModelSpec, build_model
from orchestration.train.config import TrainConfig, shard_paths
from orchestration.train.data import balancing_copies, build_datasets, epoch_batches
from orchestration.train.shard_source import ShardSource
from orchestration.train.tasks import collate, make_task
from tests.conftest import REFERENCE

# The real training split of CBIS-DDSM's lesions (mass + calc train CSVs, by pathology).
REAL_TRAIN = Counter({0: 1364, 1: 971})


def _epoch_keys(cfg: TrainConfig, shard, epoch: int) -> list[str]:
    return [str(k) for batch in epoch_batches(shard, cfg, epoch) for k in batch["key"]]


def test_every_epoch_reads_the_training_rows_in_a_new_mixed_order(prepared_small: Path) -> None:
    cfg = TrainConfig(
        model="mobilenetv2", data=str(prepared_small), batch_size=1, balance="none", augment=False
    ).with_manifest()
    shard = build_datasets(cfg)["train"].iterator()
    first, second = _epoch_keys(cfg, shard, 0), _epoch_keys(cfg, shard, 1)
    # Batches of one row: the partial last batch that training drops is empty.
    assert sorted(first) == sorted(second) and len(set(first)) == len(first)
    assert first != second and first != sorted(first)  # shards are sorted by key
    quarter = first[: len(first) // 4]
    assert {key.split("-")[0] for key in quarter} == {"Calc", "Mass"}, quarter


def test_shards_are_planned_from_their_footers_and_read_in_a_new_order_each_run(
    prepared_small: Path,
) -> None:
    paths = shard_paths(prepared_small, "classification", "train")
    assert len(paths) >= 3
    source = ShardSource(paths, ["key", "label"], rows_per_block=5, seed=3)
    context = copy.copy(DataContext.get_current())
    orders = []
    for execution in range(4):
        context._execution_idx = execution  # Ray Data counts a dataset's runs there
        tasks = source.get_read_tasks(1, data_context=context)
        orders.append([t.metadata.input_files[0] for t in tasks])
        assert sorted(orders[-1]) == sorted(paths)  # every file once
    assert len({tuple(o) for o in orders}) > 1  # a new order between runs, seeded
    again = ShardSource(paths, ["key", "label"], rows_per_block=5, seed=3)
    context._execution_idx = 3
    assert [t.metadata.input_files[0] for t in again.get_read_tasks(1, data_context=context)] == (
        orders[3]
    )
    unseeded = ShardSource(paths, ["key"], rows_per_block=5).get_read_tasks(1)
    assert [t.metadata.input_files[0] for t in unseeded] == paths  # the manifest's order
    for task in tasks:  # each task yields its file's rows, in blocks of at most 5
        (path,) = task.metadata.input_files
        blocks = list(task())
        keys = [k for block in blocks for k in block.column("key").to_pylist()]
        assert keys == pq.read_table(path, columns=["key"]).column("key").to_pylist()
        assert task.metadata.num_rows == len(keys) and max(len(b) for b in blocks) <= 5
        assert task.metadata.size_bytes > 0


def test_oversampling_balances_the_real_training_split_in_expectation() -> None:
    copies = balancing_copies(REAL_TRAIN)
    labels = np.repeat([0, 1], [REAL_TRAIN[0], REAL_TRAIN[1]])
    batch = {"label": labels, "row": np.arange(len(labels))}
    rng = np.random.default_rng(0)
    epochs = [Counter(oversample(batch, copies, rng)["label"].tolist()) for _ in range(20)]
    assert all(epoch[0] == REAL_TRAIN[0] for epoch in epochs)  # the majority is listed once
    malignant = np.array([epoch[1] for epoch in epochs])
    assert abs(malignant.mean() - REAL_TRAIN[0]) < 0.01 * REAL_TRAIN[0], malignant
    assert len(set(malignant.tolist())) > 1  # drawn anew every epoch


def _real_detection_rows(count: int) -> dict[str, np.ndarray]:
    """Real mammograms of different shapes, prepared as detection rows with one box each."""
    images, boxes = [], []
    for path in sorted((REFERENCE / "dicom" / "downsampled4x").glob("*.dcm"))[:count]:
        pixels = read_image(path)
        mask = np.zeros(pixels.shape, np.uint8)
        h, w = pixels.shape
        mask[h // 3 : h // 3 + h // 8, w // 4 : w // 4 + w // 8] = 255
        image, box = detection_image(pixels, [mask], long_side=128)
        images.append(encode_png(image))
        boxes.append(box)
    rows = {"image": np.array(images, dtype=object), "label": np.zeros(count, np.int64)}
    rows["boxes"] = np.empty(count, dtype=object)
    rows["boxes"][:] = [list(b) for b in boxes]
    rows["box_labels"] = np.empty(count, dtype=object)
    rows["box_labels"][:] = [[0] for _ in boxes]
    rows["patient_id"] = np.array([f"P_{i}" for i in range(count)], dtype=object)
    return rows


def test_a_detection_batch_holds_real_mammograms_of_different_shapes() -> None:
    rows = _real_detection_rows(3)
    decoded = decode_batch(rows, "detection", study_augmentation("detection"))
    shapes = {image.shape for image in decoded["image"]}
    assert len(shapes) == 3, shapes  # real aspect ratios differ: never stacked
    batch = collate({**decoded, "patient_id": rows["patient_id"]})
    assert [tuple(i.shape) for i in batch["image"]] == [i.shape for i in decoded["image"]]
    model = build_model(ModelSpec("fasterrcnn_mobilenet", input_size=128))
    task = make_task("detection", 3)
    model.train()
    loss = task.loss(model, batch)
    assert torch.isfinite(loss) and loss.requires_grad
    out = task.predict(model.eval(), batch)
    assert len(out["preds"]) == 3 and len(out["targets"]) == 3
