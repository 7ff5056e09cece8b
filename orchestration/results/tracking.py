"""MLflow tracking: the one module that imports mlflow.

A sweep is a parent run; each Tune trial is a child run (``mlflow.parentRunId``) created and
updated by ``TrialTracker``, a Tune callback that runs in the sweep's driver, so one process
writes the store. Child runs are keyed by trial id: a resumed sweep reopens them instead of
creating duplicates, and runs a killed driver left RUNNING are marked FAILED first.

MLflow I/O only: whoever owns a checkpoint or builds a figure hands this module the files and
figures to log (``TrialTracker(artifacts=...)``, ``SweepRun.finish(figures=...)``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import re
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from data_pipeline.storage import Store
from orchestration.train.config import TrainConfig

if TYPE_CHECKING:
    import torch

# Run tags, one name each: the sweep/benchmark tree, what a run trained, and why it ended
SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "mammobench.sweep", "mammobench.trial_id", "mlflow.parentRunId"
KIND_TAG, BEST_TAG = "mammobench.kind", "mammobench.best_trial_id"
BENCH_TAG, CONFIG_TAG = "mammobench.benchmark", "mammobench.config"
MODEL_TAG, TASK_TAG, SETTING_TAG = "mammobench.model", "mammobench.task", "mammobench.setting"
FINGERPRINT_TAG = "mammobench.dataset_fingerprint"
INPUT_TAG, THRESHOLD_TAG = "mammobench.input", "mammobench.threshold_rule"
VS_BEST_TAG, SEEDS_TAG = "mammobench.vs_best", "mammobench.test_seeds"
VS_SCRATCH_TAG = "mammobench.vs_scratch"  # a pretrained classifier against its scratch twin
MEMBERS_TAG = "mammobench.ensemble_members"
PREDICTIONS = "predictions/{split}.csv"  # a classifier sweep's best model, row by row
SKIP_TAG, ERROR_TAG = "mammobench.skipped", "mammobench.error"
SKIPPED_PRETRAINED_TAG = "mammobench.skipped_pretrained"
INTERRUPTED_TAG = "mammobench.interrupted"
STOPPED_EARLY_TAG, STOPPED_BY_TAG = "mammobench.stopped_early", "mammobench.stopped_by"
ERROR_FILE = "error.txt"  # a failed sweep's traceback
NAME_TAGS = {"sweep": SWEEP_TAG, "benchmark": BENCH_TAG, "ensemble": SWEEP_TAG}
PACKAGES = (
    "mammobench",
    "ray",
    "torch",
    "torchvision",
    "timm",
    "segmentation-models-pytorch",
    "mlflow",
    "pydicom",
    "albumentations",
)

# What a finished trial leaves: (artifact path, local file or figure) pairs, from whoever owns
# its checkpoint; called with the trial's job and its checkpoint path
Artifact = tuple[str, "Path | Figure"]
TrialArtifacts = Callable[[TrainConfig, str], Iterator[Artifact]]


def client_for(tracking_uri: str) -> MlflowClient:
    """A client of the store; creates a local sqlite database (once, in this driver)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    client.search_experiments(max_results=1)  # runs the schema migration before any trial
    return client


# The MLflow UI (3.x) opens an experiment in its GenAI view (traces, token usage) unless this tag
# says it is model training; the value is the UI's own (its bundle; not in MLflow's Python API).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The experiment called ``name``, created on first use (artifacts under the work dir) and
    tagged as model training, so the UI opens it on its runs."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get("mlflow.experimentKind") is None:  # made by an older mammobench
            client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return found.experiment_id
    location = artifact_root.joinpath(name).as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


SOURCE_TAGS = {"mlflow.source.type": "JOB", "mlflow.source.name": "mammobench"}  # the UI's Source


def provenance_tags(fingerprint: str) -> dict[str, str]:
    """Git commit, dataset fingerprint and package versions, for the parent run."""
    tags = {FINGERPRINT_TAG: fingerprint, **SOURCE_TAGS}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    for name in PACKAGES:
        try:
            tags[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return tags


@functools.cache
def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` strings, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:6000]
    return flat


def scalar_metrics(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers in ``data`` (nested dicts flattened, [lo, hi] CIs split)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= scalar_metrics(value, f"{name}_")
        elif key.endswith("_ci") and isinstance(value, list | tuple) and len(value) == 2:
            out |= {f"{name}_low": float(value[0]), f"{name}_high": float(value[1])}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return {_metric_name(k): v for k, v in out.items() if math.isfinite(v)}


def _metric_name(name: str) -> str:
    """MLflow's allowed characters only (``sens@1fp`` -> ``sens_1fp``)."""
    return re.sub(r"[^\w./\- :]", "_", name)


def _log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Log params not yet on the run (MLflow refuses to change a logged param)."""
    have = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for start in range(0, len(new), 100):
        client.log_batch(run_id, params=new[start : start + 100])


class SweepRun:
    """The parent run of one sweep (nested under a benchmark run when ``parent`` is given), or
    of a whole benchmark (``kind="benchmark"``)."""

    def __init__(self, client: MlflowClient, experiment: str, run_id: str) -> None:
        self.client, self.experiment_id, self.run_id = client, experiment, run_id

    @classmethod
    def open(
        cls,
        client: MlflowClient,
        experiment: str,
        name: str,
        *,
        resume: bool,
        parent: str | None = None,
        tags: dict[str, str] | None = None,
        kind: str = "sweep",
    ) -> SweepRun:
        """Start the parent run, or reopen it on ``resume`` (leftover RUNNING trials -> FAILED)."""
        found = find_runs(client, experiment, {NAME_TAGS[kind]: name, KIND_TAG: kind})
        if found and not resume:
            raise ValueError(f"a {kind} named {name!r} exists: pass --resume, or another --name")
        if found:
            sweep = cls(client, experiment, found[0].info.run_id)
            client.update_run(sweep.run_id, status="RUNNING")
            sweep.fail_leftovers()
            return sweep
        all_tags = {NAME_TAGS[kind]: name, KIND_TAG: kind, **SOURCE_TAGS, **(tags or {})}
        if parent:
            all_tags[PARENT_TAG] = parent
        run = client.create_run(experiment, run_name=name, tags=all_tags)
        return cls(client, experiment, run.info.run_id)

    def fail_leftovers(self) -> int:
        """Child runs a killed driver left RUNNING end FAILED; returns how many."""
        stale = find_runs(
            self.client, self.experiment_id, {PARENT_TAG: self.run_id}, status="RUNNING"
        )
        for run in stale:
            self.client.set_tag(run.info.run_id, INTERRUPTED_TAG, "driver killed")
            self.client.set_terminated(run.info.run_id, "FAILED")
        return len(stale)

    def log_space(self, space: dict[str, Any], settings: dict[str, Any]) -> None:
        """The sweep's space and settings as params, the space also as ``space.yaml``."""
        self.log_config({"space": space["params"], **settings}, space, "space.yaml")

    def log_config(self, params: dict[str, Any], document: dict[str, Any], file: str) -> None:
        """Settings as (flattened) params, and a whole document as a YAML artifact."""
        _log_params(self.client, self.run_id, flatten(params))
        self.client.log_text(self.run_id, yaml.safe_dump(document, sort_keys=False), file)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Figures of the whole run (step 0)."""
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])

    def tag(self, tags: dict[str, str]) -> None:
        """Set tags on the parent run."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def children(self) -> list[Any]:
        """The sweep's trial runs."""
        return find_runs(self.client, self.experiment_id, {PARENT_TAG: self.run_id})

    def trial_curves(self, metric: str) -> tuple[list[dict[str, Any]], dict[str, list]]:
        """Each trial's best ``metric`` (rows: name, value, pretrained) and its per-epoch history,
        for the sweep's comparison figures."""
        children = sorted(self.children(), key=lambda run: run.info.run_name)
        rows = [
            {
                "name": run.info.run_name,
                "value": run.data.metrics[f"best_{metric}"],
                "pretrained": run.data.params.get("pretrained") == "True",
            }
            for run in children
            if f"best_{metric}" in run.data.metrics
        ]
        histories = {
            run.info.run_name: [
                (m.step, m.value) for m in self.client.get_metric_history(run.info.run_id, metric)
            ]
            for run in children
        }
        return rows, histories

    def finish(
        self,
        summary: dict[str, Any],
        status: str = "FINISHED",
        figures: dict[str, Figure] | None = None,
    ) -> None:
        """Best trial's params, test metrics, usage and stage timings (``time_<stage>_s``) and the
        sweep's ``figures``; then end the run."""
        best = summary.get("best") or {}
        _log_params(self.client, self.run_id, flatten(best.get("params", {}), "best."))
        metrics = (
            scalar_metrics(best.get("test", {}), "test_")
            | scalar_metrics(best.get("val", {}), "val_")
            | scalar_metrics(summary.get("usage", {}))
            | scalar_metrics(summary.get("seeds", {}))
            | scalar_metrics(summary.get("timings", {}), "time_")
        )
        if best.get("trial_id"):
            self.client.set_tag(self.run_id, BEST_TAG, best["trial_id"])
        self.log_metrics(metrics)
        for path, figure in (figures or {}).items():
            self.client.log_figure(self.run_id, figure, path)
        self.client.set_terminated(self.run_id, status)

    def register_model(
        self,
        name: str,
        model: torch.nn.Module,
        cfg: TrainConfig,
        test: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str:
        """Log the best model on the parent run as a pyfunc model from code (its preprocessing,
        labels and the operating point chosen on validation inside) and register it with its
        test metrics (and ``tags``)."""
        from orchestration.serving.package import log_pyfunc

        mlflow.start_run(run_id=self.run_id, experiment_id=self.experiment_id)
        try:
            info = log_pyfunc(model, cfg, test.get("threshold"), registered_model_name=name)
        finally:  # still running: ``finish`` ends it after the test metrics, with its real status
            mlflow.end_run(status="RUNNING")
        version = str(info.registered_model_version)
        for key, value in scalar_metrics(test, "test_").items():
            self.client.set_model_version_tag(name, version, key, f"{value:.4f}")
        self.client.set_model_version_tag(name, version, "sweep_run_id", self.run_id)
        for key, value in (tags or {}).items():
            self.client.set_model_version_tag(name, version, key, value)
        return version


def find_runs(
    client: MlflowClient, experiment: str, tags: dict[str, str], status: str | None = None
) -> list[Any]:
    """Runs of an experiment carrying all ``tags`` (newest first)."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    return client.search_runs(
        [experiment],
        " and ".join(clauses),
        max_results=10000,
        order_by=["attributes.start_time DESC"],
    )


def record_outcome(
    client: MlflowClient,
    experiment: str,
    name: str,
    parent: str,
    tags: dict[str, str],
    *,
    skipped: str | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> str:
    """A sweep that could not run (``skipped``: no weights) or broke (``error``): its parent run
    (created if the sweep never got that far) ends saying why; ``detail`` (a traceback) is kept
    as the run's ``error.txt``."""
    found = find_runs(client, experiment, {SWEEP_TAG: name, KIND_TAG: "sweep"})
    if found:
        run_id = found[0].info.run_id
    else:
        all_tags = {SWEEP_TAG: name, KIND_TAG: "sweep", PARENT_TAG: parent, **tags}
        run_id = client.create_run(experiment, run_name=name, tags=all_tags).info.run_id
    client.set_tag(run_id, SKIP_TAG if skipped else ERROR_TAG, (skipped or error or "")[:5000])
    if detail:
        client.log_text(run_id, detail, ERROR_FILE)
    client.set_terminated(run_id, "FINISHED" if skipped else "FAILED")
    return run_id


def sweep_done(client: MlflowClient, experiment: str, name: str) -> bool:
    """Whether a sweep of this name finished (a skipped one is checked again)."""
    found = find_runs(client, experiment, {SWEEP_TAG: name, KIND_TAG: "sweep"})
    return bool(found) and found[0].info.status == "FINISHED" and SKIP_TAG not in found[0].data.tags


def log_files(client: MlflowClient, run_id: str, paths: list[Path]) -> None:
    """Attach local files to a run."""
    for path in paths:
        client.log_artifact(run_id, str(path))


def log_datasets(
    client: MlflowClient, run_id: str, cfg: TrainConfig, splits: tuple[str, ...]
) -> None:
    """The prepared data a run read, as MLflow datasets (the UI's Dataset column): one per
    split (its context), the prepared folder as source, the manifest's fingerprint as digest.

    Runs created at once (a benchmark's sweeps in threads) may insert the same dataset together:
    MLflow 3.17 checks before it inserts, so all but one fail on the unique key; they try again
    and find it.
    """
    inputs = _dataset_inputs(cfg, splits)
    for attempt in range(1, 6):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt == 5 or not _duplicate_key(exc):
                raise
            time.sleep(0.05 * attempt)


def _duplicate_key(exc: Exception) -> bool:
    text = str(exc)
    return "UNIQUE constraint failed" in text or "duplicate key value" in text


def _dataset_inputs(cfg: TrainConfig, splits: tuple[str, ...]) -> list[Any]:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    try:  # a job always has one; a tracker's test may not
        fingerprint = json.loads(Store.at(cfg.data).read_bytes("manifest.json")).get("fingerprint")
    except FileNotFoundError:
        fingerprint = None
    digest = str(fingerprint or "unprepared")[:36]
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local folder
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(cfg.data))
    return [
        DatasetInput(
            dataset=MetaDataset(
                source, f"cbis-ddsm-{cfg.task}-{split}", digest
            )._to_mlflow_entity(),
            tags=[InputTag("mlflow.data.context", split)],
        )
        for split in splits
    ]


def log_predictions(client: MlflowClient, run_id: str, tables: dict[str, dict[str, list]]) -> None:
    """A classifier's predictions per split (``predictions/<split>.csv``, one row a case)."""
    import pandas as pd

    for split, table in tables.items():
        text = pd.DataFrame(table).to_csv(index=False)
        client.log_text(run_id, text, PREDICTIONS.format(split=split))


def read_predictions(client: MlflowClient, run_id: str, split: str, tmp: Path):
    """A run's ``predictions/<split>.csv`` as a DataFrame (ids as text), or None."""
    import pandas as pd

    path = fetch_artifact(client, run_id, PREDICTIONS.format(split=split), tmp / run_id / split)
    if path is None:
        return None
    frame = pd.read_csv(path, dtype={"key": str, "patient_id": str})
    return frame.astype({"positive": bool, "score": float})


def fetch_artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """Download one artifact of a run, or None when the run has no such artifact."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


class TrialTracker(Callback):
    """Tune callback: one child run per trial, per-epoch metrics, artifacts at the end.

    ``artifacts`` (a picklable function, e.g. a ``functools.partial``) lists what a finished
    trial leaves; without it none are logged. Pickled with the Tuner (and restored by
    ``Tuner.restore``): it keeps only plain settings and reconnects to the store lazily.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent: str,
        base: dict[str, Any],
        artifacts: TrialArtifacts | None = None,
    ) -> None:
        self.tracking_uri, self.experiment, self.parent = tracking_uri, experiment, parent
        self.base, self.artifacts = base, artifacts
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._epochs: dict[str, set[int]] = {}  # run id -> epochs logged

    def __getstate__(self) -> dict[str, Any]:
        skip = ("_client", "_runs", "_epochs")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _client=None, _runs={}, _epochs={})

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def config_of(self, trial) -> TrainConfig:
        """The training job a trial runs."""
        return TrainConfig.for_trial(self.base, trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._run_of(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        """Log each epoch once: epochs re-sent after a restart (``history``) fill the gaps a
        killed driver left; an epoch already in the run is not logged again."""
        run_id = self._run_of(trial)
        stamp = int(result.get("timestamp", 0)) * 1000
        logged = self._logged_epochs(run_id)
        for record in [*result.get("history", ()), result]:
            step = int(record.get("epoch", record.get("training_iteration", 0)))
            if step in logged:
                continue
            metrics = [Metric(k, v, stamp, step) for k, v in _epoch_values(record).items()]
            self.client.log_batch(run_id, metrics=metrics)
            logged.add(step)
        if "trainable_params" in result:
            _log_params(self.client, run_id, {"trainable_params": str(result["trainable_params"])})

    def _logged_epochs(self, run_id: str) -> set[int]:
        if run_id not in self._epochs:
            history = self.client.get_metric_history(run_id, "epoch")
            self._epochs[run_id] = {m.step for m in history}
        return self._epochs[run_id]

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self._run_of(trial)
        result = trial.last_result or {}
        stopped = not result.get("completed", False)
        self.client.set_tag(run_id, STOPPED_EARLY_TAG, str(stopped).lower())
        if stopped:
            self.client.set_tag(run_id, STOPPED_BY_TAG, "scheduler (ASHA)")
        if self.artifacts and result.get("checkpoint_path"):
            artifacts = self.artifacts(self.config_of(trial), result["checkpoint_path"])
            log_artifacts(self.client, run_id, artifacts)
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self._run_of(trial)
        self.client.set_tag(run_id, ERROR_TAG, str(getattr(trial, "error_file", "")))
        self.client.set_terminated(run_id, "FAILED")

    def _run_of(self, trial) -> str:
        """The trial's child run: found by trial id (resumed sweeps) or created once."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = find_runs(
            self.client, self.experiment, {PARENT_TAG: self.parent, TRIAL_TAG: trial.trial_id}
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            cfg = self.config_of(trial)
            tags = {PARENT_TAG: self.parent, TRIAL_TAG: trial.trial_id, KIND_TAG: "trial"}
            commit = _git_commit()
            tags |= SOURCE_TAGS | ({"mlflow.source.git.commit": commit} if commit else {})
            run_id = self.client.create_run(
                self.experiment, run_name=trial_run_name(cfg, trial), tags=tags
            ).info.run_id
            log_datasets(self.client, run_id, cfg, ("train", "val"))
            _log_params(self.client, run_id, flatten(cfg.to_dict()) | {"trial_id": trial.trial_id})
            self.client.log_text(run_id, yaml.safe_dump(cfg.to_dict()), "config.yaml")
        self._runs[trial.trial_id] = run_id
        return run_id


_EPOCH_KEYS = ("epoch", "train_loss", "lr", "start_epoch", "first_step_s", "train_images_per_s")
_EPOCH_PREFIXES = ("val_", "best_", "epoch_", "startup_")  # epoch_s, epoch_first_batch_s, ...


def _epoch_values(result: dict[str, Any]) -> dict[str, float]:
    """The per-epoch metrics of a trial's result (scores, timings, this attempt's start-up)."""
    keep = {k: v for k, v in result.items() if k in _EPOCH_KEYS or k.startswith(_EPOCH_PREFIXES)}
    return scalar_metrics(keep)


def trial_run_name(cfg: TrainConfig, trial) -> str:
    """``<model>-<pretrained-uN|scratch>-lr<lr>-<trial suffix>``."""
    setting = f"pretrained-u{cfg.unfreeze}" if cfg.pretrained else "scratch"
    setting += f"-frozen-u{cfg.unfreeze}" if cfg.freeze_scratch and not cfg.pretrained else ""
    return f"{cfg.model}-{setting}-lr{cfg.lr:.1e}-{trial.trial_id.split('_')[-1]}"


def log_artifacts(client: MlflowClient, run_id: str, artifacts: Iterator[Artifact]) -> None:
    """Log files (under their artifact folder) and figures (at their artifact path)."""
    for path, item in artifacts:
        if isinstance(item, Path):
            client.log_artifact(run_id, str(item), path)
        else:
            client.log_figure(run_id, item, path)
