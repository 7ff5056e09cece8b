"""``bench/prepare_throughput.py`` at a tiny size: every output kind measured against the seed
style, the stages adding up to the whole, and the extrapolation following from the per-core rates.
"""

from __future__ import annotations

import importlib

import pytest

from data_pipeline.catalog import build_catalog
from data_pipeline.prepare_plan import plan_items
from data_pipeline.samples import Sources, convert_item
from data_pipeline.storage import Store
from data_pipeline.synth import SynthConfig, make_synthetic
from tests.bench.bench_run import REPO, run_in_process

ITEMS = {"whole": 3103, "lesion": 3568, "segmentation": 3568, "detection": 3103}
DEFAULT_KINDS = ("lesion", "segmentation", "detection")
CORES = (16, 64)


def test_stages_make_the_same_bytes_as_convert_item(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    bench = importlib.import_module("prepare_stages")
    data = make_synthetic(tmp_path, SynthConfig(patients=2, size=(600, 400)))
    catalog = build_catalog(data)
    for kind in ITEMS:
        cfg = bench.kind_config(kind)
        for item in plan_items(catalog, cfg, cfg.tasks[0]):
            row = convert_item(item, Sources(Store.at(data)), cfg)
            seconds, pngs = bench.stages(item, data, cfg)
            assert pngs == [row[k] for k in ("image", "mask") if k in row], kind
            assert set(seconds) == set(bench.STAGES) and min(seconds.values()) >= 0


def _check_kind(result: dict, kind: str) -> None:
    suffix = "" if kind == "lesion" else f"_{kind}"
    ours, seed = result[f"images_per_s{suffix}"], result[f"reference_images_per_s{suffix}"]
    assert ours > 0 and seed > 0
    assert result[f"ratio{suffix}"] == pytest.approx(ours / seed, rel=0.01, abs=0.01)
    stages = result["stages_ms"][kind]
    assert len(stages) == 8 and min(stages.values()) >= 0
    convert = sum(v for stage, v in stages.items() if stage not in ("check", "write"))
    # the same work timed twice: within a factor of two at this size (a few ms per image)
    assert 0.5 < convert / result["convert_item_ms"][kind] < 2
    assert 0.5 < sum(stages.values()) / result["write_shard_ms"][kind] < 2
    ext = result["extrapolation"][kind]
    assert ext["items"] == ITEMS[kind] and ext["ms_per_image_core"] > 0
    for cores in CORES:
        minutes = ext["items"] * ext["ms_per_image_core"] / 1e3 / cores / 60
        assert ext[f"cpu_minutes_{cores}_cores"] == pytest.approx(minutes, rel=1e-3)
    disk = ext["disk_gb"] * 1e3 / result["disk_read_mb_per_s"] / 60
    assert ext["disk_minutes"] == pytest.approx(disk, rel=1e-3)


def test_prepare_throughput_figures_hang_together(ray_local, capsys, monkeypatch) -> None:
    args = ["--patients", "2", "--size", "600", "400", "--images", "16"]
    result = run_in_process("prepare_throughput.py", args, capsys, monkeypatch)
    for kind in ITEMS:
        _check_kind(result, kind)
    ext, shares = result["extrapolation"], result["byte_shares"]
    assert sum(shares.values()) == pytest.approx(1, rel=1e-3)
    assert ext["whole"]["disk_gb"] == pytest.approx(163.6 * shares["image"], rel=1e-3)
    assert ext["lesion"]["disk_gb"] == pytest.approx(163.6, rel=1e-3)  # images, masks and crops
    disk = ext["lesion"]["disk_minutes"]  # one pass: every file once (the lesion kind reads all)
    for cores in CORES:
        cpu = sum(ext[k][f"cpu_minutes_{cores}_cores"] for k in DEFAULT_KINDS)
        assert result[f"full_dataset_minutes_{cores}_cores"] == pytest.approx(max(cpu, disk), 1e-3)
        assert result[f"bound_{cores}"] in ("disk", "decode", "cores")
        assert (result[f"bound_{cores}"] == "disk") == (disk >= cpu)
    assert result["disk_read_mb_per_s"] > 0 and result["page_cache_read_mb_per_s"] > 0
    assert result["pipeline_1_worker_images_per_s"] > 0 and result["plain_process_scaling"] > 0
    passes = result["passes"]  # a pass per task reads the full images three times, one pass once
    assert passes["per_task_files_per_image"] > passes["one_pass_files_per_image"] >= 1
    assert passes["per_task_bytes"] > 2 * passes["one_pass_bytes"] > 0
