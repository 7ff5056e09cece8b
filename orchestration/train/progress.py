"""``mammobench train``'s epoch lines: Ray Train reports each epoch in its controller process; a
callback there sends rank 0's metrics through a Ray queue to the driver, whose thread prints them
on the verb's console (``orchestration.console``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from ray.train import UserCallback
from ray.util.queue import Queue

from orchestration import console

SHOWN = ("train_loss",)  # besides the run's validation metric


class EpochReports(UserCallback):
    """In the Train controller: each report's rank-0 metrics onto ``queue``."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if metrics:
            self.queue.put(metrics[0])


@contextmanager
def epoch_lines(metric: str, epochs: int) -> Iterator[list[UserCallback]]:
    """The Train callbacks that print one line per epoch on the current console (none when no
    verb's console is running: a library call, a Tune trial)."""
    shown = console.current()
    if shown is None:
        yield []
        return
    queue = Queue(actor_options={"num_cpus": 0})  # never waits for a CPU the trial needs
    stop = threading.Event()
    thread = threading.Thread(target=_drain, args=(queue, stop, shown, metric, epochs), daemon=True)
    thread.start()
    try:
        yield [EpochReports(queue)]
    finally:
        stop.set()
        thread.join(timeout=10)
        queue.shutdown()


def _drain(queue: Queue, stop: threading.Event, shown, metric: str, epochs: int) -> None:
    while True:
        try:
            shown.say(epoch_text(queue.get(timeout=0.5), metric, epochs))
        except Empty:
            if stop.is_set():
                return


def epoch_text(report: dict[str, Any], metric: str, epochs: int) -> str:
    """``epoch 3/20: train_loss 0.512, val_auc 0.741 (best 0.760 at epoch 2), 4.1 s``."""
    parts = [f"{key} {report[key]:.3f}" for key in (*SHOWN, metric) if key in report]
    best = report.get(f"best_{metric}")
    if best is not None:
        parts[-1] += f" (best {best:.3f} at epoch {report.get('best_epoch', '?')})"
    if "epoch_s" in report:
        parts.append(f"{report['epoch_s']:.1f} s")
    return f"epoch {report.get('epoch', '?')}/{epochs}: " + ", ".join(parts)
