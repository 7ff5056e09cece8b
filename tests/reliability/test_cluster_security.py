"""The cluster configs expose nothing unauthenticated, and MLflow's basic auth really guards it."""

from __future__ import annotations

import base64
import configparser
import copy
import importlib.util
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
CREDENTIAL = re.compile(r"\b([A-Z_]*(?:PASSWORD|TOKEN|SECRET_KEY|USERNAME))=\"?(\S*)")
URI_PASSWORD = re.compile(r"://[^/\s:@]+:(?!\$)[^@\s/]+@")
# cluster.yaml's head commands before the hardening: the shape the check must refuse.
INSECURE_HEAD = [
    "ulimit -n 65536; ray start --head --port=6379 --dashboard-host=0.0.0.0",
    'nohup mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri "postgresql://mlflow:'
    '${MLFLOW_DB_PASSWORD}@db:5432/mlflow" > /tmp/mlflow-server.log 2>&1 &',
]


def exposure_problems(commands: list[str]) -> list[str]:
    """What in one node's shell commands would serve or leak something without authentication.

    Every ``mlflow server`` needs basic auth and a Host allow-list; every ``ray start`` (its GCS
    listens on all interfaces whatever ``--dashboard-host`` says) and ``ray job submit`` needs
    RAY_AUTH_MODE=token with a token; a ``ray start`` hands its raylet's environment to the driver
    and trials, so it needs MLflow's credentials; a credential is never written out literally.
    """
    problems = []
    for cmd in commands:
        for name, value in CREDENTIAL.findall(cmd):
            if not value.startswith("$"):
                problems.append(f"{name} is written literally: {cmd}")
        if URI_PASSWORD.search(cmd):
            problems.append(f"a URI carries a literal password: {cmd}")
        if "mlflow server" in cmd:
            args = cmd.split("mlflow server", 1)[1]
            if not re.search(r"--app-name[= ]basic-auth\b", args):
                problems.append(f"mlflow server without --app-name basic-auth: {cmd}")
            hosts = re.search(r"--allowed-hosts[= ][\"']?([^\s\"']+)", args)
            if not hosts or "*" in hosts.group(1).split(","):
                problems.append(f"mlflow server without a --allowed-hosts list: {cmd}")
            if "--disable-security-middleware" in args:
                problems.append(f"mlflow server without its security middleware: {cmd}")
        for verb in (v for v in ("ray start", "ray job submit") if v in cmd):
            before = cmd.split(verb, 1)[0]
            if "RAY_AUTH_MODE=token" not in before:
                exposed = " (dashboard on 0.0.0.0)" if "dashboard-host=0.0.0.0" in cmd else ""
                problems.append(f"{verb} without RAY_AUTH_MODE=token{exposed}: {cmd}")
            if not re.search(r"RAY_AUTH_TOKEN(_PATH)?=", before):
                problems.append(f"{verb} without RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH: {cmd}")
        if "ray start" in cmd:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                if f"{name}=" not in cmd.split("ray start", 1)[0]:
                    problems.append(f"ray start without {name} for its trials: {cmd}")
    return problems


def _cluster_nodes(config: dict) -> dict[str, list[str]]:
    """The commands ``ray up`` runs on the head and on a worker, in order."""
    setup = config.get("setup_commands", [])
    return {
        "head": setup + config.get("head_setup_commands", []) + config["head_start_ray_commands"],
        "worker": setup
        + config.get("worker_setup_commands", [])
        + config["worker_start_ray_commands"],
    }


def _env_text(container: dict) -> str:
    """A container's environment as shell assignments; a Secret reference reads as ``$(...)``."""
    parts = []
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        value = f"$(secret:{ref['name']}/{ref['key']})" if ref else str(var.get("value", ""))
        parts.append(f"{var['name']}={value}")
    return " ".join(parts)


def _rayjob_nodes(job: dict) -> dict[str, list[str]]:
    """What KubeRay runs in each pod of a RayJob, as the command lines it amounts to."""
    cluster = job["spec"]["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]} | {
        g["groupName"]: g for g in cluster["workerGroupSpecs"]
    }
    nodes = {}
    for name, group in groups.items():
        container = group["template"]["spec"]["containers"][0]
        params = " ".join(f"--{k}={v}" for k, v in group.get("rayStartParams", {}).items())
        head = "--head " if name == "head" else ""
        nodes[name] = [f"{_env_text(container)} ray start {head}{params}"]
    submitter = job["spec"].get("submitterPodTemplate", {"spec": {"containers": [{}]}})
    env = _env_text(submitter["spec"]["containers"][0])
    nodes["submitter"] = [f"{env} ray job submit -- {job['spec']['entrypoint']}"]
    return nodes


def test_cluster_yaml_exposes_nothing_unauthenticated() -> None:
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    nodes = _cluster_nodes(config)
    assert {n: exposure_problems(cmds) for n, cmds in nodes.items()} == {"head": [], "worker": []}
    assert any("mlflow server" in cmd for cmd in nodes["head"])
    assert any("--dashboard-host=0.0.0.0" in cmd for cmd in nodes["head"])


def test_rayjob_exposes_nothing_unauthenticated() -> None:
    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    nodes = _rayjob_nodes(job)
    assert {n: exposure_problems(cmds) for n, cmds in nodes.items()} == {n: [] for n in nodes}
    assert "--dashboard-host=0.0.0.0" in nodes["head"][0]


def test_the_check_refuses_the_old_insecure_head() -> None:
    text = "\n".join(exposure_problems(INSECURE_HEAD))
    assert "RAY_AUTH_MODE=token (dashboard on 0.0.0.0)" in text
    assert "--app-name basic-auth" in text
    assert "--allowed-hosts" in text
    assert "MLFLOW_TRACKING_PASSWORD" in text


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("mlflow server --app-name basic-auth --host 0.0.0.0 --allowed-hosts '*'", "allowed-hosts"),
        (
            "mlflow server --app-name basic-auth --allowed-hosts a:5000 --disable-security-middleware",
            "middleware",
        ),
        (
            "MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:hunter2@db/mlflow mlflow server",
            "literal password",
        ),
        (
            "RAY_AUTH_MODE=token RAY_AUTH_TOKEN=abc123 ray job submit -- mammobench",
            "RAY_AUTH_TOKEN is written",
        ),
        (
            "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$T MLFLOW_TRACKING_USERNAME=$U ray start",
            "MLFLOW_TRACKING_PASSWORD",
        ),
    ],
)
def test_the_check_refuses_each_gap(command: str, problem: str) -> None:
    assert problem in "\n".join(exposure_problems([command]))


def test_the_check_reads_the_rayjob_env() -> None:
    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    literal, no_token = copy.deepcopy(job), copy.deepcopy(job)
    worker = literal["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    env = worker["template"]["spec"]["containers"][0]["env"]
    env[:] = [{"name": v["name"], "value": "hunter2hunter2"} for v in env]
    head = no_token["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["env"] = [
        v for v in head["containers"][0]["env"] if v["name"] != "RAY_AUTH_MODE"
    ]
    assert "MLFLOW_TRACKING_PASSWORD is written literally" in str(
        exposure_problems(_rayjob_nodes(literal)["gpu"])
    )
    assert "(dashboard on 0.0.0.0)" in str(exposure_problems(_rayjob_nodes(no_token)["head"]))


def test_secret_files_are_private_and_plain_names(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "cluster_secrets", REPO / "deploy" / "cluster_secrets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path / "secrets"
    (path,) = module.write_secret_files({"mlflow_password": "s3cret-value"}, folder)
    assert path.read_text() == "s3cret-value"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    with pytest.raises(ValueError, match="plain file name"):
        module.write_secret_files({"../authorized_keys": "x"}, folder)
    assert not (tmp_path / "authorized_keys").exists()


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def basic_auth_server(tmp_path: Path):
    """``mlflow server --app-name basic-auth`` on loopback with deploy/'s auth config, admin from env."""
    config = configparser.ConfigParser()
    config.read(REPO / "deploy" / "mlflow-basic-auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'auth.db'}"
    with (tmp_path / "auth.ini").open("w") as f:
        config.write(f)
    port, password = free_port(), secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--allowed-hosts", f"127.0.0.1:{port}", "--backend-store-uri"]
    cmd += [f"sqlite:///{tmp_path / 'mlflow.db'}", "--default-artifact-root", str(tmp_path / "art")]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (_up(port) and _status(f"{url}/health", {}) == 200):
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not start in 60 s"
            time.sleep(0.3)
        yield url, port, password
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _up(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_basic_auth_server_refuses_anonymous_wrong_and_foreign_host_calls(
    basic_auth_server,
) -> None:
    url, port, password = basic_auth_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(search, {}) == 401
    assert _status(search, _basic("admin", "not-the-password")) == 401
    assert _status(search, _basic("admin", password)) == 200
    # DNS rebinding: a page on another name that resolves here still sends its own Host header.
    for host in (f"evil.example:{port}", f"10.0.0.66:{port}"):  # MLflow's default list takes 10.*
        assert _status(search, _basic("admin", password) | {"Host": host}) == 403, host
