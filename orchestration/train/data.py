"""Ray Data ingestion of the prepared shards: shuffle, decode, augment (train only), balance classes.

Training reads only what ``prepare`` wrote. The training stream is re-executed every epoch, so the
augmentation draws differ each epoch; the minority class is oversampled by listing its rows again
*before* augmentation, never by copying augmented images, and only in the training split.

Shards are sorted by split and catalog key (all Calc crops, then all Mass crops, in patient order),
so the training stream is shuffled twice per epoch, both streaming: the shard files are read in a
new random order every execution (``ShardSource``, seeded by (seed, execution)), and
each worker draws its batches from a shuffle buffer of ``SHUFFLE_BUFFER_BYTES`` of decoded rows,
seeded by (seed, epoch, rank). Neither needs a barrier or a second copy of the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_pipeline.augment import decode_batch, oversample, study_augmentation
from data_pipeline.ray_data import data_context
from data_pipeline.storage import open_file
from orchestration.train.config import TrainConfig, shard_paths

SHUFFLE_BUFFER_BYTES = 64 * 2**20  # decoded pixels held per worker for the local shuffle


def _decode(
    batch: dict[str, np.ndarray], task: str, augment: bool, copies: dict[int, float] | None = None
) -> dict[str, Any]:
    if copies:
        batch = oversample(batch, copies)
    out = decode_batch(batch, task, study_augmentation(task) if augment else None)
    for name in ("patient_id", "key"):
        out[name] = np.asarray(batch[name], dtype=object)
    out.pop("row")
    if task == "detection":  # ragged rows travel flat; collate reshapes them
        out["boxes"] = _objects([b.reshape(-1) for b in out["boxes"]])
        out["box_labels"] = _objects(out["box_labels"])
    return out


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of (ragged) arrays."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr


def _columns(task: str) -> list[str]:
    extra = {"segmentation": ["mask"], "detection": ["boxes", "box_labels"]}.get(task, [])
    return ["image", "label", "patient_id", "key", *extra]


def label_counts(cfg: TrainConfig, split: str = "train") -> Counter:
    """Rows per label in a split, read from the shards' label column only."""
    counts: Counter = Counter()
    for path in shard_paths(cfg.data, cfg.task, split):
        with open_file(path) as handle:
            labels = pq.read_table(handle, columns=["label"]).column("label")
        counts.update(labels.to_pylist())
    return counts


def build_datasets(cfg: TrainConfig) -> dict[str, Any]:
    """``{"train": train_dataset(cfg)}``: the datasets of ``TorchTrainer(datasets=...)``.

    Validation is not a Ray dataset: every rank streams the whole split from its shards itself
    after each training epoch (``iter_split``; small, never augmented), so nothing is decoded
    before training starts and nothing of it is held in the object store. The splits are checked
    by the caller (``check_splits``: ``trainer_for`` checks them whether or not it builds these).
    """
    return {"train": train_dataset(cfg)}


def data_config(cfg: TrainConfig, split: bool = True):
    """Ray Train's ``DataConfig`` of a job: the training stream split across DDP ranks (``split``),
    its Ray Data execution held to ``cfg.data_cpus`` CPUs when given (a sweep's share per trial:
    without it, every trial's pipeline plans for the whole cluster's free CPUs, and concurrent
    trials start more decoding processes than there are CPUs for them)."""
    from ray.data import ExecutionResources
    from ray.train import DataConfig

    options = None  # Ray Train's default ingest options
    if cfg.data_cpus is not None:
        options = DataConfig.default_ingest_options()
        limits = options.resource_limits or ExecutionResources.for_limits()  # inf: no limit
        options.resource_limits = limits.copy(cpu=cfg.data_cpus)
    return DataConfig(datasets_to_split=["train"] if split else [], execution_options=options)


def check_splits(cfg: TrainConfig) -> None:
    """Fail when the training or validation split has no shards."""
    for split in ("train", "val"):
        if not shard_paths(cfg.data, cfg.task, split):
            raise ValueError(f"{cfg.data}: the {split} split of {cfg.task} is empty")


def train_dataset(cfg: TrainConfig):
    """The training stream: shard files in a new order every execution (epoch), decoded and
    augmented anew in batches of ``batch_size`` rows (decoding tasks are as many as batches, not
    as files: a GPU node's cores decode in parallel however few shards a split has).

    Progress bars are off: per-epoch bars of every trial would bury Tune's status table (the
    dataset keeps a copy of the context it was made in, so the setting stays with it).
    """
    import ray.data

    from orchestration.train.shard_source import ShardSource

    paths = shard_paths(cfg.data, cfg.task, "train")
    source = ShardSource(paths, _columns(cfg.task), cfg.batch_size, seed=cfg.seed)
    fn = partial(_decode, task=cfg.task, augment=cfg.augment, copies=oversampling(cfg))
    with data_context(enable_progress_bars=False):
        ds = ray.data.read_datasource(source)
        return ds.map_batches(fn, batch_format="numpy", batch_size=cfg.batch_size)


def shuffle_buffer_rows(cfg: TrainConfig) -> int:
    """Rows of the local shuffle buffer: ``SHUFFLE_BUFFER_BYTES`` of decoded pixels and at least
    eight batches (1,337 crops at 224 px, 128 segmentation crops at 512 px, 64 detection images
    at 1024 px). An epoch's first batch waits until the buffer is full."""
    pixels = cfg.image_size**2 * (2 if cfg.task == "segmentation" else 1)  # image (+ mask)
    return max(8 * cfg.batch_size, SHUFFLE_BUFFER_BYTES // max(pixels, 1))


def epoch_batches(shard, cfg: TrainConfig, epoch: int, rank: int = 0) -> Iterator[dict[str, Any]]:
    """One epoch of a worker's training batches, drawn from a shuffle buffer seeded by
    (seed, epoch, rank): a new order every epoch, different on every rank.

    The last, partial batch is dropped: oversampling draws a new row count every epoch, and a
    batch of one row stops BatchNorm in training mode (the dropped rows differ every epoch).
    """
    seed = int(np.random.SeedSequence([cfg.seed, epoch, rank]).generate_state(1)[0])
    return shard.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=shuffle_buffer_rows(cfg),
        local_shuffle_seed=seed,
    )


def oversampling(cfg: TrainConfig) -> dict[int, float]:
    """Expected extra listings per row of each label, balancing the training classes in
    expectation (``balance=oversample``; see ``oversample``)."""
    if cfg.task != "classification" or cfg.balance != "oversample":
        return {}
    return balancing_copies(label_counts(cfg))


def balancing_copies(counts: Counter) -> dict[int, float]:
    """``{label: largest / count - 1}``: 0.405 for 971 malignant beside 1,364 benign lesions."""
    largest = max(counts.values(), default=0)
    return {label: largest / count - 1 for label, count in counts.items() if count}


def class_weights(cfg: TrainConfig) -> list[float] | None:
    """Inverse-frequency loss weights, when balancing by weighting."""
    if cfg.task != "classification" or cfg.balance != "weighted":
        return None
    counts = label_counts(cfg)
    total = sum(counts.values())
    n = cfg.num_classes or len(counts)
    return [total / (n * counts[k]) if counts.get(k) else 0.0 for k in range(n)]


PREDICTION_METADATA = (
    "key",
    "patient_id",
    "side",
    "view",
    "lesion_type",
    "breast_density",
    "assessment",
    "subtlety",
)


def read_metadata(cfg: TrainConfig, split: str) -> dict[str, list]:
    """The metadata columns of one split's rows, in ``iter_split``'s order (no pixels read);
    a column the shards lack (older shards) is None throughout."""
    columns: dict[str, list] = {name: [] for name in PREDICTION_METADATA}
    for path in shard_paths(cfg.data, cfg.task, split):
        with open_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in PREDICTION_METADATA if c in parquet.schema_arrow.names]
            table = parquet.read(columns=present)
        for name in PREDICTION_METADATA:
            values = table.column(name).to_pylist() if name in present else [None] * len(table)
            columns[name].extend(values)
    return columns


def iter_split(cfg: TrainConfig, split: str, batch_size: int) -> Iterator[dict[str, Any]]:
    """Stream one split's decoded batches without Ray (test evaluation, one process)."""
    for path in shard_paths(cfg.data, cfg.task, split):
        with open_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for record in parquet.iter_batches(batch_size=batch_size, columns=_columns(cfg.task)):
                batch = {
                    name: record.column(name).to_numpy(zero_copy_only=False)
                    for name in record.schema.names
                }
                yield _decode(batch, cfg.task, augment=False)
