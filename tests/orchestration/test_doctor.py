"""``mammobench doctor`` against the session's local Ray cluster, local storage and sqlite: every
check passes on the embedded default, and each FAIL is produced for real and names its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.doctor import Check, DoctorJob, probe_address, run_doctor
from orchestration.doctor_checks import (
    DOCTOR_EXPERIMENT,
    STORAGE_FIX,
    TRACKING_FIX,
    data_checks,
    probe_node,
    storage_check,
    tracking_checks,
    weights_checks,
)
from orchestration.doctor_gpu import gpu_checks, step_and_evaluate, study_rows
from orchestration.settings import Settings
from search_spaces.benchmarks import load_benchmark
from tests.conftest import free_port

TINY_BENCH = """\
description: the doctor's test config, one classifier at the test fixtures' sizes
prepare: {cls_size: 32, seg_size: 32, det_size: 64, shard_size: 16}
defaults: {samples: 1, max_epochs: 1, scheduler: fifo, gpus_per_trial: 0, fix: {batch_size: 4}}
runs:
  - {model: mobilenetv2, task: classification, settings: [scratch, pretrained]}
"""
CLI = str(Path(sys.executable).parent / "mammobench")
TEXT = {"capture_output": True, "text": True, "timeout": 120}


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(TINY_BENCH)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenetv2's weights file (random weights of the architecture: no hub here)."""
    from models.weights_store import download_weights

    folder = tmp_path_factory.mktemp("weights")
    download_weights(folder, ["mobilenetv2"], lambda s: s.fetch(False), echo=lambda _: None)
    return folder


def _settings(home: Path, **options: str) -> Settings:
    defaults = {"tracking_uri": f"sqlite:///{home / 'mlflow.db'}", "storage": str(home / "res")}
    return Settings(home=home, address=None, **defaults | options)


def test_every_check_passes_on_the_embedded_default(
    ray_local, synthetic_data: Path, weights: Path, bench_file: Path, tmp_path: Path
) -> None:
    job = DoctorJob(_settings(tmp_path), str(bench_file), synthetic_data, str(weights), gpu=True)
    lines: list[str] = []
    checks = {c.name: c for c in run_doctor(job, lines.append)}
    assert lines == [c.line() for c in checks.values()]
    assert {n: c.status for n, c in checks.items() if c.status != "PASS"} == {"gpu": "WARN"}
    assert list(checks) == [
        *("ray", "ray.autoscaler", "ray.fit", "ray.versions", "storage", "tracking"),
        *("tracking.artifacts", "data.access", "prep.access", "data.catalog", "data.files"),
        *("data.rows", "data.prepared", "weights.mobilenetv2", "gpu"),
    ]
    assert "a header read" in checks["data.access"].detail
    assert "seen by the driver" in checks["prep.access"].detail
    assert "not autoscaling" in checks["ray.autoscaler"].detail
    assert "constraints.txt pins ray==" in checks["ray.versions"].detail
    assert "the same node" in checks["storage"].detail
    assert "no GPU in this cluster" in checks["gpu"].detail and checks["gpu"].fix
    assert list((tmp_path / "res").iterdir()) == []  # the probe file was deleted
    client = MlflowClient(job.settings.tracking_uri)
    experiment = client.get_experiment_by_name(DOCTOR_EXPERIMENT)
    assert client.search_runs([experiment.experiment_id]) == []  # logged, then deleted
    artifacts = checks["tracking.artifacts"].detail
    assert (tmp_path / "mlartifacts" / DOCTOR_EXPERIMENT).as_uri() in artifacts


def test_prepared_shards_of_the_config_are_found(
    ray_local, synthetic_data: Path, bench_file: Path, tmp_path: Path
) -> None:
    from orchestration.benchmark_data import prepare_once

    bench = load_benchmark(bench_file)
    out = tmp_path / "prep"
    prepare_once(synthetic_data, out, bench.prepare, lambda _: None, ("classification",))
    (prepared,) = [c for c in data_checks(synthetic_data, bench, out) if c.name == "data.prepared"]
    assert prepared.status == "PASS" and "shards of this config exist" in prepared.detail
    (given,) = data_checks(out, bench, tmp_path / "unused")
    assert given.status == "PASS" and given.detail.startswith(f"prepared shards {out}")
    other = load_benchmark("demo")  # sizes differ, and it asks for tasks these shards lack
    (lacking,) = data_checks(out, other, tmp_path / "unused")
    assert lacking.status == "FAIL" and "no detection, segmentation shards" in lacking.detail


def test_an_unwritable_storage_path_fails_with_its_fix(ray_local, tmp_path: Path) -> None:
    node = probe_node()
    afile = tmp_path / "afile"
    afile.write_text("a regular file, not a folder")
    unwritable = [afile / "ray_results"]
    if os.geteuid() != 0:  # root writes into a 0o500 folder: only a file blocks it there
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable.append(locked / "ray_results")
    for path in unwritable:
        check = storage_check(str(path), node)
        assert check.status == "FAIL" and check.fix == STORAGE_FIX, check.line()
        assert f"{path} not writable from" in check.detail


def test_a_tracking_uri_nothing_listens_on_fails_fast(ray_local, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    (check,) = tracking_checks(_settings(tmp_path, tracking_uri=uri), probe_node())
    assert time.monotonic() - start < 30
    assert check.status == "FAIL" and check.fix == TRACKING_FIX
    assert f"{uri} from" in check.detail and "connection refused" in check.detail


def test_missing_and_corrupted_weights_fail_with_the_download_fix(
    ray_local, weights: Path, bench_file: Path, tmp_path: Path
) -> None:
    bench, node = load_benchmark(bench_file), probe_node()
    missing, corrupted = tmp_path / "missing", tmp_path / "corrupted"
    shutil.copytree(weights, missing)
    shutil.copytree(weights, corrupted)
    (missing / "mobilenetv2.pth").unlink()
    data = bytearray((corrupted / "mobilenetv2.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupted / "mobilenetv2.pth").write_bytes(bytes(data))
    (gone,) = weights_checks(str(missing), bench, node)
    (bad,) = weights_checks(str(corrupted), bench, node)
    assert gone.status == bad.status == "FAIL"
    assert "is missing: run `mammobench weights download" in gone.detail
    assert "does not match its checksum" in bad.detail
    assert f"run `mammobench weights download {corrupted}` where there is internet" in bad.fix
    (unset,) = weights_checks(None, bench, node)
    assert unset.status == "WARN" and "skipped" in unset.detail


def test_a_catalog_with_missing_files_fails(
    synthetic_data: Path, bench_file: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(synthetic_data, tmp_path / "download")
    mammogram = next(p for p in sorted(data.rglob("*.dcm")) if "full mammogram" in str(p))
    mammogram.unlink()
    checks = {c.name: c for c in data_checks(data, load_benchmark(bench_file), tmp_path / "p")}
    files = checks["data.files"]
    assert files.status == "FAIL" and "1 file(s) the CSVs list are missing" in files.detail
    assert f"`mammobench catalog {data}` lists them" in files.fix


def test_gpu_without_a_gpu_warns_and_its_step_runs_on_cpu(bench_file: Path) -> None:
    import torch

    (check,) = gpu_checks(load_benchmark(bench_file), cluster_gpus=0, can_add_gpus=False)
    assert check.status == "WARN" and "no GPU" in check.detail
    rows = {r["arch"]: r for r in study_rows(load_benchmark("study"))}
    assert (rows["vgg16"]["size"], rows["vgg16"]["batch"]) == (224, 32)
    assert (rows["unet"]["size"], rows["unet"]["batch"]) == (512, 8)
    assert (rows["fasterrcnn"]["size"], rows["fasterrcnn"]["batch"]) == (1024, 4)
    row = {"arch": "mobilenetv2", "task": "classification", "size": 32, "batch": 2}
    assert step_and_evaluate(row, torch.device("cpu")) == {"peak_bytes": 0, "rows": 2}


def test_an_address_nothing_listens_on_fails_fast_in_the_cli(
    bench_file: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MAMMOBENCH_HOME": str(tmp_path)}
    start = time.monotonic()
    out = subprocess.run(
        [CLI, "doctor", "--address", address, "--config", bench_file], env=env, **TEXT
    )
    assert time.monotonic() - start < 60
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"FAIL ray: nothing answers at {address}" in out.stdout
    assert "(fix: start the head" in out.stdout and "1 FAIL" in out.stdout


def test_the_cli_exits_zero_when_nothing_fails(
    ray_local: str, weights: Path, bench_file: Path, tmp_path: Path
) -> None:
    cli = [CLI, "doctor", "--address", ray_local, "--config", str(bench_file), "--gpu", "--json"]
    env = {**os.environ, "MAMMOBENCH_HOME": str(tmp_path), "MAMMOBENCH_WEIGHTS_DIR": str(weights)}
    out = subprocess.run(cli, env=env, **TEXT)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = json.loads(out.stdout.strip().splitlines()[-1])
    assert {c["status"] for c in checks} == {"PASS", "WARN"}
    assert f"PASS ray: the cluster at {ray_local} reached" in out.stdout
    assert "WARN gpu: no GPU in this cluster" in out.stdout


def test_lines_and_addresses() -> None:
    assert Check("x", "FAIL", "broken", "mend it").line() == "FAIL x: broken (fix: mend it)"
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", "OK", "")
    assert probe_address(None) == "" and probe_address("auto") == ""
    assert "dashboard (job API) address" in probe_address("http://127.0.0.1:8265")


def test_data_the_nodes_cannot_read_and_a_prep_they_cannot_write_fail(
    ray_local, tmp_path: Path
) -> None:
    from orchestration.doctor_checks import probe_node
    from orchestration.doctor_data import data_access_checks, prep_write_check

    node = probe_node()
    empty = tmp_path / "empty"
    empty.mkdir()
    (check,) = data_access_checks(str(empty), str(tmp_path / "prep"), node)
    assert (check.status, check.name) == ("FAIL", "data.access")
    assert "no case-description CSV" in check.detail and "aws s3 sync" in check.fix
    (check,) = data_access_checks(str(tmp_path / "absent"), str(tmp_path / "prep"), node)
    assert check.status == "FAIL"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = prep_write_check(str(blocker / "prepared"), node)  # a folder under a file
    assert (check.status, check.name) == ("FAIL", "prep.access") and "--prep s3://" in check.fix
    check = prep_write_check(str(tmp_path / "prepared"), node)
    assert check.status == "PASS" and not list((tmp_path / "prepared").iterdir())
