"""The benchmark's stages on a 3-node Ray cluster whose nodes share nothing but a bucket.

A real S3-protocol server (moto's ``ThreadedMotoServer``) on loopback holds a small CBIS-DDSM
download of real mammograms (``tests/realdata.py``: the eight reference DICOMs, EVRLE and RLE,
under real case-description rows). A simulated cluster (``ray.cluster_utils.Cluster``: a head that
runs no task and two 3-CPU worker nodes) runs, through the CLI as a user would: ``doctor`` (the
nodes read DATA and write PREP), ``prepare`` from the bucket to the bucket, ``train`` and a
two-trial ``tune`` reading the shards from the bucket, checkpoints in the bucket (``--storage
s3://``) and MLflow artifacts in the bucket through a real ``mlflow server --artifacts-destination
s3://`` on loopback. Nothing of it may land on a local disk, and the shards equal those of a
local-disk run of the same download.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from data_pipeline.catalog import build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.storage import Store
from tests.conftest import free_port, make_bucket
from tests.realdata import VAL_FRACTION, make_real_tree

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "mammobench-ci"
SIZES = {"cls_size": 32, "seg_size": 32, "det_size": 64, "shard_size": 2}
TWO_TRIALS = """task: classification
params:
  pretrained: {value: false}
  lr: {grid: [3.0e-3, 1.0e-3]}
"""
CLUSTER = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_tasks

temp, port = sys.argv[1], int(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp,
                                                       "dashboard_port": port})
workers = [cluster.add_node(num_cpus=3) for _ in range(2)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address,
                  "workers": [n.node_id for n in workers]}), flush=True)
sys.stdin.readline()  # the test is done with the cluster: say where things ran, then stop
ray.init(address=cluster.address)
ran = {"tasks": {}, "actors": {}}
for task in list_tasks(limit=10000, raise_on_missing_output=False):
    ran["tasks"].setdefault(task.name, []).append(task.node_id)
for actor in list_actors(limit=10000, raise_on_missing_output=False):
    ran["actors"].setdefault(actor.class_name, []).append(actor.node_id)
print(json.dumps(ran), flush=True)
ray.shutdown()
cluster.shutdown()
"""


@pytest.fixture(scope="module")
def s3_env(s3_endpoint: str) -> str:
    return make_bucket(s3_endpoint, BUCKET)


@pytest.fixture(scope="module")
def download(s3_env, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real-pixel tree on disk and its copy in the bucket (as ``aws s3 sync`` would)."""
    tree = make_real_tree(tmp_path_factory.mktemp("real"))
    bucket = Store.at(f"s3://{BUCKET}/cbis-ddsm")
    pafs.copy_files(str(tree), f"{BUCKET}/cbis-ddsm", destination_filesystem=bucket.fs)
    return tree, bucket.root


@pytest.fixture(scope="module")
def cluster(s3_env) -> Iterator[tuple[str, subprocess.Popen]]:
    temp = tempfile.mkdtemp(prefix="mb-s3-")  # short: Ray's socket paths stay < 108 bytes
    os.mkdir(f"{temp}/ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER, temp, str(free_port())],
        env=env | {"PYTHONPATH": str(REPO), "RAY_TMPDIR": temp},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started = json.loads(proc.stdout.readline())
    yield started, proc
    if proc.poll() is None:
        proc.kill()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(s3_env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server: runs in sqlite, artifacts proxied into the bucket."""
    folder, port = tmp_path_factory.mktemp("mlflow"), free_port()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", f"s3://{BUCKET}/mlflow"]
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # its six job consumers: ~1.5 GB
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the MLflow server did not answer within 90 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def _cli(args: list[str], run: dict[str, str], check: bool = True) -> str:
    """``mammobench`` against the cluster, the tracking server and the bucket; its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"MAMMOBENCH_HOME": run["home"], "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "mammobench"), "--address", run["address"], "--tracking-uri", run["uri"]]
    cmd += ["--storage", f"s3://{BUCKET}/runs", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 or not check, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def _local_files(roots: list[Path], since: float, skip: tuple[Path, ...]) -> list[str]:
    """Shards and checkpoint files under ``roots`` changed since ``since`` (``skip`` aside)."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d not in skip]
            for name in filenames:
                path = here / name
                wanted = name.endswith((".parquet", ".pt")) or "checkpoint" in name
                try:
                    if wanted and path.stat().st_mtime >= since:
                        found.append(str(path))
                except OSError:
                    continue  # a file removed while walking
    return found


def _tables(store: Store, manifest: dict) -> dict[str, list]:
    """Every shard's rows, by task and split."""
    out = {}
    for task, info in manifest["tasks"].items():
        for split, names in info["shards"].items():
            rows = []
            for name in names:
                with store.open(name) as handle:
                    rows += pq.read_table(handle).to_pylist()
            out[f"{task}/{split}"] = rows
    return out


def _run_stages(data: str, prep: str, run: dict[str, str], folder: Path) -> dict[str, str]:
    """doctor, prepare, train and tune through the CLI; their outputs."""
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    out = {"doctor": _cli(["doctor", "--data", data, "--prep", prep], run, check=False)}
    prepare_args = ["prepare", data, "--out", prep, "--task", "all"]
    out["prepare"] = _cli([*prepare_args, f"--val-fraction={VAL_FRACTION}", *sizes], run)
    train = ["train", "mobilenetv2", "--data", prep, "--epochs", "2", "--batch-size", "4"]
    out["train"] = _cli([*train, "--json"], run)
    space = folder / "two.yaml"
    space.write_text(TWO_TRIALS)
    tune = ["tune", "mobilenetv2", "--data", prep, "--space", str(space), "--max-epochs", "2"]
    out["tune"] = _cli([*tune, "--batch-size", "4", "--name", "s3-sweep", "--json"], run)
    return out


def _per_node(ran: dict, workers: list[str]) -> dict[str, dict[str, int]]:
    """Counts of tasks and actors per worker node (``-s`` shows them)."""
    out = {}
    for kind in ("tasks", "actors"):
        for name, nodes in ran[kind].items():
            for i, node in enumerate(workers):
                if node in nodes:
                    out.setdefault(f"worker {i + 1}", {})[name] = nodes.count(node)
    return out


def _where_things_ran(proc: subprocess.Popen) -> dict[str, dict[str, list[str]]]:
    """Tell the cluster script to report its tasks' and actors' nodes, and stop."""
    proc.stdin.write("\n")
    proc.stdin.flush()
    ran = json.loads(proc.stdout.readline())
    proc.wait(timeout=120)
    return ran


@pytest.mark.slow  # a 3-node cluster, a tracking server, prepare, train and tune: minutes
def test_stages_run_on_nodes_that_share_only_a_bucket(
    download, cluster, mlflow_server: str, tmp_path: Path, ray_local
) -> None:
    tree, data = download
    started, proc = cluster
    since, prep = time.time() - 1, f"s3://{BUCKET}/prepared"
    run = {"home": str(tmp_path / "home"), "address": started["address"], "uri": mlflow_server}
    out = _run_stages(data, prep, run, tmp_path)
    ran = _where_things_ran(proc)
    assert "PASS data.access" in out["doctor"] and "PASS prep.access" in out["doctor"]

    # shards, checkpoints and MLflow artifacts are in the bucket ...
    objects = Store.at(f"s3://{BUCKET}").files()
    shards = [n for n in objects if n.startswith("prepared/") and n.endswith(".parquet")]
    assert {n.split("/")[1] for n in shards} == {"classification", "segmentation", "detection"}
    assert sum(n.startswith("runs/") and n.endswith("/state.pt") for n in objects) >= 3
    assert any(n.startswith("mlflow/") and n.endswith("MLmodel") for n in objects)
    # ... and nowhere on a local disk (the Ray clusters' own session and spill folders aside)
    temp = Path(tempfile.gettempdir())
    skip = (*temp.glob("mb-s3-*"), *temp.glob("mammobench-ray-*"), REPO / ".venv")
    roots = [tmp_path, Path(run["home"]), Path.home() / "ray_results", temp, REPO]
    assert _local_files(roots, since, skip) == []

    # the conversion tasks and the Train workers ran on the worker nodes, on both of them
    workers = set(started["workers"])
    converted = {n for name, nodes in ran["tasks"].items() if "convert" in name for n in nodes}
    trained = set(ran["actors"].get("RayTrainWorker", []))
    assert converted and trained and converted | trained == workers, ran
    print("where things ran:", _per_node(ran, started["workers"]))

    # the tracking server holds the sweep, its trials' artifacts proxied to the bucket
    client = MlflowClient(mlflow_server)
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in found if r.info.run_name == "s3-sweep"]
    trials = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == len(json.loads(out["tune"].strip().splitlines()[-1])["trials"]) == 2
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in found)

    # the same results as a local-disk run of the same download
    local_out = tmp_path / "local-prep"
    local = prepare(
        build_catalog(tree, val_fraction=VAL_FRACTION),
        local_out,
        PrepareConfig(val_fraction=VAL_FRACTION, **SIZES),
        print_fn=lambda *_: None,
    )
    remote = json.loads(Store.at(prep).read_bytes("manifest.json"))
    assert remote["tasks"] == local["tasks"] and remote["read"] == local["read"]
    assert _tables(Store.at(prep), remote) == _tables(Store.at(local_out), local)
    in_bucket = build_catalog(data, val_fraction=VAL_FRACTION).summary()
    on_disk = build_catalog(tree, val_fraction=VAL_FRACTION).summary()
    assert {**in_bucket, "data": ""} == {**on_disk, "data": ""}
