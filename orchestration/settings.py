"""Where mammobench keeps its local state, and which Ray cluster and MLflow store it talks to.

Resolved once by the CLI from options and environment: nothing is read or set at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Environment defaults every verb runs with (a user's own value wins)
OFFLINE_ENVIRONMENT = {"MLFLOW_DISABLE_TELEMETRY": "true"}  # hospital clusters are offline


def set_offline_environment() -> None:
    """Apply ``OFFLINE_ENVIRONMENT``; call before MLflow is imported (it reads it on import)."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def default_home() -> Path:
    """The local work dir: ``$MAMMOBENCH_HOME`` or ``./runs``."""
    return Path(os.environ.get("MAMMOBENCH_HOME") or "runs").resolve()


@dataclass(frozen=True)
class Settings:
    """Global options shared by every verb."""

    home: Path
    tracking_uri: str
    storage: str
    address: str | None

    @classmethod
    def resolve(
        cls,
        tracking_uri: str | None = None,
        storage: str | None = None,
        address: str | None = None,
    ) -> Settings:
        """Fill unset options from the environment, then from the local work dir."""
        home = default_home()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return cls(
            home=home,
            tracking_uri=uri or f"sqlite:///{home / 'mlflow.db'}",
            storage=storage or str(home / "ray_results"),
            address=address or os.environ.get("RAY_ADDRESS") or None,
        )

    @property
    def artifact_root(self) -> Path:
        """Where the local MLflow store keeps artifacts."""
        return self.home / "mlartifacts"
