"""``SweepConfig``: one sweep as plain data (light to import: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_pipeline.storage import location_text
from orchestration.train.config import TrainConfig


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: the architecture, its space and how trials are scheduled."""

    model: str
    data: str
    task: str = "classification"
    space: str | None = None
    samples: int = 1
    max_epochs: int = 10
    scheduler: str = "asha"
    search: str = "random"
    workers: int = 1
    gpus_per_trial: float = 0.0
    name: str | None = None
    resume: bool = False
    grace_epochs: int = 1
    reduction_factor: int = 4  # ASHA keeps 1 in this many trials at each rung (Tune's default)
    max_failures: int = 1
    seed: int = 0  # the sweep's random draws, the order its grid runs in, and training
    seeds: int = 1  # the best params trained with this many seeds in all (mean +- sd reported)
    split_data: dict[int, str] = field(default_factory=dict)  # seed -> shards of its val split
    experiment: str | None = None
    parent_run: str | None = None
    max_concurrent: int | None = None  # autoscaling clusters: set it, nodes are not up yet
    train: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # space settings pinned to one value
    tags: dict[str, str] = field(default_factory=dict)  # extra tags of the sweep's parent run

    def __post_init__(self) -> None:
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError(f"scheduler must be asha or fifo, got {self.scheduler!r}")
        if self.search not in ("random", "optuna"):
            raise ValueError(f"search must be random or optuna, got {self.search!r}")
        if self.samples < 1 or self.max_epochs < 1:
            raise ValueError("samples and max_epochs must be at least 1")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor must be at least 2, got {self.reduction_factor}")

    def base(self) -> TrainConfig:
        """The training job every trial starts from (sampled settings override it)."""
        gpus = self.gpus_per_trial / self.workers
        # ASHA stops trials (no early stop); a lost Train worker restarts from its checkpoint
        train = {"patience": self.max_epochs, "max_failures": self.max_failures, **self.train}
        return TrainConfig(
            model=self.model,
            data=location_text(self.data),
            task=self.task,
            epochs=self.max_epochs,
            workers=self.workers,
            gpus_per_worker=gpus,
            seed=self.seed,
            **train,
        ).with_manifest()
