"""Benchmark configs: which sweeps a study runs, at which sizes and resources. Data only.

A benchmark file (``search_spaces/benchmarks/*.yaml``, or any path) has::

    prepare: {cls_size: 224, seg_size: 512, det_size: 1024}   # image sizes of the shards
    synth: {patients: 40, seed: 0}          # optional: synthesise the dataset first (the demo)
    defaults: {samples: 8, max_epochs: 50, gpus_per_trial: 1, fix: {}, train: {}}
    runs:
      - {model: vgg16, task: classification, settings: [scratch, pretrained]}
      - {model: vgg16, task: classification, input: whole}   # the study's whole-image input
      - {model: efficientnet_lite0, task: classification, prepare: {cls_size: 64}}
    ensemble: {top_k: 3}                    # the ensemble row: top-k classifiers by val AUC
    vary_split: false                       # seed repeats also draw a new validation split

Each run becomes one sweep per setting (``scratch``/``pretrained``, both by default;
``study_frozen``: the study's "from scratch" models, random weights with the early stages
frozen, its architecture's ``study_unfreeze``) with the
run's keys over ``defaults``. ``fix`` pins space settings to one value; ``train`` sets training
options the space does not tune; ``seeds: N`` trains the best params with N seeds in all; a
classification run's ``input`` is a lesion crop (``crop``, default) or the whole image; a run's
``prepare`` sizes (``cls_size``, ``seg_size``, ``det_size``) override the config's for its sweeps,
whose shards are prepared apart (runs with the same sizes share them, so their settings are
compared on the same test rows). ``published.yaml`` holds the study's published test figures.
Everything is checked on loading (types, limits, names, the spaces named), so that a typo fails
before a cluster starts, with the file, the key and the value in the message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_pipeline import TASKS
from search_spaces import (
    SPACES_DIR,
    TUNABLE,
    SpaceError,
    _check_value,
    load_space,
    not_a_mapping,
    read_yaml,
    within,
)

BENCH_DIR = SPACES_DIR / "benchmarks"
SETTINGS = ("scratch", "pretrained", "study_frozen")  # study_frozen: the study's scratch models
DEFAULT_SETTINGS = ("scratch", "pretrained")
TOP_KEYS = {
    "description",
    "synth",
    "prepare",
    "defaults",
    "runs",
    "parallel_sweeps",
    "ensemble",
    "vary_split",
    "cost",
}
# The cost model of ``benchmark --dry-run``: seconds per epoch of each task on ``gpu`` at the
# config's sizes, start-up seconds per trial, the share of max_epochs an ASHA trial runs.
COST_KEYS = {
    "gpu": str,
    "gpus": int,
    "epoch_s": dict,
    "startup_s": (int, float),
    "asha_epochs": (int, float),
}
INPUTS = ("crop", "whole")  # a classification run's input: a lesion crop, or the whole image
ENSEMBLE_KEYS = {"top_k": int}
SYNTH_KEYS = {"patients": int, "seed": int}
PREPARE_KEYS = {
    "cls_size": int,
    "seg_size": int,
    "det_size": int,
    "lesion_type": str,
    "cls_input": str,
    "label_map": str,
    "shard_size": int,
    "val_fraction": (float, int),
}
SWEEP_KEYS = {
    "samples": int,
    "max_epochs": int,
    "scheduler": str,
    "search": str,
    "grace_epochs": int,
    "reduction_factor": int,
    "workers": int,
    "gpus_per_trial": (int, float),
    "max_failures": int,
    "max_concurrent": int,
    "seeds": int,
    "space": str,
    "fix": dict,
    "train": dict,
}
RUN_KEYS = {"model": str, "task": str, "settings": list, "input": str, "prepare": dict}
RUN_KEYS |= SWEEP_KEYS
SIZE_KEYS = {key: int for key in ("cls_size", "seg_size", "det_size")}  # a run's own sizes
TRAIN_KEYS = {  # training options beside the tunable ones (``orchestration.train.config``)
    "patience": int,
    "bootstrap": int,
    "augment": bool,
    "in_chans": int,
    "encoder": str,
    "detection_classes": str,
    "threshold_rule": str,
}
# The values ``prepare``, ``tune`` and ``train`` accept; numbers within their limits.
CHOICES = {
    "lesion_type": ("mass", "calc", "all"),
    "cls_input": ("crop", "whole"),
    "label_map": ("binary", "3class"),
    "scheduler": ("asha", "fifo"),
    "search": ("random", "optuna"),
    "in_chans": (1, 3),
    "detection_classes": ("lesion", "pathology"),
    "threshold_rule": ("youden", "sens90"),
    "input": INPUTS,
}
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
LIMITS = {
    "patients": (lambda v: v >= 2, "at least 2"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    **dict.fromkeys(("cls_size", "seg_size", "det_size", "shard_size", "bootstrap"), AT_LEAST_1),
    **dict.fromkeys(("samples", "max_epochs", "grace_epochs", "workers", "seeds"), AT_LEAST_1),
    "top_k": AT_LEAST_0,
    "gpus": AT_LEAST_1,
    "startup_s": AT_LEAST_0,
    "asha_epochs": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "max_concurrent": AT_LEAST_1,
    "reduction_factor": (lambda v: v >= 2, "at least 2"),
    **dict.fromkeys(("gpus_per_trial", "max_failures", "patience"), AT_LEAST_0),
}


@dataclass(frozen=True)
class BenchmarkRun:
    """One sweep of a benchmark: an architecture on its task in one setting."""

    model: str
    task: str
    setting: str
    sweep: dict[str, Any]  # SWEEP_KEYS, defaults merged in
    input: str = "crop"  # classification: "crop" (GT-localised lesion) or "whole" (the study's)
    prepare: dict[str, int] = field(default_factory=dict)  # SIZE_KEYS over the config's

    @property
    def key(self) -> str:
        return f"{self.model}-{self.setting}" + ("-whole" if self.input == "whole" else "")


@dataclass(frozen=True)
class Benchmark:
    """A validated benchmark config."""

    name: str
    path: str
    description: str
    prepare: dict[str, Any]
    synth: dict[str, Any] | None
    runs: list[BenchmarkRun]
    parallel_sweeps: int = 1  # sweeps at once (when the cluster fits their trials)
    ensemble_top_k: int = 3  # classifiers averaged by the ensemble row (chosen on validation)
    vary_split: bool = False  # seed repeats also draw a new validation split (prepared again)
    cost: dict[str, Any] | None = None  # the dry run's cost model (COST_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def available_benchmarks() -> list[str]:
    """Names of the benchmark configs shipped in this package."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.yaml") if p.stem != "published")


def load_benchmark(name_or_path: str | Path, models: Mapping[str, str] | None = None) -> Benchmark:
    """Load a shipped benchmark by name, or any benchmark file by path, and validate it.

    Args:
        name_or_path: A shipped benchmark's name, or a YAML file.
        models: Registered architecture -> its task; given, every run's model is checked too.
    """
    path, data = read_yaml(name_or_path, BENCH_DIR, "benchmark", available_benchmarks)
    return _validate(data, path, models)


def published(model: str, setting: str) -> dict[str, float]:
    """The study's published test figures of an architecture in a setting (empty if none)."""
    return dict((_published_table().get(model) or {}).get(setting) or {})


@functools.cache
def _published_table() -> dict[str, Any]:
    return yaml.safe_load((BENCH_DIR / "published.yaml").read_text())


def _validate(data: Any, path: Path, models: Mapping[str, str] | None) -> Benchmark:
    if not isinstance(data, dict):
        raise not_a_mapping(path, "benchmark", TOP_KEYS, data)
    _known(path, "", data, dict.fromkeys(TOP_KEYS, object))
    prepare = _typed(path, "prepare", data.get("prepare") or {}, PREPARE_KEYS)
    synth = _typed(path, "synth", data["synth"], SYNTH_KEYS) if data.get("synth") else None
    defaults = _sweep(path, "defaults", data.get("defaults") or {})
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise SpaceError(f"{path}: runs: must be a non-empty list of {{model, task, ...}}")
    expanded = [run for i, raw in enumerate(runs) for run in _runs(path, i, raw, defaults, models)]
    keys = [run.key for run in expanded]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SpaceError(f"{path}: runs: {twice} listed more than once")
    parallel = data.get("parallel_sweeps", 1)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise SpaceError(f"{path}: parallel_sweeps: {parallel!r} is not a positive integer")
    ensemble = _typed(path, "ensemble", data.get("ensemble") or {}, ENSEMBLE_KEYS)
    cost = _cost(path, data["cost"]) if data.get("cost") else None
    vary_split = data.get("vary_split", False)
    if not isinstance(vary_split, bool):
        raise SpaceError(f"{path}: vary_split: {vary_split!r} is not true or false")
    return Benchmark(
        path.stem,
        str(path),
        str(data.get("description", "")).strip(),
        prepare,
        synth,
        expanded,
        parallel,
        ensemble.get("top_k", 3),
        vary_split,
        cost,
    )


def _cost(path: Path, data: Any) -> dict[str, Any]:
    cost = _typed(path, "cost", data, COST_KEYS)
    for key in ("epoch_s", "startup_s"):
        if key not in cost:
            raise SpaceError(f"{path}: cost.{key}: missing (the dry run's cost model needs it)")
    for task, seconds in cost["epoch_s"].items():
        where = f"{path}: cost.epoch_s.{task}"
        if task not in TASKS:
            raise SpaceError(f"{where}: not one of {list(TASKS)}")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            raise SpaceError(f"{where}: {seconds!r} is not a positive number of seconds")
    return cost


def _runs(
    path: Path, index: int, raw: Any, defaults: dict[str, Any], models: Mapping[str, str] | None
) -> list[BenchmarkRun]:
    where = f"runs[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str) or "task" not in raw:
        raise SpaceError(f"{path}: {where}: needs model and task")
    _known(path, f"{where}.", raw, RUN_KEYS)
    model, task = raw["model"], within(f"{path}: {where}.task", raw["task"], None, TASKS)
    if models is not None and model not in models:
        raise SpaceError(f"{path}: {where}.model: {model!r} is not one of {sorted(models)}")
    if models is not None and models[model] != task:
        raise SpaceError(f"{path}: {where}.task: {task!r}, but {model} is a {models[model]} model")
    settings = raw.get("settings", list(DEFAULT_SETTINGS))
    if not isinstance(settings, list) or not settings or any(s not in SETTINGS for s in settings):
        raise SpaceError(f"{path}: {where}.settings: {settings!r}; use a list of {list(SETTINGS)}")
    run_input = raw.get("input", "crop")
    _typed_value(f"{path}: {where}.input", "input", run_input, str)
    if run_input == "whole" and task != "classification":
        raise SpaceError(f"{path}: {where}.input: 'whole' is for classification runs only")
    own = _sweep(path, where, {k: v for k, v in raw.items() if k in SWEEP_KEYS})
    sweep = defaults | own
    for key in ("fix", "train"):
        sweep[key] = {**defaults.get(key, {}), **own.get(key, {})}
    _check_space(f"{path}: {where}.space", sweep.get("space"), task)
    sizes = _typed(path, f"{where}.prepare", raw.get("prepare") or {}, SIZE_KEYS)
    return [BenchmarkRun(model, task, s, sweep, run_input, sizes) for s in settings]


def _check_space(where: str, name: str | None, task: str) -> None:
    """A space a run names must load and be one of the run's task."""
    if name is None:
        return
    try:
        space = load_space(name)
    except SpaceError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    if space.task != task:
        raise SpaceError(f"{where}: {name!r} is a {space.task} space, the run's task is {task}")


def _sweep(path: Path, where: str, data: Any) -> dict[str, Any]:
    sweep = _typed(path, where, data, SWEEP_KEYS)
    for key, extra in (("fix", {}), ("train", TRAIN_KEYS)):
        options = sweep.get(key) or {}
        for name, value in options.items():
            at = f"{path}: {where}.{key}.{name}"
            if name in TUNABLE:
                options[name] = _check_value(at, name, value)
            elif name in extra:
                options[name] = _typed_value(at, name, value, extra[name])
            else:
                raise SpaceError(f"{at}: unknown setting; allowed: {sorted({*TUNABLE, *extra})}")
    return sweep


def _typed(path: Path, where: str, data: Any, keys: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: {where}: must be a mapping, got {data!r}")
    _known(path, f"{where}.", data, keys)
    for key, value in data.items():
        _typed_value(f"{path}: {where}.{key}", key, value, keys[key])
    return {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}


def _typed_value(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpaceError(f"{where}: {value!r} is not a valid {key}")
    return within(where, value, LIMITS.get(key), CHOICES.get(key))


def _known(path: Path, where: str, data: dict[str, Any], keys: dict[str, Any] | set) -> None:
    unknown = sorted(set(data) - set(keys), key=str)
    if unknown:
        raise SpaceError(f"{path}: {where}{unknown}: unknown key(s); allowed: {sorted(keys)}")
