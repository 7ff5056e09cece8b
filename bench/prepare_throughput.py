"""Throughput of ``prepare`` on realistic-size mammograms, against a seed-style reference loop.

Generates full-size synthetic CBIS-DDSM files (default 5000x3000 16-bit images plus their 8-bit
masks), then measures on the same files, for every output kind (whole image at 224 px, lesion crop
at 224, segmentation crop at 512, detection image at 1024 on the long side; PrepareConfig's sizes):
1. our per-image path (``convert_item``: raw pixel read, downscale before CLAHE, area resize) and
   the study's style (pydicom ``.pixel_array`` -> float normalise -> full-resolution CLAHE -> crop
   / resize -> PNG) making the same output, one core each;
2. our path by stage: read (header parse, pixels deferred), decode (the pixel bytes read into the
   array), mask box, crop/resize, CLAHE, encode, check (``check_files``: the other files an item
   names, e.g. its lesion crop, are decoded too) and write (Parquet shards of the rows);
3. this machine's sequential disk read, and from it and the per-core rates the time to prepare the
   full CBIS-DDSM on one 16-core and one 64-core node, with what bounds it;
4. for lesion crops: two plain processes, and the Ray Data pipeline end to end with 1 and with 2
   workers (the same files listed several times over, so that start-up costs do not swamp it);
5. ``prepare --task all`` in one pass (each source image read once for every task) against a
   pass per task, side by side, each from a cold page cache: bytes and files read per source
   image, and wall time.
Per-core figures are CPU seconds of this process (``time.process_time``), so that a busy machine
does not inflate them; the disk and pipeline figures are wall-clock. Prints the figures and ends
with one JSON line. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/prepare_throughput.py [--patients 6] [--size 5000 3000] [--images 640]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from common import repeated_catalog
from prepare_stages import (
    DEFAULT_KINDS,
    FULL_IMAGES,
    KINDS,
    LESIONS,
    READS,
    STAGES,
    kind_config,
    stages,
    write_seconds,
)

from data_pipeline.catalog import Catalog, build_catalog
from data_pipeline.convert import prepare, write_shard
from data_pipeline.prepare_plan import PrepareConfig, plan_items, shard_specs
from data_pipeline.samples import Sources, convert_item
from data_pipeline.storage import Store
from data_pipeline.synth import SynthConfig, make_synthetic
from orchestration.ray_cluster import init_ray

FULL_GB = 163.6  # CBIS-DDSM's size
CORES = (16, 64)
FILE_STAGES = ("read", "decode", "check")  # getting pixels out of files, as against computing
COUNTS = {"image": FULL_IMAGES, "mask": LESIONS, "crop": LESIONS}  # CBIS-DDSM's files by type


def _cpu_per_item(step: Callable[[dict], Any], items: list[dict]) -> float:
    start = time.process_time()
    for item in items:
        step(item)
    return (time.process_time() - start) / len(items)


def measure_kind(kind: str, catalog: Catalog, scratch: Path) -> dict[str, Any]:
    """CPU seconds per item of ours, the seed style, our stages and ``write_shard``, one core."""
    cfg, root, seed = kind_config(kind), Path(catalog.root), KINDS[kind][2]
    items = plan_items(catalog, cfg, cfg.tasks[0])
    warm = convert_one(items[0], root, cfg), seed(items[0], root, cfg), stages(items[0], root, cfg)
    write_seconds([warm[0]], cfg, scratch / f"{kind}-warm-up")  # first calls cost extra
    rows: list[dict] = []
    ours = _cpu_per_item(lambda item: rows.append(convert_one(item, root, cfg)), items)
    reference = _cpu_per_item(lambda item: seed(item, root, cfg), items)
    timed = [stages(item, root, cfg)[0] for item in items]
    mean = {stage: sum(t[stage] for t in timed) / len(items) for stage in STAGES}
    mean["write"] = write_seconds(rows, cfg, scratch / f"{kind}-rows") / len(items)
    specs = shard_specs(catalog, cfg)
    out, config = str(scratch / f"{kind}-shards"), asdict(cfg)
    shard = _cpu_per_item(lambda spec: write_shard(spec, str(root), out, config), specs)
    return {
        "items": len(items),
        "ours_s": ours,
        "seed_s": reference,
        "stages_s": mean,
        "write_shard_s": shard * len(specs) / len(items),
    }


def convert_one(item: dict, root: Path, cfg: PrepareConfig) -> dict:
    """``convert_item`` reading its files anew (as an item alone in its shard would)."""
    return convert_item(item, Sources(Store.at(root)), cfg)


def byte_shares(catalog: Catalog) -> dict[str, float]:
    """The share of CBIS-DDSM's bytes in its images, masks and crops, if their sizes relate as
    the synthetic files' do (mean bytes per type times the real counts)."""
    files = {
        "image": {i.image_file for i in catalog.images},
        "mask": {a.mask_file for a in catalog.abnormalities},
        "crop": {a.crop_file for a in catalog.abnormalities},
    }
    mean = {t: np.mean([catalog.files[f][0] for f in fs if f]) for t, fs in files.items()}
    total = sum(COUNTS[t] * mean[t] for t in COUNTS)
    return {t: float(COUNTS[t] * mean[t] / total) for t in COUNTS}


def _read_mb_s(files: list[Path]) -> float:
    buffer, total = bytearray(8 << 20), 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as file:
            while got := file.readinto(buffer):
                total += got
    return total / 1e6 / (time.perf_counter() - start)


def disk_read_mb_s(files: list[Path]) -> tuple[float, float]:
    """Sequential read MB/s of ``files`` with their cached pages dropped first (written back with
    fsync, then POSIX_FADV_DONTNEED, which needs no root), and again from the page cache."""
    drop_page_cache(files)
    return _read_mb_s(files), _read_mb_s(files)


def extrapolate(kinds: dict[str, dict], disk_mb_s: float, shares: dict[str, float]) -> dict:
    """Minutes for the full CBIS-DDSM per kind: CPU at each of ``CORES`` (per-core rate times
    items, over cores) and disk (the share of the bytes a kind reads, at ``disk_mb_s``)."""
    out = {}
    for kind, m in kinds.items():
        files, gb = KINDS[kind][3], FULL_GB * sum(shares[t] for t in READS[kind])
        out[kind] = {
            "items": files,
            "ms_per_image_core": 1e3 * m["write_shard_s"],
            "disk_gb": gb,
            "disk_minutes": gb * 1e3 / disk_mb_s / 60,
            **{f"cpu_minutes_{c}_cores": files * m["write_shard_s"] / c / 60 for c in CORES},
        }
    return out


def bounds(
    ext: dict[str, dict], kinds: dict[str, dict], disk_mb_s: float, shares: dict[str, float]
) -> dict[str, Any]:
    """The default ``prepare`` (``DEFAULT_KINDS``) at each of ``CORES``: minutes and bound. One
    pass reads each file once for every kind: the disk reads the union of their files."""
    read = {t for k in DEFAULT_KINDS for t in READS[k]}
    disk = FULL_GB * sum(shares[t] for t in read) * 1e3 / disk_mb_s / 60
    weights = {k: ext[k]["items"] for k in DEFAULT_KINDS}
    in_files = sum(weights[k] * kinds[k]["stages_s"][s] for k in weights for s in FILE_STAGES)
    total = sum(weights[k] * sum(kinds[k]["stages_s"].values()) for k in weights)
    out: dict[str, Any] = {"file_stage_share": in_files / total, "disk_minutes": disk}
    for c in CORES:
        cpu = sum(ext[k][f"cpu_minutes_{c}_cores"] for k in DEFAULT_KINDS)
        out[f"cpu_minutes_{c}_cores"] = cpu
        out[f"full_dataset_minutes_{c}_cores"] = max(cpu, disk)
        cpu_bound = "decode" if in_files / total > 0.5 else "cores"
        out[f"bound_{c}"] = "disk" if disk >= cpu else cpu_bound
    return out


def print_kind(kind: str, m: dict[str, Any]) -> None:
    """One kind's per-core figures and stages, in ms per image."""
    ms = {stage: 1e3 * s for stage, s in m["stages_s"].items()}
    convert = sum(ms[s] for s in STAGES[:6])
    print(
        f"{KINDS[kind][4]} ({m['items']}): ours {1e3 * m['ours_s']:.1f} ms/image "
        f"({1 / m['ours_s']:.1f}/s), seed-style {1e3 * m['seed_s']:.1f} ms/image "
        f"({1 / m['seed_s']:.2f}/s), ratio {m['seed_s'] / m['ours_s']:.1f}x"
    )
    parts = " + ".join(f"{s} {ms[s]:.2f}" for s in STAGES[:6])
    print(f"  stages, ms: {parts} = {convert:.1f} (convert_item {1e3 * m['ours_s']:.1f})")
    print(
        f"  + check {ms['check']:.2f} + write {ms['write']:.2f} = {sum(ms.values()):.1f} "
        f"(write_shard {1e3 * m['write_shard_s']:.1f} per image)"
    )


def print_extrapolation(ext: dict, full: dict[str, Any], disk_mb_s: float, shares: dict) -> None:
    """The arithmetic from per-core rates and disk bandwidth to the full CBIS-DDSM."""
    files = FULL_IMAGES + 2 * LESIONS
    split = ", ".join(f"{t}s {share:.1%}" for t, share in shares.items())
    print(
        f"full CBIS-DDSM: {FULL_IMAGES:,} full images, {LESIONS:,} masks and {LESIONS:,} crops = "
        f"{files:,} files, {FULL_GB} GB = {FULL_GB * 1e3 / files:.1f} MB per file on average; "
        f"its bytes split as the synthetic files' sizes do: {split}"
    )
    for kind, e in ext.items():
        what, rate = KINDS[kind][4], e["ms_per_image_core"] / 1e3
        cpu = ", ".join(f"/ {c} cores = {e[f'cpu_minutes_{c}_cores']:.2f} min" for c in CORES)
        print(f"  {e['items']:,} {what} x {rate:.4f} s/image/core {cpu}")
        print(
            f"    disk: {' + '.join(READS[kind])} = {e['disk_gb'] / FULL_GB:.1%} of {FULL_GB} GB "
            f"= {e['disk_gb']:.1f} GB / {disk_mb_s:.0f} MB/s = {e['disk_minutes']:.2f} min"
        )
    print(
        f"default prepare ({' + '.join(DEFAULT_KINDS)}; {full['file_stage_share']:.0%} of its CPU "
        f"time goes to getting pixels out of files: read, decode, check):"
    )
    for c in CORES:
        print(
            f"  {c} cores: CPU {full[f'cpu_minutes_{c}_cores']:.2f} min, disk "
            f"{full['disk_minutes']:.2f} min -> {full[f'full_dataset_minutes_{c}_cores']:.2f} "
            f"min, bound by {full[f'bound_{c}']}"
        )
    print(
        "  assumes: the per-core rate scales linearly with cores (no shared memory-bandwidth "
        "limit), one pass reads each file from disk once for every kind (the union of their "
        "files; a pass per task read the images three times) and the synthetic files stand for "
        "the real ones"
    )


def _convert_all(args: tuple[list[dict], Path, PrepareConfig]) -> None:
    cv2.setNumThreads(1)
    for item in args[0]:
        convert_one(item, args[1], args[2])


def plain_processes(items: list[dict], root: Path, cfg: PrepareConfig) -> float:
    """Scaling of two plain processes doing the same per-image work: the machine's ceiling."""
    items = items * 8  # long enough that start-up and noise do not count
    start = time.perf_counter()
    _convert_all((items, root, cfg))
    one = time.perf_counter() - start
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_convert_all, [([], root, cfg)] * 2)  # start-up outside the timing
        start = time.perf_counter()
        pool.map(_convert_all, [(items, root, cfg)] * 2)
        two = time.perf_counter() - start
    return 2 * one / two


def pipeline(catalog: Catalog, cfg: PrepareConfig, workers: int) -> float:
    """Images/s of the whole Ray Data pipeline with ``workers`` parallel tasks."""
    n = len(plan_items(catalog, cfg, "classification"))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        prepare(catalog, Path(out), cfg, workers=workers, print_fn=lambda *_: None)
        return n / (time.perf_counter() - start)


def drop_page_cache(files: list[Path]) -> None:
    """Evict ``files`` from the page cache (fsync, then POSIX_FADV_DONTNEED: no root needed)."""
    for path in files:
        with open(path, "rb") as file:
            os.fsync(file.fileno())
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def one_pass_against_per_task(catalog: Catalog, cfg: PrepareConfig) -> dict[str, float]:
    """``--task all`` as one pass and as a pass per task, on the same files, each from a cold
    page cache: what each read per source image (``manifest["read"]``) and its wall time."""
    files, quiet = sorted(Path(catalog.root).rglob("*.dcm")), lambda *_: None
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepare(catalog, Path(tmp) / "warm-up", cfg, workers=2, print_fn=quiet)
        for way, runs in (("per_task", [(t,) for t in cfg.tasks]), ("one_pass", [cfg.tasks])):
            drop_page_cache(files)
            start, read = time.perf_counter(), {"bytes": 0, "files": 0}
            for tasks in runs:
                folder = Path(tmp) / way / "+".join(tasks)
                run_cfg = PrepareConfig(**{**asdict(cfg), "tasks": tasks})
                manifest = prepare(catalog, folder, run_cfg, workers=2, print_fn=quiet)
                read = {k: v + manifest["read"][k] for k, v in read.items()}
            out[f"{way}_s"] = time.perf_counter() - start
            out |= {f"{way}_{k}": v for k, v in read.items()}
            out["source_images"] = manifest["read"]["images"]  # the one pass's, last
    images = out["source_images"]
    for way in ("per_task", "one_pass"):
        out[f"{way}_mb_per_image"] = out[f"{way}_bytes"] / images / 1e6
        out[f"{way}_files_per_image"] = out[f"{way}_files"] / images
    return out


def print_passes(p: dict[str, float]) -> None:
    print(
        f"--task all over {p['source_images']:.0f} source images, cold page cache each: "
        f"a pass per task read {p['per_task_mb_per_image']:.1f} MB ({p['per_task_files_per_image']:.2f} "
        f"files) per image in {p['per_task_s']:.1f} s; one pass {p['one_pass_mb_per_image']:.1f} "
        f"MB ({p['one_pass_files_per_image']:.2f} files) in {p['one_pass_s']:.1f} s: "
        f"{p['per_task_bytes'] / p['one_pass_bytes']:.2f}x the bytes, "
        f"{p['per_task_s'] / p['one_pass_s']:.2f}x the time"
    )


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def result_line(kinds: dict[str, dict], ext: dict[str, dict], full: dict[str, Any]) -> dict:
    """The JSON figures: ``images_per_s``, ``ratio``... without a suffix are the lesion crop's."""
    out: dict[str, Any] = {}
    for kind, m in kinds.items():
        suffix = "" if kind == "lesion" else f"_{kind}"
        out[f"images_per_s{suffix}"] = _sig(1 / m["ours_s"])
        out[f"reference_images_per_s{suffix}"] = _sig(1 / m["seed_s"])
        out[f"ratio{suffix}"] = round(m["seed_s"] / m["ours_s"], 2)
    out["convert_item_ms"] = {k: _sig(1e3 * m["ours_s"]) for k, m in kinds.items()}
    out["write_shard_ms"] = {k: _sig(1e3 * m["write_shard_s"]) for k, m in kinds.items()}
    out["stages_ms"] = {
        k: {stage: _sig(1e3 * s) for stage, s in m["stages_s"].items()} for k, m in kinds.items()
    }
    out["extrapolation"] = {
        k: {name: v if isinstance(v, int) else _sig(v) for name, v in e.items()}
        for k, e in ext.items()
    }
    return out | {k: v if isinstance(v, str) else _sig(v) for k, v in full.items()}


def per_core_figures(catalog: Catalog, scratch: Path) -> dict[str, Any]:
    """Every kind on one core, the disk, the extrapolation: printed, and returned as JSON."""
    kinds = {kind: measure_kind(kind, catalog, scratch) for kind in KINDS}
    for kind, m in kinds.items():
        print_kind(kind, m)
    files = sorted(Path(catalog.root).rglob("*.dcm"))
    size = sum(path.stat().st_size for path in files)
    disk, cached = disk_read_mb_s(files)
    print(
        f"disk: {size / 1e6:.0f} MB read sequentially at {disk:.0f} MB/s after fsync and "
        f"POSIX_FADV_DONTNEED per file; {cached:.0f} MB/s again from the page cache"
    )
    shares = byte_shares(catalog)
    ext = extrapolate(kinds, disk, shares)
    full = bounds(ext, kinds, disk, shares)
    print_extrapolation(ext, full, disk, shares)
    figures = result_line(kinds, ext, full) | {
        "byte_shares": {t: _sig(v) for t, v in shares.items()}
    }
    return figures | {"disk_read_mb_per_s": _sig(disk), "page_cache_read_mb_per_s": _sig(cached)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--images", type=int, default=640, help="Pipeline workload.")
    parser.add_argument("--size", type=int, nargs=2, default=(5000, 3000))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per worker, as the per-core target says
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth = SynthConfig(patients=args.patients, size=tuple(args.size))
        data = make_synthetic(Path(tmp) / "data", synth)
        catalog = build_catalog(data)
        files = list(data.rglob("*.dcm"))
        size = sum(path.stat().st_size for path in files)
        print(
            f"{len(files)} files ({size / 1e6:.0f} MB, {size / 1e6 / len(files):.1f} MB each), "
            f"full images {args.size[0]}x{args.size[1]}, written in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        result = per_core_figures(catalog, Path(tmp) / "out")
        cfg = kind_config("lesion")
        items = plan_items(catalog, cfg, "classification")
        ceiling = plain_processes(items, data, cfg)
        print(f"two plain processes on the same work: {ceiling:.2f}x (this machine's ceiling)")
        init_ray(num_cpus=4)
        passes = one_pass_against_per_task(catalog, PrepareConfig(shard_size=4))
        print_passes(passes)
        pipeline(catalog, cfg, 2)  # warm-up: Ray worker processes start once
        big = repeated_catalog(catalog, max(1, args.images // len(items)))
        one, two = (pipeline(big, cfg, workers) for workers in (1, 2))
        print(
            f"Ray Data pipeline, lesion crops: 1 worker {one:.1f} images/s, 2 workers "
            f"{two:.1f} images/s ({two / one:.2f}x)"
        )
    result |= {
        "pipeline_1_worker_images_per_s": round(one, 2),
        "pipeline_2_workers_images_per_s": round(two, 2),
        "scaling": round(two / one, 2),
        "plain_process_scaling": round(ceiling, 2),
        "passes": {k: _sig(v) for k, v in passes.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
