"""``mammobench ui`` serves the MLflow UI on loopback and refuses foreign Host headers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port


def _get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ui_answers_on_loopback_and_refuses_foreign_host(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MAMMOBENCH_HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "mammobench"
    proc = subprocess.Popen(
        [exe, "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = _get(f"http://127.0.0.1:{port}/health")
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/") == 200
        assert _get(f"http://127.0.0.1:{port}/", host="evil.example.com") in (400, 403)
        assert (tmp_path / "mlflow.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_printed_url_opens_the_model_training_view() -> None:
    from orchestration.ui import ui_url

    assert ui_url("0.0.0.0", 5000, "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert ui_url("::1", 80) == "http://[::1]:80/#/experiments?workflowType=machine_learning"
