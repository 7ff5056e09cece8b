"""No PHI leaves the headers: a canary in every DICOM PS3.15 Annex E basic-profile attribute the
generator can set, then the whole product (prepare, a sweep, MLflow, the registered model, the
HTML report, the console) and a search for the canary in everything it wrote.

The CSVs' own identifiers (subject names, the UIDs in the download's folder names) are the
dataset's public names and may appear in paths; values read from the headers may not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import ray
from mlflow.tracking import MlflowClient

from data_pipeline.synth import SynthConfig, make_synthetic

CANARY = "QZCANARY"
# Annex E basic profile, text attributes (names, IDs, addresses, institution, physicians...)
TEXT = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "SeriesDescription",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "ProtocolName",
    "ImageComments",
    "RequestAttributesSequence",
)
DATES = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
TIMES = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "PatientBirthTime")
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
CANARY_DATE, CANARY_TIME, UID_ROOT = "18870913", "134711.4242", "2.25.987654321987654321"
BENCH = """description: PHI canary run (one tiny sweep)
prepare: {cls_size: 32, seg_size: 32, det_size: 64, shard_size: 16, val_fraction: 0.3}
defaults:
  samples: 1
  max_epochs: 1
  scheduler: fifo
  max_failures: 0
  fix: {lr: 1.0e-3, batch_size: 8}
  train: {bootstrap: 20}
runs:
  - {model: mobilenetv2, task: classification, settings: [scratch]}
"""


def _plant(path: Path, index: int) -> list[str]:
    """Canaries in the file's header; returns the values a leak would show."""
    ds = pydicom.dcmread(path)
    for n, keyword in enumerate(TEXT):
        if keyword.endswith("Sequence"):
            continue
        setattr(ds, keyword, f"{CANARY}{n:02d}")
    ds.InstitutionName = CANARY * 10  # longer than LO allows: pydicom warns, quoting it
    for keyword in DATES:
        setattr(ds, keyword, CANARY_DATE)
    for keyword in TIMES:
        setattr(ds, keyword, CANARY_TIME)
    uids = [f"{UID_ROOT}.{index}.{n}" for n in range(len(UIDS))]
    for keyword, uid in zip(UIDS, uids, strict=True):
        setattr(ds, keyword, uid)
    # not a valid UID: pydicom warns on reading the file meta, quoting the value
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.{CANARY}"
    block = ds.private_block(0x0099, "MAMMOBENCH CANARY", create=True)
    block.add_new(0x01, "LO", f"{CANARY}PRIVATE")
    ds.save_as(path, enforce_file_format=True)
    return uids


def _leaks(blob: bytes) -> list[str]:
    needles = [CANARY, CANARY_DATE, CANARY_TIME, UID_ROOT]
    return [n for n in needles if n.encode() in blob or n.encode("utf-16-le") in blob]


def test_no_header_value_reaches_any_output(tmp_path: Path, ray_local: str) -> None:
    data = make_synthetic(tmp_path / "data", SynthConfig(patients=14, seed=11, size=(128, 96)))
    for index, path in enumerate(sorted(data.rglob("*.dcm"))):
        _plant(path, index)
    broken = sorted(data.rglob("*.dcm"))[5]  # a damaged file's reason must not leak either
    broken.write_bytes(broken.read_bytes()[:-3000])
    (tmp_path / "canary.yaml").write_text(BENCH)
    home = tmp_path / "home"
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(home)}
    config = str(tmp_path / "canary.yaml")
    cmd = [str(Path(sys.executable).parent / "mammobench"), "benchmark", "--config", config]
    cmd += ["--data", str(data), "--name", "canary", "--json"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not _leaks((run.stdout + run.stderr).encode()), "console"
    written = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in written) and any(p.suffix == ".db" for p in written)
    assert any(p.name == "quarantine.csv" for p in written)
    for path in written:
        assert not _leaks(path.read_bytes()), path
    _check_shards(home)
    _check_mlflow(home)
    _check_ray_logs()


def _check_shards(home: Path) -> None:
    """Every value of every shard column, read with pyarrow (PNG bytes decompressed aside)."""
    shards = list(home.rglob("*.parquet"))
    assert shards
    for shard in shards:
        for row in pq.read_table(shard).to_pylist():
            text = repr({k: v for k, v in row.items() if not isinstance(v, bytes)})
            assert not _leaks(text.encode()), shard


def _check_mlflow(home: Path) -> None:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert runs
    for run in runs:
        values = [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics]
        assert not _leaks(repr(values).encode()), run.info.run_name
    models = client.search_registered_models()
    assert models
    for model in models:
        for version in client.search_model_versions(f"name = '{model.name}'"):
            assert not _leaks(repr((version.tags, version.description)).encode())


def _check_ray_logs() -> None:
    """The Ray workers' logs of this session (prepare's and the trials' output)."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    files = [p for p in logs.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")]
    assert files
    for path in files:
        assert not _leaks(path.read_bytes()), path
