"""Shared fixtures: real CBIS-DDSM reference files and small synthetic downloads."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from data_pipeline.catalog import build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.synth import SynthConfig, make_synthetic

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hubs are unreachable: fail fast, never wait

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
REAL_CSV_DIR = TEST_DATA / "cbis-ddsm"
REFERENCE = REPO.parent / "shared" / "reference" / "cbis-ddsm"


@pytest.fixture(scope="session", autouse=True)
def _work_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """CLI calls that name no work dir write their logs and stores there, not into the
    checkout's ``./runs``."""
    if "MAMMOBENCH_HOME" not in os.environ:
        os.environ["MAMMOBENCH_HOME"] = str(tmp_path_factory.mktemp("home"))


@pytest.fixture(autouse=True)
def _own_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_tracking_uri`` (and ``set_registry_uri``) export MLFLOW_TRACKING_URI (and
    MLFLOW_REGISTRY_URI): a test's store must not become the store of a later test's
    subprocesses (cleared before every test)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


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
    return make_synthetic(tmp_path_factory.mktemp("synth"), SynthConfig(patients=16, seed=3))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session (4 logical CPUs on the 2-core machine)."""
    import ray

    from orchestration.ray_cluster import init_ray

    init_ray(num_cpus=4)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server on loopback (moto's ``ThreadedMotoServer``) and the AWS
    environment that reaches it, set for the rest of the session (restored after it)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,  # MLflow's boto3 client: the same server
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


GCS_BUCKET = "mammobench-gcs"


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory: pytest.TempPathFactory):
    """A GCS emulator on loopback (PyPI's ``gcp-storage-emulator``, a real JSON-API server)
    holding one bucket; ``STORAGE_EMULATOR_HOST`` points at it for the rest of the session."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    cli = Path(sys.executable).parent / "gcp-storage-emulator"
    cmd = [str(cli), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    log = (tmp_path_factory.mktemp("gcs") / "emulator.log").open("w")
    proc = subprocess.Popen([*cmd, f"--default-bucket={GCS_BUCKET}"], stdout=log, stderr=log)
    host, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{host}/storage/v1/b/{GCS_BUCKET}", timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield f"gs://{GCS_BUCKET}"
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def make_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` (at least 3 characters) on the server; its ``s3://`` URI."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


TINY = {"cls_size": 32, "seg_size": 32, "det_size": 64, "shard_size": 16}


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    """40 synthetic patients prepared for every task (12 validation rows per task)."""
    return _prepared(tmp_path_factory, patients=40)


@pytest.fixture(scope="session")
def prepared_cls(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    """60 patients for classification, about a third of the training patients held out: the best
    epoch is chosen on ~46 validation rows. On 12 rows (4 malignant) an epoch that had learnt
    nothing won by a lucky validation AUC in 2 of 4 local runs."""
    return _prepared(tmp_path_factory, patients=60, tasks=("classification",), val_fraction=0.35)


def _prepared(factory: pytest.TempPathFactory, patients: int, **options) -> Path:
    data = make_synthetic(factory.mktemp("synth"), SynthConfig(patients=patients, seed=5))
    cfg, out = PrepareConfig(**TINY, **options), factory.mktemp("prep")
    prepare(build_catalog(data, val_fraction=cfg.val_fraction), out, cfg, print_fn=lambda *_: None)
    return out
