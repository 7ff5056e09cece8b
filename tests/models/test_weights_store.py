"""``mammobench weights``: a folder of every architecture's weights, made with the hub's loader
injected (random weights of the same architectures: no hub here), then checked for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.weights_store import MANIFEST, check_weights_dir, download_weights, weight_sources

ONE_PER_FAMILY = ["mobilenetv2", "unet", "fasterrcnn_mobilenet"]


def _random(source) -> dict[str, torch.Tensor]:
    return source.fetch(False)  # the library call of the hub's file, without the download


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    download_weights(folder, ONE_PER_FAMILY, _random, echo=lambda _: None)
    return folder


def test_download_writes_each_file_and_its_checksum(weights: Path) -> None:
    manifest = json.loads((weights / MANIFEST).read_text())
    files = {f"{s.stem}.pth": name for name, s in weight_sources(ONE_PER_FAMILY).items()}
    assert set(manifest["files"]) == set(files) == {p.name for p in weights.glob("*.pth")}
    for file, name in files.items():
        entry = manifest["files"][file]
        assert entry["architectures"] == [name] and entry["bytes"] > 0
        assert entry["sha256"] == _sha(weights / file)

    # a second download finds the files verified and fetches nothing
    def refuse(source):
        raise AssertionError(f"fetched {source.stem} again")

    download_weights(weights, ONE_PER_FAMILY, refuse, echo=lambda _: None)


def test_check_passes_a_good_folder_and_names_each_fault(weights: Path, tmp_path: Path) -> None:
    assert [r["status"] for r in check_weights_dir(weights, ONE_PER_FAMILY)] == ["PASS"] * 3
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in weights.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    (bad / "unet_resnet50.pth").unlink()  # missing
    corrupted = bad / "mobilenetv2.pth"  # one byte changed
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    wrong = bad / "fasterrcnn_mobilenet.pth"  # another architecture's weights, re-checksummed
    torch.save(weight_sources(["mobilenetv2"])["mobilenetv2"].fetch(False), wrong)
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["files"][wrong.name]["sha256"] = _sha(wrong)
    (bad / MANIFEST).write_text(json.dumps(manifest))
    results = {r["model"]: r for r in check_weights_dir(bad, ONE_PER_FAMILY)}
    assert {r["status"] for r in results.values()} == {"FAIL"}
    assert "is missing: run `mammobench weights download" in results["unet"]["detail"]
    assert "does not match its checksum" in results["mobilenetv2"]["detail"]
    assert "does not load into fasterrcnn_mobilenet" in results["fasterrcnn_mobilenet"]["detail"]


def test_the_cli_checks_a_folder_and_exits_non_zero_on_a_fault(weights: Path) -> None:
    cli = [str(Path(sys.executable).parent / "mammobench"), "weights", "check", str(weights)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    good = subprocess.run([*cli, "--model", "mobilenetv2", "--json"], env=env, **_TEXT)
    assert good.returncode == 0, good.stdout + good.stderr
    (row,) = json.loads(good.stdout.strip().splitlines()[-1])
    assert row["status"] == "PASS" and row["file"] == "mobilenetv2.pth"
    bad = subprocess.run([*cli, "--model", "vgg16"], env=env, **_TEXT)
    assert (
        bad.returncode == 1 and "FAIL vgg16" in bad.stdout and "vgg16.pth is missing" in bad.stdout
    )


_TEXT = {"capture_output": True, "text": True, "timeout": 300}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
