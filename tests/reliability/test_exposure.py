"""What listens where: ``mammobench ui`` and the local Ray dashboard stay on loopback.

The servers are the real ones (``mammobench ui`` starts ``mlflow server``; the session's Ray comes
from ``init_ray``), and the listening sockets are read from the kernel through psutil.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import ray

MAMMOBENCH = Path(sys.executable).parent / "mammobench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, host: str | None = None) -> int:
    """The status of ``GET /`` on loopback, sent with ``host`` as the Host header."""
    headers = {"Host": host} if host else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def get_health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as response:
            return response.status
    except OSError:
        return None


def listening(root: psutil.Process) -> set[tuple[str, int]]:
    """(address, port) of every socket that ``root`` or a descendant listens on.

    A helper process may exit between listing the children and reading its sockets: skip it.
    """
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


@contextmanager
def running_ui(home: Path, port: int, *options: str) -> Iterator[tuple[psutil.Process, Path]]:
    """``mammobench ui`` on ``port``, healthy; yields its process and its stderr file."""
    env = {**os.environ, "MAMMOBENCH_HOME": str(home)}
    log = home / f"stderr-{port}.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [MAMMOBENCH, "ui", "--port", str(port), *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180  # the first start migrates the store; CI is loaded
        while get_health(port) != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)
        yield psutil.Process(proc.pid), log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for both servers: only the first start pays for MLflow's schema migrations."""
    return tmp_path_factory.mktemp("home")


def test_ui_listens_on_loopback_only_by_default(home: Path) -> None:
    port = free_port()
    with running_ui(home, port) as (proc, log):
        assert {ip for ip, p in listening(proc) if p == port} == {"127.0.0.1"}
        assert {ip for ip, _ in listening(proc)} == {"127.0.0.1"}
        assert get(port) == 200
        assert get(port, host="evil.example.com") == 403
        assert get(port, host=f"{socket.gethostname()}:{port}") == 403
        assert "the MLflow UI listens on" not in log.read_text()


def test_ui_on_all_interfaces_warns_and_keeps_the_host_allow_list(home: Path) -> None:
    port = free_port()
    with running_ui(home, port, "--host", "0.0.0.0") as (proc, log):
        warning = log.read_text()
        assert "warning: the MLflow UI listens on 0.0.0.0" in warning
        assert "unauthenticated" in warning and "ssh -L" in warning
        assert {ip for ip, p in listening(proc) if p == port} == {"0.0.0.0"}
        assert get(port, host=f"{socket.gethostname()}:{port}") == 200
        assert get(port, host="evil.example.com") == 403


def test_local_ray_dashboard_listens_on_loopback_only(ray_local) -> None:
    webui = ray._private.worker._global_node.address_info["webui_url"]
    port = int(webui.rsplit(":", 1)[1])
    dashboard = {ip for ip, p in listening(psutil.Process()) if p == port}
    assert dashboard == {"127.0.0.1"}, webui
