"""Peak memory of a ``prepare`` worker on full-size mammograms, and of a training worker at the
study's image sizes.

1. prepare: full-size synthetic CBIS-DDSM files (default 5000x3000 16-bit images with their 8-bit
   masks and crops) go through ``prepare`` with 2 workers, every task (lesion crops at 224 px,
   tumour crops at 512 px, detection images at 1024 px), at 50 and at 500 images per task. Both
   workloads list the same few files many times over under new keys (``repeated_catalog``): the
   dataset grows, the files written do not (a full-size image takes seconds to synthesise).
2. training: per task, one epoch of a one-worker Train job (2 CPUs) with the study's architecture
   and the largest batch size of the task's search space, from scratch (every layer has
   gradients: an upper bound for fine-tuning), on a few synthetic patients prepared at the study's
   size and listed often enough for ``--batches`` batches (class balancing off: a fixed number of
   rows). A full split would also fill the worker's local shuffle buffer (at most
   ``SHUFFLE_BUFFER_BYTES`` of decoded rows, or 8 batches): what this small set leaves unfilled
   is reported beside the peak.

How the peaks are read. A thread polls (psutil) every 0.1 s the Ray worker processes of the
cluster this process started (``ray::`` titles): the ones that ran ``Map(convert)`` tasks (prepare)
or the ``RayTrainWorker`` actor (training). Their peak RSS is the kernel's high-water mark
(``VmHWM``: exact, not sampled; reset through ``clear_refs`` when a run starts, as Ray reuses
worker processes); USS (private pages) and PSS are the largest sampled. RSS also counts shared
pages (libraries, the object store's pages mapped into the worker), so USS is what one more worker
costs. The training worker also reports its own peak (``epoch_peak_rss_mb``, ``ru_maxrss``, logged
to MLflow with every epoch). Prints the figures and ends with one JSON line; ``ratio`` = prepare's
peak RSS per worker at 500 images / at 50 (flat: ~1; the target is < 1.5 GB). Linux only.

    nice -n 10 .venv/bin/python bench/memory.py [--patients 4] [--size 5000 3000]
        [--images 50 500] [--train-scale 1.0] [--train-models resnet50 unet fasterrcnn]
        [--train-batch-sizes 32 8 4]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import psutil
from common import repeated_catalog

from data_pipeline import TASKS
from data_pipeline.catalog import Catalog, build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig, plan_items
from data_pipeline.synth import SynthConfig, make_synthetic
from orchestration.ray_cluster import init_ray

SIZE_FIELD = {"classification": "cls_size", "segmentation": "seg_size", "detection": "det_size"}
PREPARE_TASK = "Map(convert)"  # the title of a Ray worker running prepare's conversion
TRAIN_WORKER = "RayTrainWorker"
VAL_FRACTION = 0.35  # of the training sets' few patients: a validation split remains


def quiet(*_) -> None:
    pass


def _kib(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """The ``Name:   N kB`` lines of a /proc file."""
    out = {}
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name in names:
            out[name] = int(value.split()[0])
    return out


@dataclass
class Peak:
    """One worker process's highest figures while it was watched, in MB."""

    rss_mb: float = 0.0
    uss_mb: float = 0.0
    pss_mb: float = 0.0


class WorkerPeaks:
    """Watches, while in a ``with`` block, the Ray worker processes below this process (its
    local cluster's raylet) that show ``title`` (a task's or an actor's name) at some poll.

    The high-water mark is read on every poll from then on; USS and PSS (psutil's
    ``memory_full_info``, some milliseconds of kernel time per read) only while the process
    shows ``title``.
    """

    def __init__(self, title: str, interval_s: float = 0.1) -> None:
        self.title, self.interval_s = title, interval_s
        self.peaks: dict[int, Peak] = {}
        self.reset = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        for pid in self._workers():  # Ray reuses worker processes: their peaks start afresh
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                self.reset = False
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def _poll(self) -> None:
        for pid, (proc, title) in self._workers().items():
            busy = self.title in title
            if not busy and pid not in self.peaks:
                continue
            try:  # psutil has no high-water mark: the kernel's, from /proc
                hwm = _kib(f"/proc/{pid}/status", ("VmHWM",))["VmHWM"]
                full = proc.memory_full_info() if busy else None  # USS and PSS
            except (OSError, psutil.Error):  # it exited since it was listed
                continue
            peak = self.peaks.setdefault(pid, Peak())
            peak.rss_mb = max(peak.rss_mb, hwm / 1024)
            if full is not None:
                peak.uss_mb = max(peak.uss_mb, full.uss / 2**20)
                peak.pss_mb = max(peak.pss_mb, full.pss / 2**20)

    def _workers(self) -> dict[int, tuple[psutil.Process, str]]:
        """pid -> (process, title) of this process's descendants titled ``ray::``."""
        found = {}
        for proc in psutil.Process().children(recursive=True):
            try:
                argv = proc.cmdline()
            except psutil.Error:
                continue
            title = argv[0].strip() if argv else ""  # Ray pads its titles with spaces
            if title.startswith("ray::"):
                found[proc.pid] = (proc, title)
        return found


def summary(peaks: dict[int, Peak], what: str) -> dict[str, float]:
    """The largest figure of each kind over the processes (each may peak in another one)."""
    if not peaks:
        raise RuntimeError(f"no {what} process seen below this process: is Ray local?")
    out: dict[str, float] = {"processes": len(peaks)}
    for name in (f.name for f in fields(Peak)):
        out[f"peak_{name}"] = round(max(getattr(p, name) for p in peaks.values()), 1)
    return out


def prepare_peaks(catalog: Catalog, times: int, cfg: PrepareConfig, workers: int) -> dict:
    """Prepare ``catalog`` listed ``times`` over, watching the conversion workers."""
    big = repeated_catalog(catalog, times)
    counts = {task: len(plan_items(big, cfg, task)) for task in cfg.tasks}
    with tempfile.TemporaryDirectory() as out, WorkerPeaks(PREPARE_TASK) as watch:
        start = time.perf_counter()
        prepare(big, Path(out), cfg, workers=workers, print_fn=quiet)
        wall = time.perf_counter() - start
    converters = watch.peaks
    for pid, p in sorted(converters.items()):
        print(
            f"  worker {pid}: RSS {p.rss_mb:.0f} MB, USS {p.uss_mb:.0f} MB, PSS {p.pss_mb:.0f} MB"
        )
    run = {"times": times, "images": counts, "s": round(wall, 1), "hwm_reset": watch.reset}
    return run | summary(converters, "prepare worker")


def measure_prepare(args: argparse.Namespace, root: Path) -> list[dict]:
    start = time.perf_counter()
    data = make_synthetic(root, SynthConfig(patients=args.patients, size=tuple(args.size)))
    catalog = build_catalog(data)
    cfg = PrepareConfig(cls_input=args.cls_input)
    distinct = {task: len(plan_items(catalog, cfg, task)) for task in cfg.tasks}
    print(
        f"{distinct} distinct items of {args.size[0]}x{args.size[1]} 16-bit images written in "
        f"{time.perf_counter() - start:.0f} s; each workload lists these files many times over"
    )
    runs = []
    for target in args.images:
        times = max(1, round(target / distinct["classification"]))
        print(f"prepare, {times}x the files, 2 workers:")
        run = prepare_peaks(catalog, times, cfg, workers=2)
        print(
            f"  {run['images']} in {run['s']} s: peak per worker RSS {run['peak_rss_mb']} MB, "
            f"USS {run['peak_uss_mb']} MB, PSS {run['peak_pss_mb']} MB"
        )
        runs.append(run)
    return runs


def training_set(task: str, batch_size: int, base: Catalog, root: Path, args) -> tuple:
    """Prepare ``base`` at the task's (scaled) study size, listed often enough for ``--batches``
    training batches; return the folder, the size and the training rows."""
    size = round(getattr(PrepareConfig(), SIZE_FIELD[task]) * args.train_scale)
    cfg = PrepareConfig(tasks=(task,), val_fraction=VAL_FRACTION, **{SIZE_FIELD[task]: size})
    splits = Counter(item["split"] for item in plan_items(base, cfg, task))
    if not splits["train"] or not splits["val"]:
        raise ValueError(f"{task}: {dict(splits)} rows per split; give more --train-patients")
    times = math.ceil(args.batches * batch_size / splits["train"])
    prepare(repeated_catalog(base, times), root / task, cfg, workers=2, print_fn=quiet)
    return root / task, size, splits["train"] * times


def train_peak(task: str, model: str, batch_size: int, base: Catalog, root: Path, args) -> dict:
    """One epoch of a one-worker Train job on a small set at the task's study size, watched."""
    from orchestration.train.config import TrainConfig
    from orchestration.train.data import shuffle_buffer_rows
    from orchestration.train.driver import trainer_for

    data, size, rows = training_set(task, batch_size, base, root, args)
    job = TrainConfig(
        model=model,
        data=str(data),
        task=task,
        epochs=1,
        batch_size=batch_size,
        balance="none",  # a fixed number of rows per epoch
        cpus_per_worker=args.cpus_per_worker,
    ).with_manifest()
    start = time.perf_counter()
    with WorkerPeaks(TRAIN_WORKER) as watch:
        result = trainer_for(job, str(root / "runs"), job.run_name()).fit()
    # a bigger split would also fill the local shuffle buffer (decoded image, and mask)
    pixels = size**2 * (2 if task == "segmentation" else 1)
    unfilled = max(0, shuffle_buffer_rows(job) - rows) * pixels / 2**20
    return {
        "model": model,
        "size": size,
        "batch_size": batch_size,
        "train_rows": rows,
        "s": round(time.perf_counter() - start, 1),
        "reported_peak_rss_mb": round(result.metrics["epoch_peak_rss_mb"], 1),
        **summary(watch.peaks, "Train worker"),
        "shuffle_buffer_unfilled_mb": round(unfilled, 1),
    }


def measure_training(args: argparse.Namespace, root: Path) -> dict:
    synth = SynthConfig(patients=args.train_patients, size=tuple(args.train_source), seed=1)
    base = build_catalog(make_synthetic(root / "synth", synth), val_fraction=VAL_FRACTION)
    out = {}
    for task, model, batch_size in zip(
        TASKS, args.train_models, args.train_batch_sizes, strict=True
    ):
        run = train_peak(task, model, batch_size, base, root, args)
        print(
            f"train {task}: {model} at {run['size']} px, batch {batch_size}, "
            f"{run['train_rows']} training rows, {run['s']} s: the worker reports a peak RSS of "
            f"{run['reported_peak_rss_mb']} MB; watched: RSS {run['peak_rss_mb']} MB, "
            f"USS {run['peak_uss_mb']} MB, PSS {run['peak_pss_mb']} MB; a full split would also "
            f"fill the shuffle buffer with up to {run['shuffle_buffer_unfilled_mb']} MB more"
        )
        out[task] = run
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4, help="Full-size synthetic patients.")
    parser.add_argument("--size", type=int, nargs=2, default=(5000, 3000), help="Rows, columns.")
    parser.add_argument("--images", type=int, nargs=2, default=(50, 500), help="Per task.")
    parser.add_argument("--cls-input", default="crop", choices=("crop", "whole"))
    parser.add_argument("--train-scale", type=float, default=1.0, help="Of the study's sizes.")
    parser.add_argument("--train-models", nargs=3, default=("resnet50", "unet", "fasterrcnn"))
    parser.add_argument("--train-batch-sizes", type=int, nargs=3, default=(32, 8, 4))
    parser.add_argument("--batches", type=int, default=2, help="Training batches per job.")
    parser.add_argument("--train-patients", type=int, default=4)
    parser.add_argument("--train-source", type=int, nargs=2, default=(1280, 768))
    parser.add_argument("--cpus-per-worker", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    init_ray(num_cpus=4)  # a no-op when Ray is already up (it must be this process's cluster)
    with tempfile.TemporaryDirectory() as tmp:
        runs = measure_prepare(args, Path(tmp) / "full-size")
        train = measure_training(args, Path(tmp) / "train")
    small, big = runs[0], runs[-1]
    result = {
        "prepare_size": list(args.size),
        "prepare": runs,
        "prepare_peak_rss_mb": [small["peak_rss_mb"], big["peak_rss_mb"]],
        "prepare_peak_uss_mb": [small["peak_uss_mb"], big["peak_uss_mb"]],
        "train": train,
        "train_peak_rss_mb": {task: run["reported_peak_rss_mb"] for task, run in train.items()},
        "ratio": round(big["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
