"""``prepare``: a Ray Data pipeline that converts CBIS-DDSM DICOMs into Parquet training shards.

Each Ray Data row is one of our shards (a fixed, sorted chunk of catalog rows); ``write_shard`` is
mapped over them, so the blocks spread across the cluster's workers while every output file keeps a
stable name and content. A shard is written atomically (temporary name, then rename) together with a
sidecar holding its counts and quarantine records; a re-run skips shards whose sidecar exists, so an
interrupted run resumes and a finished one is a no-op. The caller initialises Ray.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline import SPLITS, TASKS
from data_pipeline.catalog import Catalog
from data_pipeline.prepare_plan import PrepareConfig, fingerprint, plan_items, shard_specs
from data_pipeline.ray_data import data_context
from data_pipeline.samples import Quarantined, check_files, convert_item

STATE = ".prepare-state.json"
FORMAT = 2  # 2: detection sidecars and manifest hold lesion-box sizes (older shards are rebuilt)


def write_shard(
    spec: dict[str, Any], root: str, out: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Convert one shard's items and write ``<name>.parquet`` and its sidecar; return the sidecar."""
    cfg = PrepareConfig.from_dict(config)
    target, sidecar = Path(out) / f"{spec['name']}.parquet", Path(out) / f"{spec['name']}.json"
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    rows, quarantined, damaged = [], [], []
    for item in spec["items"]:
        failed = None
        try:
            rows.append(convert_item(item, Path(root), cfg))
        except Quarantined as bad:
            failed = bad
            quarantined.append(_record(bad, spec["task"], item["key"]))
        for bad in check_files(item, Path(root), failed):
            damaged.append(_record(bad, spec["task"], item["key"]))
    if rows:
        _atomic_write(target, _parquet_bytes(rows))
    result = {
        "name": spec["name"],
        "task": spec["task"],
        "split": spec["split"],
        "expected": len(spec["items"]),
        "written": len(rows),
        "file": target.name if rows else None,
        "quarantine": quarantined,
        "damaged": damaged,
        "box_sizes": _box_sizes(rows),
    }
    _atomic_write(sidecar, json.dumps(result, sort_keys=True).encode())
    return result


def _record(bad: Quarantined, task: str, key: str) -> dict[str, str]:
    return {"source_path": bad.source_path, "task": task, "reason": bad.reason, "key": key}


def _box_sizes(rows: list[dict[str, Any]]) -> list[list[float]]:
    """(width, height) in output pixels of every lesion box of these rows (detection only)."""
    return [[b[2] - b[0], b[3] - b[1]] for row in rows for b in row.get("boxes", ())]


def box_statistics(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The training split's lesion-box sizes, as nnU-Net's dataset fingerprint holds spacings:
    percentiles of each box's side (the square root of its area) and of its aspect (height /
    width), in output pixels. The detector derives its anchors from them."""
    sizes = np.asarray(
        [wh for r in results if r["split"] == "train" for wh in r.get("box_sizes", ())], float
    ).reshape(-1, 2)
    sizes = sizes[(sizes > 0).all(axis=1)]
    if not len(sizes):
        return {"count": 0}
    side, aspect = np.sqrt(sizes.prod(axis=1)), sizes[:, 1] / sizes[:, 0]
    percentiles = (5, 25, 50, 75, 95)
    return {
        "count": len(sizes),
        "side": {f"p{q}": round(float(np.percentile(side, q)), 3) for q in percentiles},
        "aspect": {f"p{q}": round(float(np.percentile(aspect, q)), 3) for q in percentiles},
    }


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer, compression="snappy")
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _start_fresh_if_changed(out: Path, print_fn, digest: str) -> None:
    """Keep shards of the same fingerprint; remove ours when inputs or config changed."""
    for stale in out.rglob(".*.tmp"):
        stale.unlink()  # left by a run that was killed mid-write
    state = out / STATE
    if state.is_file() and json.loads(state.read_text()).get("fingerprint") == digest:
        return
    if state.is_file():
        print_fn(f"inputs or config changed: rebuilding {out}")
        for name in ("manifest.json", "quarantine.csv"):  # first: see ``_previous_manifest``
            (out / name).unlink(missing_ok=True)
        for task_dir in TASKS:
            shutil.rmtree(out / task_dir, ignore_errors=True)
    _atomic_write(state, json.dumps({"fingerprint": digest}).encode())


def _run_shards(specs, root: Path, out: Path, cfg: PrepareConfig, workers: int | None):
    import ray.data

    if not specs:
        return []
    args = {"root": str(root), "out": str(out), "config": asdict(cfg)}

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        cv2.setNumThreads(1)  # one CPU per task, as Ray scheduled it: no oversubscription
        # Rows travel as JSON text: Arrow need not infer types for ragged, nullable items.
        return {"result": json.dumps(write_shard(json.loads(row["spec"]), **args))}

    rows = [{"spec": json.dumps(s)} for s in specs]
    # Outputs are small JSON rows: memory is not at stake, so no backpressure is wanted. With
    # per-operator reservations Ray Data runs one task until it has seen an output size; the
    # downstream-capacity policy (outputs vs the consumer's in-flight bytes) later falls back to
    # one task at a time, as the driver's loop holds almost nothing in flight.
    with data_context(
        op_resource_reservation_enabled=False, downstream_capacity_backpressure_ratio=None
    ):
        ds = ray.data.from_items(rows, override_num_blocks=len(specs))
        ds = ds.map(convert, compute=ray.data.TaskPoolStrategy(size=workers))
    return [json.loads(row["result"]) for row in ds.iter_rows()]


def _task_summary(task: str, results: list[dict[str, Any]], rejected: int) -> dict[str, Any]:
    written = {split: 0 for split in SPLITS}
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    for r in results:
        written[r["split"]] += r["written"]
        if r["file"]:
            shards[r["split"]].append(f"{task}/{r['split']}/{r['file']}")
    quarantined = sum(len(r["quarantine"]) for r in results) + rejected
    summary = {
        "expected": sum(r["expected"] for r in results) + rejected,
        "written": sum(written.values()),
        "quarantined": quarantined,
        "damaged_files": sum(len(r.get("damaged", ())) for r in results),
        "splits": written,
        "shards": {s: sorted(v) for s, v in shards.items()},
    }
    if task == "detection":
        summary["boxes"] = box_statistics(results)
    return summary


def _quarantine_rows(catalog: Catalog, task: str, results) -> list[dict[str, str]]:
    """Items not converted and damaged files, rejected CSV rows, and unreadable files the
    catalog found that no item of this task read (e.g. a damaged lesion crop)."""
    rows = [
        {k: q[k] for k in ("source_path", "task", "reason", "key")}
        for r in results
        for q in [*r["quarantine"], *r.get("damaged", ())]
    ]
    for rej in catalog.rejected:
        rows.append(
            {
                "source_path": f"{rej.csv_file}:{rej.line}",
                "task": task,
                "reason": f"rejected CSV row: {rej.reason}",
                "key": rej.key or "",
            }
        )
    listed = {row["source_path"] for row in rows}
    for path, reason in catalog.unreadable.items():
        if path not in listed:
            rows.append({"source_path": path, "task": task, "reason": reason, "key": ""})
    return rows


def prepare(
    catalog: Catalog, out: Path, cfg: PrepareConfig, workers: int | None = None, print_fn=print
) -> dict[str, Any]:
    """Convert a catalog into ``out``; return the manifest (also written to ``manifest.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    digest = f"{fingerprint(catalog, cfg)}-v{FORMAT}"
    manifest = _previous_manifest(out, digest)
    if set(cfg.tasks) <= set(manifest["tasks"]):  # all prepared from these inputs: no Ray work
        print_fn(f"prepared data up to date: {out}")
        return manifest
    _start_fresh_if_changed(out, print_fn, digest)
    quarantine = _previous_quarantine(out, manifest, cfg.tasks)
    for task in cfg.tasks:
        specs = shard_specs(plan_items(catalog, cfg, task), task, cfg.shard_size)
        results = sorted(
            _run_shards(specs, catalog.root, out, cfg, workers), key=lambda r: r["name"]
        )
        manifest["tasks"][task] = _task_summary(task, results, len(catalog.rejected))
        quarantine += _quarantine_rows(catalog, task, results)
    manifest["config"] = {**asdict(cfg), "tasks": sorted(manifest["tasks"])}
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    _write_quarantine(out / "quarantine.csv", quarantine)
    return manifest


def _previous_manifest(out: Path, digest: str) -> dict[str, Any]:
    """The manifest on disk if it has this fingerprint, else an empty one.

    (A run with another fingerprint deletes ``manifest.json`` before any shard, so a manifest of
    this fingerprint always describes the shards on disk, even after a kill mid-deletion.)
    """
    path = out / "manifest.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("fingerprint") == digest:
        return old
    return {"format": FORMAT, "fingerprint": digest, "tasks": {}}


def _previous_quarantine(out: Path, manifest: dict[str, Any], tasks) -> list[dict[str, str]]:
    path = out / "quarantine.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        kept = set(manifest["tasks"]) - set(tasks)
        return [row for row in csv.DictReader(handle) if row["task"] in kept]


def _write_quarantine(path: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["source_path", "task", "reason", "key"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["task"], r["key"], r["source_path"])))
    _atomic_write(path, buffer.getvalue().encode())
