"""``prepare``: a Ray Data pipeline that converts CBIS-DDSM DICOMs into Parquet training shards.

Each Ray Data row is one of our shards (a fixed, sorted chunk of source images with their items of
every task: one pass reads and decodes each image once for all tasks); ``write_shard`` is mapped
over them, so the blocks spread across the cluster's workers while every output file keeps a
stable name and content. DATA and OUT are folders or object-store prefixes (``storage.Store``): the
conversion tasks read the DICOMs from DATA and write their shards to OUT themselves, wherever they
run, so nodes need no shared disk. A shard is written whole or not at all (``Store.write_bytes``),
then a sidecar holding its counts and quarantine records: the sidecar is the commit, written last,
so a re-run skips shards whose sidecar exists and rewrites any other (a shard of a killed run is
never taken as done). An interrupted run resumes and a finished one is a no-op. The caller
initialises Ray.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from itertools import groupby
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline import SPLITS, TASKS
from data_pipeline.catalog import Catalog
from data_pipeline.prepare_plan import PrepareConfig, fingerprint, shard_specs, source_image
from data_pipeline.ray_data import data_context
from data_pipeline.samples import Quarantined, Sources, check_files, convert_item
from data_pipeline.storage import Store

STATE = ".prepare-state.json"
FORMAT = 3  # 2: lesion-box sizes; 3: one pass, shards of images (older shards are rebuilt)
SIDECARS = "sidecars"  # <tasks>/<split>/NNNNN.json: a shard's counts, written after its files


def write_shard(
    spec: dict[str, Any], root: str, out: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Convert one shard's items, every task's rows of its images with each image read and
    decoded once, write ``<task>/<name>.parquet`` for each task with rows, then the sidecar (the
    commit); return the sidecar."""
    cfg, store = PrepareConfig.from_dict(config), Store(out)
    tasks = sorted({item["task"] for item in spec["items"]})
    sidecar = f"{SIDECARS}/{'+'.join(tasks)}/{spec['name']}.json"
    if store.is_file(sidecar):
        return json.loads(store.read_bytes(sidecar))
    sources = Sources(Store(root))
    parts = {task: {"rows": [], "quarantine": [], "damaged": []} for task in tasks}
    images = 0
    for _, items in groupby(spec["items"], key=source_image):
        images += 1
        for item in items:
            _convert(item, sources, cfg, parts[item["task"]])
        sources.release()
    result = {
        "name": spec["name"],
        "split": spec["split"],
        "read": {"images": images, "files": sources.files, "bytes": sources.bytes},
        "tasks": {task: _write_part(store, task, spec, part) for task, part in parts.items()},
    }
    store.write_bytes(sidecar, json.dumps(result, sort_keys=True).encode())
    return result


def _convert(item: dict[str, Any], sources: Sources, cfg: PrepareConfig, part: dict) -> None:
    """One item's row, or its quarantine record; and a record per damaged file it names."""
    failed = None
    try:
        part["rows"].append(convert_item(item, sources, cfg))
    except Quarantined as bad:
        failed = bad
        part["quarantine"].append(_record(bad, item["task"], item["key"]))
    for bad in check_files(item, sources, failed):
        part["damaged"].append(_record(bad, item["task"], item["key"]))


def _write_part(store: Store, task: str, spec: dict[str, Any], part: dict) -> dict[str, Any]:
    """Write one task's rows of a shard; its counts and records for the sidecar."""
    rows, target = part["rows"], f"{task}/{spec['name']}.parquet"
    if rows:
        store.write_bytes(target, _parquet_bytes(rows))
    return {
        "expected": len(rows) + len(part["quarantine"]),
        "written": len(rows),
        "file": target.rsplit("/", 1)[-1] if rows else None,
        "quarantine": part["quarantine"],
        "damaged": part["damaged"],
        "box_sizes": _box_sizes(rows),
    }


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


def _start_fresh_if_changed(out: Store, print_fn, digest: str) -> None:
    """Keep shards of the same fingerprint; remove ours when inputs or config changed."""
    for name in out.files():
        if name.rsplit("/", 1)[-1].startswith(".") and ".tmp." in name:
            out.delete(name)  # left by a run that was killed mid-write (a local disk's)
    state = _read_json(out, STATE)
    if state.get("fingerprint") == digest:
        return
    if state:
        print_fn(f"inputs or config changed: rebuilding {out.root}")
        for name in ("manifest.json", "quarantine.csv"):  # first: see ``_previous_manifest``
            out.delete(name)
        for folder in (*TASKS, SIDECARS):
            out.delete_dir(folder)
    out.write_bytes(STATE, json.dumps({"fingerprint": digest}).encode())


def _read_json(store: Store, name: str) -> dict[str, Any]:
    """A JSON file of ``store``, or ``{}`` when there is none."""
    try:
        return json.loads(store.read_bytes(name))
    except FileNotFoundError:
        return {}


def _run_shards(specs, root: str, out: Store, cfg: PrepareConfig, workers: int | None):
    import ray.data

    if not specs:
        return []
    args = {"root": root, "out": out.root, "config": asdict(cfg)}

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


def task_results(results: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """One task's part of each shard's sidecar, with the shard's name and split."""
    return [
        {**r["tasks"][task], "name": r["name"], "split": r["split"]}
        for r in results
        if task in r["tasks"]
    ]


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


def _read_summary(cfg: PrepareConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pass read: source images, files (masks, crops, copies included) and bytes."""
    totals = {k: sum(r["read"][k] for r in results) for k in ("images", "files", "bytes")}
    return {"tasks": sorted(cfg.tasks), **totals}


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
    catalog: Catalog,
    out: str | Path,
    cfg: PrepareConfig,
    workers: int | None = None,
    print_fn=print,
) -> dict[str, Any]:
    """Convert a catalog into ``out`` (a folder or an ``s3://`` / ``gs://`` prefix); return the
    manifest (also written to ``manifest.json``)."""
    out = Store.at(out)
    out.make_dir()
    digest = f"{fingerprint(catalog, cfg)}-v{FORMAT}"
    manifest = _previous_manifest(out, digest)
    if set(cfg.tasks) <= set(manifest["tasks"]):  # all prepared from these inputs: no Ray work
        print_fn(f"prepared data up to date: {out.root}")
        return manifest
    _start_fresh_if_changed(out, print_fn, digest)
    quarantine = _previous_quarantine(out, manifest, cfg.tasks)
    specs = shard_specs(catalog, cfg)
    results = sorted(_run_shards(specs, catalog.root, out, cfg, workers), key=lambda r: r["name"])
    for task in cfg.tasks:
        parts = task_results(results, task)
        manifest["tasks"][task] = _task_summary(task, parts, len(catalog.rejected))
        quarantine += _quarantine_rows(catalog, task, parts)
    manifest["read"] = _read_summary(cfg, results)
    manifest["config"] = {**asdict(cfg), "tasks": sorted(manifest["tasks"])}
    out.write_bytes("manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    _write_quarantine(out, quarantine)
    return manifest


def _previous_manifest(out: Store, digest: str) -> dict[str, Any]:
    """The manifest on disk if it has this fingerprint, else an empty one.

    (A run with another fingerprint deletes ``manifest.json`` before any shard, so a manifest of
    this fingerprint always describes the shards on disk, even after a kill mid-deletion.)
    """
    old = _read_json(out, "manifest.json")
    if old.get("fingerprint") == digest:
        return old
    return {"format": FORMAT, "fingerprint": digest, "tasks": {}}


def _previous_quarantine(out: Store, manifest: dict[str, Any], tasks) -> list[dict[str, str]]:
    try:
        text = out.read_text("quarantine.csv")
    except FileNotFoundError:
        return []
    kept = set(manifest["tasks"]) - set(tasks)
    return [row for row in csv.DictReader(io.StringIO(text, newline="")) if row["task"] in kept]


def _write_quarantine(out: Store, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["source_path", "task", "reason", "key"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["task"], r["key"], r["source_path"])))
    out.write_bytes("quarantine.csv", buffer.getvalue().encode())
