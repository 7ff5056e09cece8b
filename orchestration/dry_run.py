"""``mammobench benchmark --dry-run``: what a benchmark would run, skip and cost, before any GPU.

Every sweep of the config is resolved as ``benchmark`` would resolve it (its space fitted to the
architecture, pretrained weights looked for, the data's splits counted) without starting Ray or
training; its trials, resources and scheduler are listed with the expected GPU-hours of the
config's ``cost`` model (its per-epoch assumptions named there once, so README and dry run agree).
A row the config asks for that cannot run (an empty split, an unknown space, a setting the
architecture lacks) is an error: the dry run exits non-zero.
"""

from __future__ import annotations

import math
from typing import Any

from data_pipeline.storage import Store
from search_spaces.benchmarks import Benchmark, BenchmarkRun

ASHA_EPOCHS = 0.25  # share of max_epochs an ASHA trial runs on average, unless the cost says


def plan_benchmark(
    bench: Benchmark, data: str | None, weights_dir: str | None, seeds: int | None = None
) -> dict[str, Any]:
    """The plan: one entry per sweep, the data's splits, the totals of the cost model."""
    splits, problem = data_splits(bench, data)
    sweeps = [_sweep(bench, run, splits, weights_dir, seeds) for run in bench.runs]
    return {
        "benchmark": bench.name,
        "data": str(data) if data else _no_data(bench),
        "data_problem": problem,
        "splits": splits,
        "sweeps": sweeps,
        "cost": _totals(bench, sweeps),
        "runnable": not problem and all(s["status"] != "error" for s in sweeps),
    }


def _no_data(bench: Benchmark) -> str:
    return "a synthetic set (made at run time)" if bench.synth else "no data (splits not checked)"


def data_splits(bench: Benchmark, data: str | None) -> tuple[dict[str, dict[str, int]] | None, str]:
    """Rows per split of each task (``classification-whole`` for whole images): from the
    manifest of prepared shards, from the catalog of a download; None for the synthetic set.
    With them, what makes a download unusable ("" when nothing does): files its CSVs name
    that are missing or unreadable, counted as ``catalog`` counts them."""
    if data is None:
        return None, ""
    store = Store.at(data)
    if store.is_file("manifest.json"):
        import json

        manifest = json.loads(store.read_bytes("manifest.json"))
        whole = manifest.get("config", {}).get("cls_input") == "whole"
        out = {}
        for task, info in manifest.get("tasks", {}).items():
            key = "classification-whole" if task == "classification" and whole else task
            out[key] = dict(info.get("splits", {}))
        return out, ""
    from data_pipeline.catalog import build_catalog

    catalog = build_catalog(data, None)
    summary = catalog.summary()
    lesions = {k: v for k, v in summary["by_split"].items() if k != "excluded"}
    images = dict(summary["images_by_split"])
    splits = {
        "classification": lesions,
        "segmentation": lesions,
        "classification-whole": images,
        "detection": images,
    }
    return splits, _unusable(catalog.missing, catalog.unreadable)


def _unusable(missing: list[str], unreadable: dict[str, str]) -> str:
    """What the download lacks: prepare would quarantine every row of these files."""
    if not missing and not unreadable:
        return ""
    first = [*missing[:3], *(f"{f} ({why})" for f, why in list(unreadable.items())[:3])][:3]
    return (
        f"{len(missing)} files the CSVs name are missing and {len(unreadable)} unreadable "
        f"(first: {', '.join(first)}): copy the whole download where every node reads it"
    )


def _sweep(
    bench: Benchmark,
    run: BenchmarkRun,
    splits: dict[str, dict[str, int]] | None,
    weights_dir: str | None,
    seeds: int | None,
) -> dict[str, Any]:
    sweep = run.sweep
    row: dict[str, Any] = {
        "sweep": run.key,
        "model": run.model,
        "task": run.task,
        "setting": run.setting,
        "input": run.input if run.task == "classification" else None,
        "scheduler": sweep.get("scheduler", "asha"),
        "max_epochs": sweep.get("max_epochs", 10),
        "samples": sweep.get("samples", 1),
        "workers": sweep.get("workers", 1),
        "gpus_per_trial": sweep.get("gpus_per_trial", 0),
        "seeds": seeds or sweep.get("seeds", 1),
        "status": "run",
        "reason": "",
    }
    problem = _data_problem(run, splits) or _setting_problem(run)
    if problem:
        return row | {"status": "error", "reason": problem, "trials": 0}
    skip = _pretrained_problem(run, weights_dir)
    if skip:
        return row | {"status": "skip", "reason": skip, "trials": 0}
    try:
        row["trials"] = _trials(run, weights_dir)
    except ValueError as exc:  # a bad space file, a setting the architecture lacks
        return row | {"status": "error", "reason": str(exc), "trials": 0}
    return row | _cost(bench, row)


def _data_problem(run: BenchmarkRun, splits: dict[str, dict[str, int]] | None) -> str:
    if splits is None:
        return ""
    key = "classification-whole" if run.input == "whole" else run.task
    counts = splits.get(key)
    if counts is None:
        return f"the data has no {key} rows (prepare it, or pass the download)"
    empty = [s for s in ("train", "val", "test") if not counts.get(s)]
    return f"empty {', '.join(empty)} split(s) of {key}" if empty else ""


def _setting_problem(run: BenchmarkRun) -> str:
    if run.setting != "study_frozen":
        return ""
    from models import model_info

    unfreeze = model_info(run.model)["study_unfreeze"]
    return "" if unfreeze not in (None, "all") else f"the study froze no layers of {run.model}"


def _pretrained_problem(run: BenchmarkRun, weights_dir: str | None) -> str:
    if run.setting != "pretrained":
        return ""
    from models import ModelSpec, weights_available

    ok, reason = weights_available(ModelSpec(run.model, pretrained=True, weights_dir=weights_dir))
    return "" if ok else reason.splitlines()[0]


def _trials(run: BenchmarkRun, weights_dir: str | None) -> int:
    """Trials of the sweep: the product of its space's grids times its samples."""
    from orchestration.tune import resolve_space

    fixed = {**run.sweep.get("fix", {}), "pretrained": run.setting == "pretrained"}
    space, _ = resolve_space(run.sweep.get("space"), run.task, run.model, weights_dir, fixed)
    grids = [len(dist["grid"]) for dist in space.params.values() if "grid" in dist]
    return math.prod(grids) * run.sweep.get("samples", 1)


def _cost(bench: Benchmark, row: dict[str, Any]) -> dict[str, float]:
    """Expected epochs per trial and GPU-hours of a sweep, by the config's cost model."""
    model = bench.cost
    if not model:
        return {"expected_epochs": None, "gpu_hours": None}
    share = 1.0 if row["scheduler"] == "fifo" else model.get("asha_epochs", ASHA_EPOCHS)
    epochs = max(row["max_epochs"] * share, 1)
    epoch_s = model["epoch_s"][row["task"]]
    trial_h = (epochs * epoch_s + model["startup_s"]) / 3600
    repeat_h = (row["max_epochs"] * epoch_s + model["startup_s"]) / 3600
    gpus = row["gpus_per_trial"]
    hours = row["trials"] * trial_h * gpus + (row["seeds"] - 1) * repeat_h * gpus
    return {"expected_epochs": round(epochs, 1), "gpu_hours": round(hours, 3)}


def _totals(bench: Benchmark, sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    model = bench.cost or {}
    hours = [s["gpu_hours"] for s in sweeps if s.get("gpu_hours") is not None]
    gpus = model.get("gpus")
    total = round(sum(hours), 1) if hours else None
    return {
        "model": model,
        "gpu_hours": total,
        "wall_hours": round(total / gpus, 1) if total is not None and gpus else None,
        "trials": sum(s["trials"] for s in sweeps if s["status"] == "run"),
    }


def plan_text(plan: dict[str, Any]) -> str:
    """The plan as the console shows it."""
    lines = [f"benchmark {plan['benchmark']} on {plan['data']} (dry run: nothing trained)"]
    if plan.get("data_problem"):
        lines.append(f"  error data: {plan['data_problem']}")
    for s in plan["sweeps"]:
        what = f"{s['trials']} trials x <= {s['max_epochs']} epochs, {s['scheduler']}"
        use = f"{s['workers']} worker(s), {s['gpus_per_trial']} GPU(s) per trial"
        extra = f", {s['seeds']} seeds" if s["seeds"] > 1 else ""
        cost = f", ~{s['gpu_hours']} GPU-h" if s.get("gpu_hours") is not None else ""
        if s["status"] == "run":
            lines.append(f"  run   {s['sweep']}: {what}; {use}{extra}{cost}")
        else:
            lines.append(f"  {s['status']:<5} {s['sweep']}: {s['reason']}")
    cost = plan["cost"]
    if cost["gpu_hours"] is not None:
        gpu = cost["model"].get("gpu", "the cost model's GPU")
        lines.append(
            f"expected: {cost['trials']} trials, ~{cost['gpu_hours']} GPU-hours on {gpu}, "
            f"~{cost['wall_hours']} h of wall clock on {cost['model'].get('gpus')} GPUs "
            "(the config's cost model; the leaderboard reports what a run measured)"
        )
    if not plan["runnable"]:
        lines.append("some rows cannot run: see 'error' above")
    return "\n".join(lines)
