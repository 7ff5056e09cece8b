"""``mammobench ui``: the MLflow UI on the local store, bound to loopback only."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestration.settings import Settings


def ui_command(settings: Settings, port: int) -> list[str]:
    """The ``mlflow server`` command for the local store, reachable from this machine only.

    Binding to 127.0.0.1 and allowing only loopback Host headers keeps other machines and DNS
    rebinding pages out; use ``ray dashboard``/``ssh -L`` port-forwarding to reach a remote one.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    allowed = f"127.0.0.1:{port},localhost:{port}"
    mlflow = Path(sys.executable).parent / "mlflow"
    return [
        str(mlflow),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        settings.artifact_root.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--allowed-hosts",
        allowed,
        "--workers",
        "1",
    ]
