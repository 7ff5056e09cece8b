"""Many writers, no lost metric point: 8 writers (threads of 2 processes) log trials at once
through the project's tracking code (``TrialTracker``, the Tune callback), to the default sqlite store and to a real
MLflow server on a PostgreSQL backend (the backend ``cluster.yaml`` uses), both on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.results.tracking import SweepRun, client_for, experiment_id
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
WRITERS, EPOCHS = 8, 24
METRICS = ("epoch", "train_loss", "val_auc", "best_val_auc", "lr")
WRITER = """
import sys, threading, time
from types import SimpleNamespace
from orchestration.results.tracking import TrialTracker
from orchestration.train.config import TrainConfig

uri, experiment, parent = sys.argv[1:4]
first, count, epochs = (int(a) for a in sys.argv[4:7])
base = TrainConfig(model="mobilenetv2", data="/nonexistent").to_dict()


def write(index):
    tracker = TrialTracker(uri, experiment, parent, base)
    trial = SimpleNamespace(trial_id=f"writer_{index:05d}", config={"lr": 1e-3}, last_result={})
    tracker.on_trial_start(0, [], trial)
    history = []
    for epoch in range(1, epochs + 1):
        result = {"epoch": epoch, "train_loss": 1 / epoch, "val_auc": 0.5 + epoch / 1000,
                  "best_val_auc": 0.5 + epoch / 1000, "lr": 1e-3, "timestamp": int(time.time())}
        history.append(dict(result))
        if epoch == epochs // 2:  # as after a restart: the epochs before are re-sent once
            result["history"] = list(history)
        tracker.on_trial_result(0, [], trial, result)
    tracker.client.set_terminated(tracker._run_of(trial), "FINISHED")


threads = [threading.Thread(target=write, args=(i,)) for i in range(first, first + count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""
PROCESSES = 2  # x 4 writer threads: 8 writers, across processes (sqlite's locks are per file)


def _run_writers(uri: str, experiment: str, parent: str, folder: Path) -> None:
    script = folder / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    per = WRITERS // PROCESSES
    args = [sys.executable, str(script), uri, experiment, parent]
    procs = [
        subprocess.Popen(
            [*args, str(i * per), str(per), str(EPOCHS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]


def _check_every_point(client: MlflowClient, experiment: str, parent: str) -> None:
    runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == WRITERS and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        for key in METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.info.run_name, key)


def _sweep(client: MlflowClient, name: str, artifacts: Path | None) -> tuple[str, str]:
    exp = experiment_id(client, f"writers-{name}", artifacts)
    return exp, SweepRun.open(client, exp, name, resume=False).run_id


def test_eight_writers_to_the_default_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)  # the driver creates the store once
    exp, parent = _sweep(client, "sqlite", tmp_path / "artifacts")
    _run_writers(uri, exp, parent, tmp_path)
    _check_every_point(client, exp, parent)


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, "PostgreSQL is missing: `make test` installs Debian's postgresql"
    return found[-1].parent


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses root: run the server's commands as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1, started for this module and removed after."""
    bin_dir, port = _pg_bin(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="mammobench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    run = {"check": True, "capture_output": True, "timeout": 120}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "mlflow"]
    subprocess.run(_as_postgres(initdb), **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w"]
    subprocess.run(_as_postgres([*ctl, "-o", options, "start"]), **run)
    try:
        createdb = [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow"]
        subprocess.run(_as_postgres([*createdb, "mlflow"]), **run)
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on the PostgreSQL backend, on loopback."""
    port, artifacts = free_port(), tmp_path_factory.mktemp("server-artifacts")
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--backend-store-uri", postgres_uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--default-artifact-root", artifacts.as_uri(), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server at {url} never became healthy")


def test_eight_writers_to_a_tracking_server_on_postgresql(mlflow_server: str, tmp_path: Path):
    client = client_for(mlflow_server)
    exp, parent = _sweep(client, "postgres", None)
    _run_writers(mlflow_server, exp, parent, tmp_path)
    _check_every_point(client, exp, parent)
