"""The function every Tune trial runs: one Ray Train V2 job, as ``mammobench train`` builds it.

A module of its own and light to import: a new trial actor imports it before its trial starts
(``orchestration.tune`` brings MLflow, matplotlib and the model libraries: ~5 s here, which
the actor spent on every trial where ASHA can stop one early and actors are not reused).
"""

from __future__ import annotations

import time
from typing import Any

_ACTOR = {"trials": 0}  # trials this actor process has run
_LOADED = time.time()  # this module imported: the trainable being loaded in its actor


def actor_started() -> float:
    """When this actor began setting up its trial: this module's import, as its trainable was
    loaded. (The process's own start would overstate a trial's start-up: Ray pre-starts idle
    worker processes long before any of them becomes a trial's actor.)"""
    return _LOADED


def train_driver_fn(config: dict[str, Any], base: dict[str, Any], storage: str, sweep: str) -> None:
    """Tune function trainable: one Train V2 run per trial, named after the trial id.

    Start-up is measured from the actor's loading of the trainable for its first trial (its
    imports included), from this call for a reused actor's later trials.
    """
    entered = time.time()
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestration.train.config import TrainConfig
    from orchestration.train.driver import trainer_for

    started = min(actor_started(), entered) if _ACTOR["trials"] == 0 else entered
    _ACTOR["trials"] += 1
    cfg = TrainConfig.for_trial(base, config)
    name = f"{sweep}-{tune.get_context().get_trial_id()}"
    marks = {"started": started, "trial_fn": entered}
    trainer_for(cfg, storage, name, [TuneReportCallback()], marks).fit()
