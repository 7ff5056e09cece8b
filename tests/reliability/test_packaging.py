"""What the package ships and needs: every data file in its wheel, dependency floors past CVEs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# The architecture and task each shipped space is tried with.
SPACE_MODELS = {
    "cnn-classification": ("resnet50", "classification"),
    "vit-classification": ("vit_b16", "classification"),
    "segmentation": ("unet", "segmentation"),
    "detection": ("fasterrcnn_mobilenet", "detection"),
}
# Releases with a known CVE (the last before each fix) that the floors must exclude.
VULNERABLE = {
    "mlflow": [
        "2.9.1",  # CVE-2023-6831, CVE-2023-6909: artifact path traversal (fixed in 2.9.2)
        "2.12.0",  # CVE-2024-1558: path traversal (fixed in 2.12.1)
        "3.16.0",  # CVE-2026-2635: basic-auth's shipped default admin password (fixed in 3.16.1)
    ],
    "ray": ["2.53.0"],  # CVE-2023-48022: unauthenticated job API (token auth, fixed in 2.54.0)
    "torch": [
        "2.5.1",  # CVE-2025-32434: code execution via torch.load(weights_only=True) (fixed in 2.6.0)
        "2.9.1",  # CVE-2026-24747: memory corruption in the weights_only unpickler (fixed in 2.10.0)
    ],
}
# Runs in the installed copy: `tune --dry-run` for every space, the loader on every benchmark.
CHECK = """
import json, sys
from typer.testing import CliRunner
import orchestration, search_spaces
from orchestration.cli import app
from search_spaces.benchmarks import load_benchmark, published

spaces, benchmarks = json.loads(sys.argv[1]), json.loads(sys.argv[2])
tune = {
    name: CliRunner().invoke(app, ["tune", model, "--task", task, "--space", name, "--dry-run"])
    for name, (model, task) in spaces.items()
}
print(json.dumps({
    "files": [orchestration.__file__, search_spaces.__file__],
    "sys_path": sys.path,
    "tune": {name: [r.exit_code, r.output] for name, r in tune.items()},
    "benchmarks": {name: len(load_benchmark(name).runs) for name in benchmarks},
    "published": published("resnet50", "pretrained"),
}))
"""


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [Path(line) for line in out.stdout.splitlines()]


def _yaml_in(folder: str) -> list[str]:
    return sorted(p.stem for p in _tracked() if p.parent == Path(folder) and p.suffix == ".yaml")


def _install_wheel(tmp_path: Path) -> Path:
    """Copy the tracked tree (no stale build/), build its wheel, install it into a folder."""
    copy, wheels, target = tmp_path / "src", tmp_path / "wheels", tmp_path / "target"
    for rel in (p for p in _tracked() if (REPO / p).is_file()):  # not what is deleted here
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, copy / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(copy)]
    subprocess.run([*pip, *build], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("mammobench-*.whl")
    install = ["install", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run([*pip, *install], check=True, cwd=tmp_path)
    return target


def test_installed_wheel_runs_every_shipped_space_and_benchmark(tmp_path: Path) -> None:
    benchmarks = _yaml_in("search_spaces/benchmarks")
    assert sorted(SPACE_MODELS) == _yaml_in("search_spaces"), (
        "a new space needs its architecture here"
    )
    benchmarks.remove("published")  # the study's figures, read through published()
    target = _install_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # -P and a cwd outside the checkout: the project comes from TARGET only, the venv gives the rest.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PYTHONPATH": str(target),
        "MAMMOBENCH_HOME": str(work / "runs"),
    }
    args = [json.dumps(SPACE_MODELS), json.dumps(benchmarks)]
    run = subprocess.run(
        [sys.executable, "-P", "-c", CHECK, *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert all(Path(f).is_relative_to(target) for f in out["files"]), out["files"]
    assert str(REPO) not in out["sys_path"]
    for name, (code, text) in out["tune"].items():
        assert code == 0, f"{name}: {text}"
        assert "lr:" in text, f"{name}: no resolved space printed\n{text}"
    assert set(out["benchmarks"]) == set(benchmarks)
    assert all(n > 0 for n in out["benchmarks"].values()), out["benchmarks"]
    assert out["published"] == {"accuracy": 0.7646}


def _requirements() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project allows 3.10
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = (line.split("#")[0].strip() for line in lines)
    return dict(pin.split("==") for pin in pins if pin)


@pytest.mark.parametrize("name", sorted(VULNERABLE))
def test_dependency_floors_exclude_vulnerable_releases(name: str) -> None:
    spec = _requirements()[name].specifier
    assert not [v for v in VULNERABLE[name] if spec.contains(v)], f"{name}{spec}"
    assert spec.contains(importlib.metadata.version(name)), "the installed release is below"
    if name in _pins():
        assert spec.contains(_pins()[name]), "constraints.txt pins a release below the floor"


def test_mlflow_comes_with_its_basic_auth_extra() -> None:
    # Flask-WTF: `mlflow server --app-name basic-auth` refuses to start without it.
    assert "auth" in _requirements()["mlflow"].extras
    assert importlib.util.find_spec("flask_wtf") is not None
