"""The registered model is code, not a pickle: it loads from ``models:/``, reads a real CBIS-DDSM
DICOM as ``prepare`` does, and ``mammobench predict`` / ``evaluate`` use it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from data_pipeline.dicom import read_image
from data_pipeline.dicom_write import write_dicom
from data_pipeline.transforms import encode_png, whole_image
from models import build_model
from orchestration.cli import app
from orchestration.results.tracking import SweepRun, client_for, experiment_id
from orchestration.train.config import TrainConfig
from orchestration.train.tasks import collate, model_input
from tests.conftest import REFERENCE

NAME = "mammobench-mobilenetv2-classification"
CROP = REFERENCE / "dicom" / "native_crop" / "Mass-Test_P_00820_LEFT_CC_crop1024_r2001_c155.dcm"
WHOLE = REFERENCE / "dicom" / "downsampled4x" / "Mass-Test_P_00173_LEFT_CC_ds4_EVRLE.dcm"
THRESHOLD = 0.4


@pytest.fixture(scope="module")
def registered(prepared_small: Path, tmp_path_factory: pytest.TempPathFactory):
    """A classifier registered as a sweep registers its best model; its store's URI."""
    home = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    cfg = TrainConfig(model="mobilenetv2", data=str(prepared_small)).with_manifest()
    torch.manual_seed(0)
    model = build_model(cfg.model_spec()).eval()
    client = client_for(uri)
    run = SweepRun.open(
        client, experiment_id(client, "sweeps", home / "artifacts"), "s", resume=False
    )
    run.register_model(NAME, model, cfg, {"auc": 0.5, "threshold": THRESHOLD})
    # a kill here must not leave a "finished" sweep without its test metrics
    assert client.get_run(run.run_id).info.status == "RUNNING"
    run.finish({"best": {"test": {"auc": 0.5}}})
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics["test_auc"] == 0.5
    return {"uri": uri, "model": model, "cfg": cfg, "home": home}


def _load(registered) -> mlflow.pyfunc.PyFuncModel:
    mlflow.set_tracking_uri(registered["uri"])
    return mlflow.pyfunc.load_model(f"models:/{NAME}/1")


def _training_path_probs(registered, image: np.ndarray) -> np.ndarray:
    """What the network gives for ``image`` prepared as ``prepare`` and training see it."""
    cfg = registered["cfg"]
    prepared = whole_image(image, cfg.image_size, 2.0)
    batch = collate({"image": prepared[None, None], "label": [0], "patient_id": ["p"]})
    with torch.no_grad():
        logits = registered["model"](model_input(batch, cfg.in_chans))
    return torch.softmax(logits, dim=1)[0].numpy()


def test_registered_model_is_code_and_weights_with_a_signature(registered) -> None:
    client = client_for(registered["uri"])
    version = client.get_model_version(NAME, "1")
    folder = Path(
        mlflow.artifacts.download_artifacts(version.source, tracking_uri=registered["uri"])
    )
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert "pickle_module_name" not in json.dumps(mlmodel)
    assert not any(f.endswith((".pkl", ".pickle", ".pt", ".pth")) for f in files), files
    assert {"artifacts/model.safetensors", "artifacts/spec.json", "pyfunc_model.py"} <= files
    assert "code/models/registry.py" in files and "code/data_pipeline/dicom.py" in files
    assert mlmodel["signature"]["inputs"] and "input_example.json" in files
    spec = json.loads((folder / "artifacts" / "spec.json").read_text())
    assert spec["threshold"] == THRESHOLD and spec["labels"] == ["BENIGN", "MALIGNANT"]
    assert spec["preprocess"]["size"] == registered["cfg"].image_size


def test_a_real_dicom_is_read_and_prepared_as_prepare_does(registered) -> None:
    model = _load(registered)
    out = model.predict(pd.DataFrame({"image": [CROP.read_bytes(), WHOLE.read_bytes()]}))
    assert len(out) == 2
    for row, path in zip(out.to_dict("records"), (CROP, WHOLE), strict=True):
        expected = _training_path_probs(registered, read_image(path))
        assert row["prob_benign"] == pytest.approx(expected[0], abs=1e-5)
        assert row["prob_malignant"] == pytest.approx(expected[1], abs=1e-5)
        malignant = row["malignant_probability"] >= THRESHOLD
        assert row["label"] == ("MALIGNANT" if malignant else "BENIGN")
        assert row["threshold"] == THRESHOLD


def test_monochrome1_and_png_inputs_give_the_same_answer(registered, tmp_path: Path) -> None:
    """The same pixels stored inverted (MONOCHROME1) or as a 16-bit PNG: the same output."""
    pixels = read_image(CROP)  # 16-bit stored values, MONOCHROME2
    inverted = write_dicom(
        tmp_path / "m1.dcm", (65535 - pixels).astype(np.uint16), photometric="MONOCHROME1"
    )
    files = [CROP.read_bytes(), inverted.read_bytes(), encode_png(pixels)]
    out = _load(registered).predict(pd.DataFrame({"image": files}))
    assert np.allclose(out["prob_malignant"], out["prob_malignant"][0], atol=1e-6)


def test_predict_prints_one_json_line_per_file(registered, tmp_path: Path) -> None:
    png = tmp_path / "crop.png"
    png.write_bytes(encode_png(read_image(CROP)))
    args = ["--tracking-uri", registered["uri"], "predict", f"models:/{NAME}/1"]
    ok = CliRunner().invoke(app, [*args, str(CROP), str(png)])
    assert ok.exit_code == 0, ok.output
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(CROP), str(png)]
    assert all(0 <= line["prob_malignant"] <= 1 for line in lines)

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    failed = CliRunner().invoke(app, [*args, str(bad), str(CROP)])
    assert failed.exit_code == 1
    first, second = (json.loads(line) for line in failed.stdout.splitlines())
    assert first["file"] == str(bad) and "neither a DICOM file nor an image" in first["error"]
    assert "label" in second


def test_evaluate_scores_prepared_data_at_the_stored_threshold(
    registered, prepared_small: Path, tmp_path: Path
) -> None:
    args = ["--tracking-uri", registered["uri"], "evaluate", f"models:/{NAME}/1"]
    result = CliRunner().invoke(app, [*args, "--data", str(prepared_small), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.splitlines()[-1])
    assert scores["threshold"] == THRESHOLD and scores["n"] > 0
    assert len(scores["auc_ci"]) == 2 and "sensitivity" in scores
    run = client_for(registered["uri"]).get_run(scores["run_id"])
    assert run.data.metrics["test_auc"] == pytest.approx(scores["auc"])

    manifest = json.loads((prepared_small / "manifest.json").read_text())
    manifest["config"]["cls_size"] = 64  # other data, prepared at another size
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    other = CliRunner().invoke(app, [*args, "--data", str(tmp_path)])
    assert other.exit_code == 2 and "prepared at 64 px" in other.output


@pytest.mark.parametrize(
    ("model", "task", "options"),
    [
        ("unet", "segmentation", {"encoder": "resnet18"}),
        ("fasterrcnn_mobilenet", "detection", {}),
    ],
)
def test_a_segmenter_and_a_detector_answer_in_the_files_own_pixels(
    model: str, task: str, options: dict, prepared_small: Path, tmp_path: Path
) -> None:
    """Masks come back at the DICOM's own size, boxes in its own pixel coordinates."""
    from PIL import Image

    cfg = TrainConfig(model=model, data=str(prepared_small), task=task, **options)
    cfg = cfg.with_manifest()
    torch.manual_seed(0)
    net = build_model(cfg.model_spec()).eval()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    run = SweepRun.open(client, experiment_id(client, "s", tmp_path / "a"), "s", resume=False)
    name = f"mammobench-{model}-{task}"
    run.register_model(name, net, cfg, {})
    out = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(
        pd.DataFrame({"image": [WHOLE.read_bytes()]})
    )
    height, width = read_image(WHOLE).shape
    row = out.iloc[0]
    if task == "segmentation":
        mask = np.asarray(Image.open(io.BytesIO(row["mask_png"])))
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert 0.0 <= row["lesion_fraction"] <= 1.0
    else:
        assert len(row["boxes"]) == len(row["scores"]) == len(row["labels"]) > 0, row
        for x0, y0, x1, y1 in row["boxes"]:
            assert 0 <= x0 <= x1 <= width + 1 and 0 <= y0 <= y1 <= height + 1
