"""``ReportLog``: every ``ray.train.report`` of a job appended to a JSON-lines file.

A Train V2 result keeps the metrics of its kept checkpoints only (one, here); this keeps every
epoch's scalar metrics (rank 0's), for the benchmarks and for anyone reading a job without MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.train import UserCallback


class ReportLog(UserCallback):
    """Append rank 0's scalar metrics of each report to ``path`` (run on the Train controller,
    so ``path`` must be on storage the controller's node can write)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint) -> None:
        scalars = {k: v for k, v in metrics[0].items() if isinstance(v, int | float | bool | str)}
        with self.path.open("a") as out:
            out.write(json.dumps(scalars) + "\n")


def read_report_log(path: str | Path) -> list[dict[str, Any]]:
    """The records ``ReportLog`` wrote, in report order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
