"""CPU seconds by process while a block runs, sampled with psutil: which of Ray's processes a
start-up shares the cores with.

Ray names a worker process after what it runs (``ray::RayTrainWorker``, ``ray::TrainController``,
a Ray Data task's operators); ``ray::IDLE`` is a pooled worker process not yet given work, and
``default_worker`` one still starting (importing Ray). A process that starts in the window counts
from its start; one that starts and ends between two samples is missed, so the totals are a lower
bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import psutil

SYSTEM = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "default_worker.py")


def kind(process: psutil.Process) -> str:
    """A process's kind: its Ray title (``ray::Name``, the method stripped), Ray's own daemons
    by name, anything else by its command."""
    try:
        words = process.cmdline()
    except psutil.Error:
        return "?"
    line = " ".join(words[:3]) if words else process.name()
    if line.startswith("ray::"):
        return line.split()[0].split(".")[0]
    named = next((name for name in SYSTEM if name in line), None)
    return (named or line[:60]).removesuffix(".py")


class ProcessCPU:
    """``with ProcessCPU() as cpu: ...``; then ``cpu.seconds(start, end)``."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.samples = interval, []  # (time, pid, kind, cpu seconds so far)
        self.created: dict[int, float] = {}
        self._stop, self._thread = threading.Event(), threading.Thread(target=self._run)

    def __enter__(self) -> ProcessCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        known: dict[int, psutil.Process] = {}
        while not self._stop.is_set():
            now = time.time()
            for process in psutil.process_iter():
                try:
                    process = known.setdefault(process.pid, process)
                    self.created.setdefault(process.pid, process.create_time())
                    times = process.cpu_times()
                    self.samples.append(
                        (now, process.pid, kind(process), times.user + times.system)
                    )
                except psutil.Error:
                    continue
            time.sleep(self.interval)

    def seconds(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each kind of process used between ``start`` and ``end`` (time.time()),
        largest first; each interval counts under the kind the process had at its end (Ray
        retitles a worker as it takes on work)."""
        last: dict[int, float] = {}
        used: Counter = Counter()
        for at, pid, name, cpu in sorted(self.samples):
            before = last.get(pid, 0.0 if self.created.get(pid, 0.0) >= start else None)
            if before is not None and start <= at <= end:
                used[name] += cpu - before
            last[pid] = cpu
        return {name: round(value, 1) for name, value in used.most_common() if value >= 0.05}
