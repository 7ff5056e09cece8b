"""Throughput of ``prepare`` on realistic-size mammograms, against a seed-style reference loop.

Generates full-size synthetic CBIS-DDSM files (default 5000x3000 16-bit images plus their 8-bit
masks), then measures on the same files:
1. our per-image path (raw pixel read, downscale before CLAHE, area resize), one core;
2. the study's style (pydicom ``.pixel_array`` -> float normalise -> full-resolution CLAHE -> resize
   -> PNG), one core;
3. the Ray Data pipeline end to end with 1 and with 2 workers (the same files listed several
   times over, so that fixed start-up costs do not swamp the comparison).
Prints the figures and ends with one JSON line. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/prepare_throughput.py [--patients 6] [--size 5000 3000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pydicom

from data_pipeline.catalog import Catalog, build_catalog
from data_pipeline.convert import prepare
from data_pipeline.prepare_plan import PrepareConfig, plan_items
from data_pipeline.samples import convert_item
from data_pipeline.synth import SynthConfig, make_synthetic
from orchestration.ray_cluster import init_ray


def seed_style(image_path: Path, mask_path: Path, size: int = 224) -> bytes:
    """The reference: what the study's notebooks do per image."""
    image = pydicom.dcmread(image_path).pixel_array.astype(np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1.0)
    mask = pydicom.dcmread(mask_path).pixel_array
    ys, xs = np.nonzero(mask)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    full = clahe.apply((image * 255).astype(np.uint8))
    crop = full[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return cv2.imencode(".png", cv2.resize(crop, (size, size)))[1].tobytes()


def per_core(items: list[dict], root: Path, cfg: PrepareConfig) -> tuple[float, float]:
    """Images/s of our path and of the seed-style loop, each on one core, same files."""
    start = time.perf_counter()
    for item in items:
        convert_item(item, root, cfg)
    ours = len(items) / (time.perf_counter() - start)
    start = time.perf_counter()
    for item in items:
        seed_style(root / item["image_file"], root / item["mask_files"][0])
    return ours, len(items) / (time.perf_counter() - start)


def _convert_all(args: tuple[list[dict], Path, PrepareConfig]) -> None:
    cv2.setNumThreads(1)
    for item in args[0]:
        convert_item(item, args[1], args[2])


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


def repeated(catalog: Catalog, times: int) -> Catalog:
    """The same files listed ``times`` over under new keys: a bigger workload, same inputs."""
    abns = [replace(a, key=f"{a.key}-r{i}") for i in range(times) for a in catalog.abnormalities]
    return replace(catalog, abnormalities=abns)


def pipeline(catalog: Catalog, cfg: PrepareConfig, workers: int) -> float:
    """Images/s of the whole Ray Data pipeline with ``workers`` parallel tasks."""
    n = len(plan_items(catalog, cfg, "classification"))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        prepare(catalog, Path(out), cfg, workers=workers, print_fn=lambda *_: None)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--images", type=int, default=1280, help="Pipeline workload.")
    parser.add_argument("--size", type=int, nargs=2, default=(5000, 3000))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per worker, as the per-core target says
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = make_synthetic(Path(tmp), SynthConfig(patients=args.patients, size=tuple(args.size)))
        catalog = build_catalog(data)
        cfg = PrepareConfig(tasks=("classification",))  # default shard size (64 images)
        items = plan_items(catalog, cfg, "classification")
        print(
            f"{len(items)} images of {args.size[0]}x{args.size[1]} written in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        ours, reference = per_core(items, data, cfg)
        print(
            f"per core: ours {ours:.1f} images/s, seed-style {reference:.1f} images/s, "
            f"ratio {ours / reference:.1f}x"
        )
        ceiling = plain_processes(items, data, cfg)
        print(f"two plain processes on the same work: {ceiling:.2f}x (this machine's ceiling)")
        init_ray(num_cpus=4)
        pipeline(catalog, cfg, 2)  # warm-up: Ray worker processes start once
        big = repeated(catalog, max(1, args.images // len(items)))
        one, two = (pipeline(big, cfg, workers) for workers in (1, 2))
        print(
            f"Ray Data pipeline: 1 worker {one:.1f} images/s, 2 workers {two:.1f} images/s "
            f"({two / one:.2f}x)"
        )
    result = {
        "images_per_s": round(ours, 2),
        "reference_images_per_s": round(reference, 2),
        "ratio": round(ours / reference, 2),
        "pipeline_1_worker_images_per_s": round(one, 2),
        "pipeline_2_workers_images_per_s": round(two, 2),
        "scaling": round(two / one, 2),
        "plain_process_scaling": round(ceiling, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
