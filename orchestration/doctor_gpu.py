"""``mammobench doctor --gpu``: one AMP training step and one evaluation batch of each study
architecture at the study's size, on one GPU worker, with its peak memory against the GPU's.

The step is the Train workers' own (``orchestration.train.steps``, importable without Ray) on a
synthetic batch shaped like the prepared rows (``decoded_batch``); only ``gpu_checks`` needs Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from orchestration.doctor import Check
    from search_spaces.benchmarks import Benchmark

SIZE_KEYS = {"classification": "cls_size", "segmentation": "seg_size", "detection": "det_size"}
MEMORY_WARN = 0.85  # share of the GPU's memory above which a row leaves too little headroom
GPU_WAIT_S = 600  # an autoscaling cluster may first have to start a GPU node


def study_rows(bench: Benchmark) -> list[dict[str, Any]]:
    """One row per architecture of ``bench``: its task, the config's input size, and the
    largest batch its sweeps can choose (the memory worst case)."""
    from data_pipeline.prepare_plan import PrepareConfig

    defaults = PrepareConfig()
    rows: dict[str, dict[str, Any]] = {}
    for run in bench.runs:
        key = SIZE_KEYS[run.task]
        size = int(bench.prepare.get(key, getattr(defaults, key)))
        batch = max_batch(run.sweep, run.task, run.model)
        row = rows.setdefault(run.model, {"arch": run.model, "task": run.task, "size": size})
        row["batch"] = max(batch, row.get("batch", 0))
    return list(rows.values())


def max_batch(sweep: dict[str, Any], task: str, model: str) -> int:
    """The largest batch size a sweep trains with: pinned (``fix``/``train``) or its space's."""
    from orchestration.train.config import TrainConfig
    from search_spaces import default_space, load_space

    space = load_space(sweep.get("space") or default_space(task, model))
    values = space.fix(sweep.get("fix", {})).values("batch_size")
    pinned = sweep.get("train", {}).get("batch_size")
    return int(max(values or [pinned or TrainConfig.batch_size]))


def step_and_evaluate(row: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One AMP training step and one evaluation batch of ``row``'s architecture on ``device``:
    the peak memory in bytes (0 off a GPU), or the error that stopped it."""
    import torch

    from data_pipeline.synth_images import decoded_batch
    from models import build_model
    from orchestration.train.config import TrainConfig
    from orchestration.train.steps import amp_for, evaluate, make_optimizer, train_step
    from orchestration.train.tasks import collate, make_task

    cfg = TrainConfig(
        model=row["arch"], data="", task=row["task"], image_size=row["size"], num_classes=2
    )
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model = build_model(cfg.model_spec()).to(device).train()
        task = make_task(cfg.task, cfg.in_chans, lesion_only=cfg.lesion_detector)
        rng = np.random.default_rng(0)
        amp, batch = amp_for(device), decoded_batch(row["task"], row["size"], row["batch"], rng)
        train_step(task, model, make_optimizer(cfg, model), collate(batch, device), amp)
        with torch.autocast(device.type, dtype=amp[0], enabled=amp[0] is not None):
            outputs, _ = evaluate(task, model, [batch], device)
        peak = torch.cuda.max_memory_allocated(device) if cuda else 0
        return {"peak_bytes": int(peak), "rows": len(outputs["patient_id"])}
    except torch.cuda.OutOfMemoryError:
        return {"error": f"out of memory at batch {row['batch']}"}
    except Exception as exc:  # any reason the step fails is the finding
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def gpu_probe(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run in a Ray task holding one GPU: the GPU, its memory, and each row's result."""
    import platform

    import torch

    if not torch.cuda.is_available():
        return {"error": f"torch {torch.__version__} sees no CUDA device on this GPU worker"}
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    results = [row | step_and_evaluate(row, device) for row in rows]
    return {
        "gpu": props.name,
        "total_bytes": int(props.total_memory),
        "host": platform.node(),
        "rows": results,
    }


def gpu_checks(bench: Benchmark, cluster_gpus: float, can_add_gpus: bool) -> list[Check]:
    """``--gpu``: WARN where the cluster has no GPU (and cannot add one), else one line per
    architecture from a task on one GPU worker."""
    from orchestration.doctor import Check, run_task

    if not cluster_gpus and not can_add_gpus:
        fix = "run `mammobench doctor --gpu` against the GPU cluster (--address, or a Ray job)"
        return [Check("gpu", "WARN", "no GPU in this cluster: nothing checked on a GPU", fix)]
    rows = study_rows(bench)
    result, error = run_task(gpu_probe, rows, timeout_s=GPU_WAIT_S, num_gpus=1)
    if error or "error" in result:
        fix = "give the GPU nodes a CUDA build of torch (the cluster image) and a working driver"
        return [Check("gpu", "FAIL", error or result["error"], fix)]
    total = result["total_bytes"]
    where = f"{result['gpu']} on {result['host']}, {total / 2**30:.0f} GiB"
    return [Check("gpu", "PASS", f"{where}: AMP step + eval batch per architecture")] + [
        _row_check(row, total) for row in result["rows"]
    ]


def _row_check(row: dict[str, Any], total: int) -> Check:
    from orchestration.doctor import Check

    what = f"{row['arch']} ({row['task']}, {row['size']} px, batch {row['batch']})"
    if "error" in row:
        fix = "lower the batch size of its sweep (`fix: {batch_size: N}` in the config)"
        return Check(f"gpu.{row['arch']}", "FAIL", f"{what}: {row['error']}", fix)
    share = row["peak_bytes"] / total
    detail = f"{what}: peak {row['peak_bytes'] / 2**30:.1f} GiB, {share:.0%} of the GPU"
    if share > MEMORY_WARN:
        fix = "little headroom: lower its batch size, or use a GPU with more memory"
        return Check(f"gpu.{row['arch']}", "WARN", detail, fix)
    return Check(f"gpu.{row['arch']}", "PASS", detail)
