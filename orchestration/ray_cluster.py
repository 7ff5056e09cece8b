"""Connect to a Ray cluster, or start the embedded local one with safe defaults.

Locally, a trial's driver holds one CPU and its Train worker another; on a 2-core machine that leaves
Ray Data nothing and the pipeline hangs. So the local cluster declares more logical CPUs than cores
(``LOCAL_CPU_FACTOR``), and sweeps derive ``max_concurrent_trials`` from that. The dashboard always
runs: without it, trials that ASHA stops leak their placement groups. It listens on 127.0.0.1
only (``DASHBOARD_HOST``): its job API runs code, so reach a remote one through ``ray dashboard``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LOCAL_CPU_FACTOR = 2
MIN_LOCAL_CPUS = 4
NUM_CPUS_ENV = "MAMMOBENCH_NUM_CPUS"
DASHBOARD_HOST = "127.0.0.1"  # Ray's default today, stated so that a new default cannot widen it


def local_cpus() -> int:
    """Logical CPUs the embedded local cluster declares (``$MAMMOBENCH_NUM_CPUS`` overrides)."""
    if os.environ.get(NUM_CPUS_ENV):
        return int(os.environ[NUM_CPUS_ENV])
    return max(MIN_LOCAL_CPUS, LOCAL_CPU_FACTOR * (os.cpu_count() or 1))


def ray_temp_dir() -> Path:
    """This user's own Ray temp dir (short: Ray's socket paths must stay under 108 bytes)."""
    return Path(tempfile.gettempdir()) / f"mammobench-ray-{os.getuid()}"


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process; a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        num_cpus=num_cpus or local_cpus(),
        dashboard_host=DASHBOARD_HOST,
        _temp_dir=str(ray_temp_dir()),
        log_to_driver=True,
    )
