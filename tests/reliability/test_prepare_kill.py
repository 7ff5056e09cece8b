"""``prepare`` SIGKILLed at several points and run again: the same bytes as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_pipeline.catalog import build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig
from tests.data_pipeline.test_prepare import SMALL, _outputs

SIZES = {**SMALL, "shard_size": 2}


@pytest.fixture(scope="module")
def clean(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    out = tmp_path_factory.mktemp("clean")
    prepare(build_catalog(synthetic_data), out, PrepareConfig(**SIZES), print_fn=lambda *_: None)
    return out


def _sidecars(folder: Path) -> int:
    return len(list(folder.rglob("0*.json")))


@pytest.mark.slow  # a kill and a resume: minutes
@pytest.mark.parametrize("share", [0.0, 0.4, 1.0])
def test_killed_prepare_reruns_to_the_uninterrupted_bytes(
    synthetic_data: Path, clean: Path, tmp_path: Path, ray_local: str, share: float
) -> None:
    """Killed after the first shard, after 40% of them, and when the last shard is written
    (while the manifest is being made); then run again to the end."""
    killed, total = tmp_path / "killed", _sidecars(clean)
    at = max(1, int(share * total))
    args = [str(Path(sys.executable).parent / "mammobench"), "prepare", str(synthetic_data)]
    args += ["--out", str(killed), "--task", "all"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    env = {**os.environ, "RAY_ADDRESS": ray_local, "MAMMOBENCH_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _sidecars(killed) < at and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _sidecars(killed) >= at
    if share < 1:
        assert not (killed / "manifest.json").exists()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _outputs(killed) == _outputs(clean)
