"""Tune callback feeding the command's console (``orchestration.console``): trials started and
ended, with their best validation metric and epochs, or their error's first line."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from orchestration import console


class SweepProgress(Callback):
    """One line per ended trial of sweep ``sweep`` on the running verb's console (if any)."""

    def __init__(self, sweep: str, metric: str) -> None:
        self.sweep, self.metric = sweep, metric
        self._best: dict[str, tuple[float, int]] = {}

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if (shown := console.current()) is not None:
            shown.trial_started(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        value, epoch = result.get(self.metric), result.get("epoch", 0)
        best = self._best.get(trial.trial_id)
        if value is not None and (best is None or value > best[0]):
            self._best[trial.trial_id] = (float(value), int(epoch))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        best = self._best.get(trial.trial_id)
        text = f"done: best {self.metric} {best[0]:.3f} (epoch {best[1]})" if best else "done"
        self._said(trial, text)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        where = getattr(trial, "error_file", None) or "the log file"
        self._said(trial, f"failed (traceback: {where})")

    def _said(self, trial, text: str) -> None:
        if (shown := console.current()) is not None:
            shown.trial_done(self.sweep, trial.trial_id, text)
