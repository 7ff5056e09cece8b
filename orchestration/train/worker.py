"""``train_fn_per_worker``: the training loop each Ray Train worker runs.

Per epoch: stream this worker's training shard (augmented), step, evaluate the whole validation
split (predictions gathered across workers), then ``ray.train.report`` the metrics, with a checkpoint
from rank 0. A checkpoint holds the latest state (epoch, model, optimiser, scheduler, scaler, RNG) to
resume from, and the best model so far (by the validation metric) for the final test evaluation.
"""

from __future__ import annotations

import copy
import math
import random
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray.data
import ray.train
import ray.train.torch
import torch

from orchestration.train.config import TrainConfig
from orchestration.train.data import data_config, epoch_batches, iter_split, train_dataset
from orchestration.train.steps import (
    amp_for,
    checksums,
    evaluate,
    make_optimizer,
    make_scheduler,
    rank_world,
    step_scheduler,
    train_epoch,
    unwrap,
)
from orchestration.train.tasks import collate, make_task

STATE_FILE, BEST_FILE, BEST_VAL_FILE = "state.pt", "best_model.pt", "best_val.pt"
STARTUP_KEY = "_startup"  # train_loop_config: {"started", "planned"} stamps (time.time())
PREVIEW_ROWS = 8


@dataclass
class Best:
    """The best model so far and what it predicted on validation (for the run's plots)."""

    model: dict[str, Any] | None = None
    val: dict[str, Any] | None = None


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so ``torch.load(weights_only=True)`` reads them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _save(folder: Path, loop: dict[str, Any], best: Best) -> ray.train.Checkpoint:
    torch.save({**loop, "rng": _rng_state()}, folder / STATE_FILE)
    torch.save(best.model, folder / BEST_FILE)
    torch.save(best.val, folder / BEST_VAL_FILE)
    return ray.train.Checkpoint.from_directory(str(folder))


def _tensors(obj: Any) -> Any:
    """Numpy arrays -> tensors, recursively, so ``torch.load(weights_only=True)`` reads them."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else list(obj)
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensors(v) for v in obj]
    return obj


def _load_checkpoint() -> tuple[dict[str, Any] | None, Best]:
    """The latest reported checkpoint's loop state and best model (None, empty: a fresh start)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None, Best()
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True)
        best = Best(
            *(
                torch.load(Path(folder) / name, weights_only=True)
                for name in (BEST_FILE, BEST_VAL_FILE)
            )
        )
    return state, best


def _resume(job: _Job, state: dict[str, Any] | None) -> dict[str, Any]:
    """The loop state to go on from: a checkpoint's (weights, optimiser, RNG restored) or new."""
    loop = {
        "epoch": 0,
        "best": -math.inf,
        "best_epoch": -1,
        "stale": 0,
        "best_scores": {},
        "starts": [0],
        "history": [],  # every epoch's scalar metrics, re-sent after a restart
    }
    if state is None:
        return loop
    unwrap(job.model).load_state_dict(state["model"])
    job.optimizer.load_state_dict(state["optimizer"])
    for obj, key in ((job.scheduler, "scheduler"), (job.amp[1], "scaler")):
        if obj is not None and state.get(key) is not None:
            obj.load_state_dict(state[key])
    _set_rng_state(state["rng"])
    restored = loop | {k: state[k] for k in loop if k in state}
    restored["starts"] = [*state["starts"], state["epoch"]]  # where each attempt began
    return restored


class _FetchAhead:
    """An epoch's batches, made and their first one fetched in a thread from the start, so the
    data pipeline is planned and spins up (tasks, their imports, the shuffle buffer) while the
    model is built."""

    def __init__(self, batches: Callable[[], Iterator[dict[str, Any]]]) -> None:
        self._make, self._batches, self._first, self._error = batches, iter(()), [], None
        self._thread = threading.Thread(target=self._fetch, daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._batches = iter(self._make())
            self._first.append(next(self._batches))
        except StopIteration:
            pass
        except BaseException as error:  # re-raised in the training thread
            self._error = error

    def __iter__(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._batches


class _Stream:
    """This worker's training stream, one iterator over every epoch, made at its first use.

    DDP ranks take their split from Ray Train (``datasets=``, a streaming split). A single worker
    makes the dataset itself, with the options Ray Train's ``DataConfig`` gives an unsplit one: it
    is planned in ``_FetchAhead``'s thread while the model is built, and no dataset-manager actor
    (a new process) is started for it.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self._iterator = cfg, None

    def epoch(self, epoch: int) -> Iterator[dict[str, Any]]:
        if self._iterator is None:
            self._iterator = self._make()
        return epoch_batches(self._iterator, self.cfg, epoch, rank_world()[0])

    def _make(self):
        if self.cfg.workers > 1:
            return ray.train.get_dataset_shard("train")
        datasets = {"train": train_dataset(self.cfg)}
        node = ray.get_runtime_context().get_node_id()
        (shards,) = data_config(self.cfg, split=False).configure(datasets, 1, None, [node])
        return shards["train"]


@dataclass
class _Job:
    """What one worker trains with, built once per (re)start."""

    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: tuple[torch.dtype | None, Any]  # autocast dtype, gradient scaler (see ``amp_for``)
    task: Any
    n_trainable: int

    @classmethod
    def build(cls, cfg: TrainConfig, class_weights: list[float] | None) -> _Job:
        # timm and torchvision (~1.6 s) load here, while the first batch is fetched
        from models import build_model, trainable_params

        device = ray.train.torch.get_device()
        model = build_model(cfg.model_spec())
        n_trainable = trainable_params(model)
        model = ray.train.torch.prepare_model(model) if cfg.workers > 1 else model.to(device)
        optimizer = make_optimizer(cfg, model)
        weights = torch.tensor(class_weights) if class_weights else None
        task = make_task(cfg.task, cfg.in_chans, weights, cfg.lesion_detector)
        return cls(
            cfg,
            device,
            model,
            optimizer,
            make_scheduler(cfg, optimizer),
            amp_for(device),
            task,
            n_trainable,
        )


def _epoch(
    job: _Job, loop: dict[str, Any], best: Best, epoch: int, stream: _Stream, batches: _FetchAhead
) -> tuple[dict[str, Any], _FetchAhead | None]:
    """Train one epoch on ``batches``, validate, update ``best``; return the metrics to report
    and the next epoch's batches, whose fetch starts before validation (overlapping the
    pipeline's start and the shuffle buffer's fill with validation and the checkpoint)."""
    cfg = job.cfg
    start = time.perf_counter()
    stats = train_epoch(job.task, job.model, job.optimizer, batches, job.device, job.amp)
    ahead = _FetchAhead(partial(stream.epoch, epoch + 1)) if epoch + 1 < cfg.epochs else None
    val_start = time.perf_counter()
    val_batches = iter_split(cfg, "val", cfg.batch_size)
    outputs, first = evaluate(job.task, job.model, val_batches, job.device)
    scores = {f"val_{k}": v for k, v in job.task.metrics(outputs).items() if _scalar(v)}
    scores["val_n"] = len(outputs["patient_id"])  # rows evaluated: the whole split
    score = scores.get(cfg.metric, float("nan"))
    score = -math.inf if math.isnan(score) else score
    if score > loop["best"] or best.model is None:
        loop.update(best=score, best_epoch=epoch, stale=0, best_scores=scores)
        best.model = copy.deepcopy(unwrap(job.model).state_dict())
        best.val = _val_record(job, outputs, first)
    else:
        loop["stale"] += 1
    step_scheduler(job.scheduler, score)
    loop["epoch"] = epoch + 1
    sums = checksums(job.model)
    metrics = {
        "epoch": epoch + 1,
        "train_loss": stats["train_loss"],
        **scores,
        "best_epoch": loop["best_epoch"] + 1,
        f"best_{cfg.metric}": loop["best"],
        "lr": job.optimizer.param_groups[0]["lr"],
        "trainable_params": job.n_trainable,
        "start_epoch": loop["starts"][-1],
        "param_checksums": sums,
        "ranks_in_sync": len(set(sums)) == 1,
        "completed": _completed(loop, cfg),
        **_timings(stats, start, val_start),
    }
    loop["history"].append({k: v for k, v in metrics.items() if _scalar(v)})
    return metrics, ahead


def _timings(stats: dict[str, Any], start: float, val_start: float) -> dict[str, float]:
    """Where an epoch's time went: the wait for its first batch, training, validation; and
    the worker's peak memory so far."""
    now = time.perf_counter()
    return {
        "epoch_s": now - start,
        "epoch_train_s": stats["train_s"],
        "epoch_eval_s": now - val_start,
        "train_images_per_s": stats["train_images_per_s"],
        "epoch_first_batch_s": stats.get("first_batch_s", math.nan),
        "epoch_first_step_s": stats.get("first_step_s", math.nan),
        # this worker process's peak resident memory so far (Linux reports KiB)
        "epoch_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _startup(marks: dict[str, float], metrics: dict[str, Any]) -> dict[str, float]:
    """Start-up of this attempt, from ``started`` (the trial or job began; see ``trainer_for``)
    to the end of the first optimiser step, by stage: a trial's actor (its start and imports),
    the datasets planned (validation decoded),
    on to this function (Train controller, worker group, process group, imports), model build,
    checkpoint restore, the first batch (pipeline start and shuffle buffer), the first step."""
    out = {
        "startup_model_s": marks["built"] - marks["entry"],
        "startup_restore_s": marks["restored"] - marks["built"],
        "startup_first_batch_s": metrics["epoch_first_batch_s"],
        "startup_first_step_s": metrics["epoch_first_step_s"] - metrics["epoch_first_batch_s"],
    }
    if "started" in marks:
        if "trial_fn" in marks:  # a Tune trial: its actor loading the trainable, and imports
            out["startup_trial_actor_s"] = marks["trial_fn"] - marks["started"]
        out["startup_datasets_s"] = marks["planned"] - marks.get("trial_fn", marks["started"])
        out["startup_to_worker_s"] = marks["entry"] - marks["planned"]
        first_step = marks["epoch"] + metrics["epoch_first_step_s"]
        out["first_step_s"] = first_step - marks["started"]
    return out


def _val_record(job: _Job, outputs: dict[str, Any], first: Any) -> dict[str, Any] | None:
    """Rank 0 keeps the best epoch's validation predictions and a few examples for plots."""
    if ray.train.get_context().get_world_rank() != 0:
        return None
    keep = {k: v for k, v in outputs.items() if k in ("probs", "label", "scores", "patient_id")}
    preview = {}
    if first is not None:
        rows = {k: v[:PREVIEW_ROWS] for k, v in first.items()}
        with torch.no_grad():  # the unwrapped model: rank 0 alone runs this forward
            preview = job.task.preview(unwrap(job.model), collate(rows, job.device))
    return _tensors({"outputs": keep, "preview": preview})


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (Train V2): one call per worker."""
    marks = {"entry": time.time()}
    config = dict(config)
    class_weights = config.pop("_class_weights", None)
    marks |= config.pop(STARTUP_KEY, None) or {}
    cfg = TrainConfig.from_dict(config)
    ray.data.DataContext.get_current().enable_progress_bars = False  # iteration bars, per epoch
    state, best = _load_checkpoint()
    if state is not None and _completed(state, cfg):
        _report_final(state)
        return
    start_epoch = state["epoch"] if state else 0
    stream = _Stream(cfg)
    ahead = _FetchAhead(partial(stream.epoch, start_epoch)) if start_epoch < cfg.epochs else None
    torch.manual_seed(cfg.seed)
    job = _Job.build(cfg, class_weights)
    marks["built"] = time.time()
    loop = _resume(job, state)
    marks["restored"] = time.time()
    replay, first = len(loop["starts"]) > 1, True
    if replay:  # the stamps are the job's first attempt's: no start-up figure against them
        marks.pop("started", None)
    for epoch in range(loop["epoch"], cfg.epochs):
        epoch_start = time.time()
        metrics, ahead = _epoch(job, loop, best, epoch, stream, ahead)
        if first:  # this attempt's start-up, reported with its first epoch
            metrics |= _startup(marks | {"epoch": epoch_start}, metrics)
            first = False
        if replay:  # a restarted run re-sends the epochs before it: their reports may be lost
            metrics["history"], replay = list(loop["history"]), False
        _report(metrics, loop, job, best)
        if metrics["completed"]:
            break


def _completed(loop: dict[str, Any], cfg: TrainConfig) -> bool:
    """Epochs run out, or early stopping (Tune reserves "done")."""
    return loop["stale"] > cfg.patience or loop["epoch"] >= cfg.epochs


def _report_final(state: dict[str, Any]) -> None:
    """A run restarted after its last checkpoint had completed it (a driver killed between the
    two): report that epoch again, with its checkpoint and every epoch before it, and train no
    more. Tune's snapshot of the trial may hold an earlier epoch, whose checkpoint
    ``num_to_keep`` has deleted; without this report the trial would end on it."""
    metrics = {**state["history"][-1], "history": list(state["history"]), "completed": True}
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with ray.train.get_checkpoint().as_directory() as folder:  # copied to this report's own
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _report(metrics: dict[str, Any], loop: dict[str, Any], job: _Job, best: Best) -> None:
    """Report once per epoch; only rank 0 writes the checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    optional = {"scheduler": job.scheduler, "scaler": job.amp[1]}
    state = {
        **loop,
        "model": unwrap(job.model).state_dict(),
        "optimizer": job.optimizer.state_dict(),
        **{k: v.state_dict() if v is not None else None for k, v in optional.items()},
    }
    with tempfile.TemporaryDirectory(prefix="mammobench-ckpt-") as folder:
        ray.train.report(metrics, checkpoint=_save(Path(folder), state, best))
