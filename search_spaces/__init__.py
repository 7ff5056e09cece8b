"""Declarative sweep spaces: YAML files, loaded and validated here; no training code.

A space file names its task and, per tunable setting, one distribution::

    task: classification
    params:
      pretrained: {grid: [true, false]}     # every sample runs once per value
      unfreeze: {choice: [0, study, all]}   # used with pretrained weights only
      lr: {loguniform: [1.0e-5, 1.0e-2]}

Distributions: ``grid`` (exhaustive; its values run in an order drawn from the sweep's seed),
``choice``, ``uniform`` and ``loguniform`` ([low, high]), ``value`` (a constant). ``unfreeze``
takes stage counts, ``all`` and ``study`` (the architecture's setting closest to the study's).
``resolve`` fits a space to one architecture. Values are checked against what training accepts
(``CHOICES``, ``LIMITS``); a key written twice is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_pipeline import TASKS

SPACES_DIR = Path(__file__).resolve().parent
KINDS = ("grid", "choice", "uniform", "loguniform", "value")
TUNABLE = {
    "pretrained": bool,
    "unfreeze": (int, str),
    "lr": float,
    "batch_size": int,
    "weight_decay": float,
    "dropout": float,
    "optimizer": str,
    "schedule": str,
    "balance": str,
}
# The values training accepts (``orchestration.train.config``); numbers within their limits.
CHOICES = {
    "optimizer": ("adam", "adamw"),
    "schedule": ("cosine", "plateau", "none"),
    "balance": ("oversample", "weighted", "none"),
}
LIMITS = {
    "lr": (lambda v: v > 0, "above 0"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "weight_decay": (lambda v: v >= 0, "at least 0"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
TOP_KEYS = {"description", "task", "params"}


class SpaceError(ValueError):
    """A space file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Space:
    """One validated search space: ``params`` maps a setting to ``{kind: values}``."""

    name: str
    path: str
    task: str
    params: dict[str, dict[str, Any]]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as printed by ``--dry-run`` and logged on the sweep's parent run."""
        return {
            "name": self.name,
            "path": self.path,
            "task": self.task,
            "description": self.description,
            "params": self.params,
        }

    def values(self, key: str) -> list[Any] | None:
        """The discrete values of ``key`` (grid, choice or value), None for a range or absence."""
        return _values(self.params.get(key))

    def fix(self, values: dict[str, Any]) -> Space:
        """The space with some settings pinned to one value (a benchmark's ``fix``)."""
        params = dict(self.params)
        for key, value in values.items():
            where = f"{self.path}: fix.{key}"
            if key not in TUNABLE:
                raise SpaceError(f"{where}: unknown setting; tunable: {sorted(TUNABLE)}")
            params[key] = {"value": _check_value(where, key, value)}
        return Space(self.name, self.path, self.task, params, self.description)

    def resolve(
        self, unfreeze_choices: list[int | str], study_unfreeze: int | None, pretrained_ok: bool
    ) -> Space:
        """Fit the space to one architecture.

        ``study`` becomes the architecture's study setting (or is dropped where the study did not
        use it); unfreeze values the architecture lacks are an error. Without obtainable weights
        the pretrained half is dropped: ``pretrained`` becomes ``false`` and ``unfreeze`` goes.
        """
        params = dict(self.params)
        if not pretrained_ok or _values(params.get("pretrained")) == [False]:
            params["pretrained"] = {"value": False}
            params.pop("unfreeze", None)
        if "unfreeze" in params:
            params["unfreeze"] = self._fit_unfreeze(
                params["unfreeze"], unfreeze_choices, study_unfreeze
            )
        return Space(self.name, self.path, self.task, params, self.description)

    def _fit_unfreeze(self, dist: dict[str, Any], choices: list, study: int | None) -> dict:
        kind, values = next(iter(dist.items()))
        listed = values if isinstance(values, list) else [values]
        fitted = []
        for value in listed:
            value = study if value == "study" else value
            if value is None or value in fitted:
                continue
            if value not in choices:
                raise SpaceError(
                    f"{self.path}: params.unfreeze: {value!r} is not a choice of "
                    f"this architecture ({_span(choices)})"
                )
            fitted.append(value)
        return {kind: fitted if isinstance(values, list) else fitted[0]}


def available_spaces() -> list[str]:
    """Names of the spaces shipped in this package."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def default_space(task: str, model: str) -> str:
    """The shipped space of an architecture's family and task."""
    if task not in TASKS:
        raise SpaceError(f"unknown task {task!r}; tasks: {list(TASKS)}")
    if task == "classification":
        return "vit-classification" if model.startswith("vit") else "cnn-classification"
    return task


def load_space(name_or_path: str | Path) -> Space:
    """Load a shipped space by name, or any space file by path, and validate it."""
    path, data = read_yaml(name_or_path, SPACES_DIR, "space", available_spaces)
    return _validate(data, path)


def read_yaml(
    name_or_path: str | Path, shipped_dir: Path, kind: str, available: Callable[[], list[str]]
) -> tuple[Path, Any]:
    """A shipped ``kind`` file by name (``shipped_dir/<name>.yaml``), or any file by path, parsed."""
    path = Path(name_or_path)
    if not path.suffix:
        path = shipped_dir / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SpaceError(f"unknown {kind} {name_or_path!r}; shipped: {available()}")
    if not path.is_file():
        raise SpaceError(f"{path}: no such {kind} file")
    try:
        with open(path, encoding="utf-8") as handle:
            return path, yaml.load(handle, _UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path}: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, but a key written twice in one mapping is an error, not the last wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key.value!r} is given twice", key.start_mark
                    )
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def not_a_mapping(path: Path, kind: str, keys: set[str], data: Any) -> SpaceError:
    """The error of a file that holds no mapping: empty, or a list or a value."""
    found = "the file is empty" if data is None else f"found a {type(data).__name__}"
    return SpaceError(f"{path}: a {kind} file is a mapping with keys {sorted(keys)}; {found}")


def _validate(data: Any, path: Path) -> Space:
    if not isinstance(data, dict):
        raise not_a_mapping(path, "space", TOP_KEYS, data)
    unknown = sorted(set(data) - TOP_KEYS, key=str)
    if unknown:
        raise SpaceError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    if data.get("task") not in TASKS:
        raise SpaceError(f"{path}: task: must be one of {list(TASKS)}, got {data.get('task')!r}")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{path}: params: must be a non-empty mapping of settings")
    checked = {key: _check_param(path, key, dist) for key, dist in params.items()}
    return Space(path.stem, str(path), data["task"], checked, str(data.get("description", "")))


def _check_param(path: Path, key: str, dist: Any) -> dict[str, Any]:
    where = f"{path}: params.{key}"
    if key not in TUNABLE:
        raise SpaceError(f"{where}: unknown setting; tunable: {sorted(TUNABLE)}")
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in KINDS:
        raise SpaceError(f"{where}: must be one of {{kind: values}} with kind in {list(KINDS)}")
    kind, values = next(iter(dist.items()))
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: {kind} needs a non-empty list")
        return {kind: [_check_value(where, key, value) for value in values]}
    if kind == "value":
        return {kind: _check_value(where, key, values)}
    if TUNABLE[key] is not float:
        raise SpaceError(f"{where}: {kind} draws numbers: {key} takes grid, choice or value")
    return {kind: [_check_value(where, key, v) for v in _check_range(where, kind, values)]}


def _check_value(where: str, key: str, value: Any) -> Any:
    expected = TUNABLE[key]
    if expected is float and _number(value) is not None:
        return within(where, _number(value), LIMITS.get(key))
    if key == "unfreeze":
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or value in (
            "all",
            "study",
        )
    else:
        ok = expected is not float and isinstance(value, expected)
        ok = ok and (expected is bool or not isinstance(value, bool))
    if not ok:
        raise SpaceError(f"{where}: {value!r} is not a valid {key}")
    return within(where, value, LIMITS.get(key), CHOICES.get(key))


def within(where: str, value: Any, limit: tuple | None, choices: tuple | None = None) -> Any:
    """``value``, if it is one of ``choices`` and meets ``limit`` (a test and its wording)."""
    if choices is not None and value not in choices:
        raise SpaceError(f"{where}: {value!r} is not one of {list(choices)}")
    if limit is not None and not limit[0](value):
        raise SpaceError(f"{where}: {value!r} must be {limit[1]}")
    return value


def _number(value: Any) -> float | None:
    """A finite number; YAML 1.1 reads ``1e-5`` as text, so numeric text counts too."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check_range(where: str, kind: str, values: Any) -> list[float]:
    bounds = [_number(v) for v in values] if isinstance(values, list) and len(values) == 2 else []
    if len(bounds) != 2 or None in bounds or not bounds[0] < bounds[1]:
        raise SpaceError(f"{where}: {kind} needs [low, high] with low < high, got {values!r}")
    if kind == "loguniform" and bounds[0] <= 0:
        raise SpaceError(f"{where}: loguniform needs a positive low bound, got {values[0]!r}")
    return bounds


def _values(dist: dict[str, Any] | None) -> list[Any] | None:
    if not dist:
        return None
    kind, values = next(iter(dist.items()))
    return values if kind in ("grid", "choice") else [values] if kind == "value" else None


def _span(choices: list) -> str:
    numbers = [c for c in choices if isinstance(c, int)]
    return f"0..{max(numbers)} or all" if numbers else ", ".join(map(str, choices))
