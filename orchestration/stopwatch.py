"""``Stopwatch``: wall-clock seconds per named stage of a command, for its summary and MLflow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """``with clock("prepare"): ...`` adds the block's seconds to ``clock.seconds["prepare_s"]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"{stage}_s"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
