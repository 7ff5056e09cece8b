"""Shared fixtures: real CBIS-DDSM reference files and small synthetic downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hubs are unreachable: fail fast, never wait

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
REAL_CSV_DIR = TEST_DATA / "cbis-ddsm"
REFERENCE = REPO.parent / "shared" / "reference" / "cbis-ddsm"


@pytest.fixture(autouse=True)
def _own_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI: a test's store must not become
    the store of a later test's subprocesses (undone after every test)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def real_csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four official case-description CSVs (and nothing else) in one folder."""
    folder = tmp_path_factory.mktemp("real_csvs")
    for path in REAL_CSV_DIR.glob("*_case_description_*_set.csv"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="session")
def reference_dicoms() -> Path:
    """Real CBIS-DDSM DICOMs from ../shared (CI always has it beside the checkout)."""
    folder = REFERENCE / "dicom"
    assert folder.is_dir(), f"missing {folder}: the shared reference data must sit beside the repo"
    return folder


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CBIS-DDSM download in the NBIA layout with metadata.csv."""
    from data_pipeline.synth import SynthConfig, make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth"), SynthConfig(patients=16, seed=3))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session (4 logical CPUs on the 2-core machine)."""
    import ray

    from orchestration.ray_cluster import init_ray

    init_ray(num_cpus=4)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
