"""A weights folder in a bucket (``s3://`` / ``gs://``), mirrored file by file on each node.

The loaders (torch, timm, smp, torchvision) read a path, so a weights file named by a URI is copied
once to this node's cache (``$MAMMOBENCH_WEIGHTS_CACHE``, default ``~/.cache/mammobench/weights``):
only the architectures a node builds, each re-copied when the object's size or modification time
changes, written whole or not at all. ``weights.json`` (the SHA-256 sums) comes along, so ``weights
check`` verifies the copy against the folder's own record.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow.fs as pafs

from data_pipeline.storage import Store

CACHE_ENV = "MAMMOBENCH_WEIGHTS_CACHE"
MANIFEST = "weights.json"


def mirror_dir(uri: str) -> Path:
    """This node's folder for the weights folder at ``uri``."""
    root = Path(os.environ.get(CACHE_ENV) or "~/.cache/mammobench/weights").expanduser()
    return root / hashlib.sha256(Store.at(uri).root.encode()).hexdigest()[:16]


def mirror_files(uri: str, names: list[str]) -> Path:
    """Copy those of ``names`` (and ``weights.json``) the folder at ``uri`` holds into the
    mirror, unless already there unchanged; return the mirror folder."""
    store, mirror = Store.at(uri), mirror_dir(uri)
    for name in [*names, MANIFEST]:
        info = store.info(name)
        if info.type != pafs.FileType.File:
            continue
        stamp, target = mirror / f".{name}.source", mirror / name
        key = f"{info.size}:{info.mtime_ns}"
        if target.is_file() and stamp.is_file() and stamp.read_text() == key:
            continue
        mirror.mkdir(parents=True, exist_ok=True)
        partial = mirror / f".{name}.{os.getpid()}.partial"
        local = pafs.LocalFileSystem()
        pafs.copy_files(store.fs_path(name), str(partial), store.fs, local)
        os.replace(partial, target)
        stamp.write_text(key)
    return mirror
