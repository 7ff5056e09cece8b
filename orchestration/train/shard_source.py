"""The prepared Parquet shards as a Ray Data source, planned from the files' footers alone.

``ray.data.read_parquet`` samples files in remote tasks to estimate their size in memory before a
dataset exists: each task needs a worker process, and a trial's actor is a new process; here
that was 1.4 s of a Train job's start-up and 2.6-3.3 s of a trial's (``bench/trial_startup.py``:
its datasets stage before and after). Shards are ``prepare``'s own,
small and listed in the manifest (paths or URIs: each read task opens its file where it runs, from
a disk or a bucket): their footers (row counts, byte sizes) are read where the dataset
is made, in milliseconds, and each shard file is one read task.

With a seed, the files are read in a new order on every execution (every epoch), seeded by (seed,
execution), as ``FileShuffleConfig(seed, reseed_after_execution=True)`` does for ``read_parquet``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import DataContext
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from data_pipeline.storage import open_file


class ShardSource(Datasource):
    """One read task per shard file, yielding blocks of ``rows_per_block`` rows of ``columns``."""

    def __init__(
        self, paths: list[str], columns: list[str], rows_per_block: int, seed: int | None = None
    ) -> None:
        super().__init__()
        self._paths, self._columns, self._seed = list(paths), list(columns), seed
        self._rows_per_block = rows_per_block
        self._sizes = [_footer_size(path, self._columns) for path in self._paths]

    def get_name(self) -> str:
        return "ReadShards"

    def estimate_inmemory_data_size(self) -> int:
        return sum(size for _, size in self._sizes)

    def file_order(self, execution: int) -> list[int]:
        """The files' read order on the ``execution``-th run of the dataset."""
        if self._seed is None:
            return list(range(len(self._paths)))
        return np.random.default_rng([self._seed, execution]).permutation(len(self._paths)).tolist()

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        # Ray Data counts a dataset's executions on its context (its own sources read it so)
        execution = data_context._execution_idx if data_context is not None else 0
        tasks = []
        for i in self.file_order(execution):
            rows, size = self._sizes[i]
            meta = BlockMetadata(
                num_rows=rows, size_bytes=size, exec_stats=None, input_files=(self._paths[i],)
            )
            read = partial(_read_shard, self._paths[i], self._columns, self._rows_per_block)
            tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _footer_size(path: str, columns: list[str]) -> tuple[int, int]:
    """Rows of a shard and the uncompressed bytes of ``columns`` in it, from its footer."""
    with open_file(path) as handle:
        meta = pq.read_metadata(handle)
    wanted = set(columns)
    size = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            if column.path_in_schema.split(".")[0] in wanted:
                size += column.total_uncompressed_size
    return meta.num_rows, size


def _read_shard(path: str, columns: list[str], rows: int) -> Iterator[pa.Table]:
    with open_file(path) as handle:  # a path or a URI: read where the task runs
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield pa.Table.from_batches([batch])
