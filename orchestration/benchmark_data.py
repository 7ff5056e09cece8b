"""The benchmark's data: prepared once per classification input (and per validation-split seed
where seed repeats vary the split), and what the prepared data says for the report.

``prepare`` writes the shards; the benchmark only decides where and with which options. Shards
given as ``--data`` are used as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from data_pipeline.storage import Store, open_file
from orchestration.train.config import read_manifest, shard_paths
from search_spaces.benchmarks import Benchmark, BenchmarkRun

SYNTH_DONE = ".synth-complete"


@dataclass(frozen=True)
class Prepared:
    """Prepared shards by classification input, per validation-split seed (``splits``), and
    per set of a run's own prepare sizes (``sized``, by ``sizes_name``)."""

    crop: str  # a folder or a URI
    whole: str | None = None
    given: bool = False  # shards passed in as --data: one input, used as they are
    splits: dict[int, Prepared] = field(default_factory=dict)
    sized: dict[str, Prepared] = field(default_factory=dict)

    def for_run(self, run: BenchmarkRun) -> str:
        """A run's shards: its classification input's (the crop shards hold every task)."""
        if run.prepare:
            return self._sized(run).for_run(replace(run, prepare={}))
        if run.task != "classification":
            return self.crop
        if self.given:
            config = read_manifest(self.crop, "classification").get("config", {})
            prepared = config.get("cls_input", "crop")
            if prepared != run.input:
                raise ValueError(
                    f"{run.key} needs classification shards of input {run.input!r}; "
                    f"{self.crop} holds {prepared!r} (prepare --input {run.input}, or pass "
                    "the CBIS-DDSM download and let the benchmark prepare both)"
                )
            return self.crop
        if run.input == "whole" and self.whole is None:
            raise ValueError(f"{run.key}: no whole-image shards were prepared")
        return self.whole if run.input == "whole" else self.crop

    def split_data(self, run: BenchmarkRun) -> dict[int, str]:
        """Split seed -> the run's shards prepared with that validation split."""
        if run.prepare:
            return self._sized(run).split_data(replace(run, prepare={}))
        return {seed: str(prep.for_run(run)) for seed, prep in self.splits.items()}

    def _sized(self, run: BenchmarkRun) -> Prepared:
        name = sizes_name(run.prepare)
        if self.given or name not in self.sized:
            raise ValueError(
                f"{run.key} is prepared at its own sizes ({name}): pass the CBIS-DDSM download, "
                "not prepared shards, so that the benchmark prepares them"
            )
        return self.sized[name]


def sizes_name(sizes: dict[str, int]) -> str:
    """The folder suffix of a run's own prepare sizes, e.g. ``cls64-seg64``."""
    return "-".join(f"{key.removesuffix('_size')}{value}" for key, value in sorted(sizes.items()))


def prepare_benchmark(
    bench: Benchmark,
    data: str,
    out: str,
    echo: Callable[[str], None],
    split_seeds: list[int] = (),
    split_tasks: tuple[str, ...] | None = None,
) -> Prepared:
    """Prepare every task into ``out``, whole-image classification beside it when a run asks
    for it, and ``split_tasks`` again with each of ``split_seeds`` as the validation split's
    seed (the official test split is the same in all); the tasks of runs with their own
    prepare sizes again at those sizes, beside ``out``, once per set of sizes."""
    common = [run for run in bench.runs if not run.prepare]
    base = _prepare_runs(bench.prepare, common, data, out, echo, split_seeds, split_tasks)
    groups: dict[str, list[BenchmarkRun]] = {}
    for run in bench.runs:
        if run.prepare:
            groups.setdefault(sizes_name(run.prepare), []).append(run)
    sized = {}
    for name, runs in groups.items():
        options = {**bench.prepare, **runs[0].prepare}
        tasks = tuple(sorted({run.task for run in runs}))
        repeated = tuple(t for t in split_tasks or () if t in tasks)
        seeds = split_seeds if repeated else []
        folder = _beside(out, name)
        sized[name] = _prepare_runs(options, runs, data, folder, echo, seeds, repeated, tasks)
    return replace(base, sized=sized)


def _prepare_runs(
    options: dict[str, Any],
    runs: list[BenchmarkRun],
    data: str,
    out: str,
    echo: Callable[[str], None],
    split_seeds: list[int],
    split_tasks: tuple[str, ...] | None,
    tasks: tuple[str, ...] | None = None,
) -> Prepared:
    """``tasks`` (default: all) of ``data`` into ``out`` with ``options``, and the
    whole-image and split-seed shards that ``runs`` need beside it."""
    whole_needed = any(run.input == "whole" for run in runs)
    crop = prepare_once(data, out, options, echo, tasks)
    whole = None
    if whole_needed:
        whole_options = {**options, "cls_input": "whole"}
        whole = prepare_once(data, _beside(out, "whole"), whole_options, echo, ("classification",))
    splits = {}
    for seed in split_seeds:
        seeded = {**options, "seed": seed}
        split_whole = None
        if whole_needed:
            whole_options = {**seeded, "cls_input": "whole"}
            wfolder = _beside(out, f"whole-split{seed}")
            split_whole = prepare_once(data, wfolder, whole_options, echo, ("classification",))
        crops = prepare_once(data, _beside(out, f"split{seed}"), seeded, echo, split_tasks)
        splits[seed] = Prepared(crops, split_whole)
    return Prepared(crop, whole, splits=splits)


def _beside(out: str, suffix: str) -> str:
    """A sibling folder or prefix: ``<out>-<suffix>``."""
    return f"{out.rstrip('/')}-{suffix}"


def synthesise(out: Path, synth: dict[str, Any], echo: Callable[[str], None]) -> Path:
    """The demo's synthetic download, written once (same seed, same bytes)."""
    from data_pipeline.synth import SynthConfig, make_synthetic

    if not (out / SYNTH_DONE).is_file():
        echo(f"synthesising a CBIS-shaped dataset of {synth.get('patients', 24)} patients in {out}")
        make_synthetic(out, SynthConfig(**synth))
        (out / SYNTH_DONE).write_text("")
    return out


def prepare_once(
    data: str,
    out: str,
    options: dict[str, Any],
    echo: Callable[[str], None],
    tasks: tuple[str, ...] | None = None,
) -> str:
    """Prepare ``tasks`` (default: all) of ``data`` into ``out`` (a no-op when shards of the
    same inputs are there)."""
    from data_pipeline import TASKS
    from data_pipeline.catalog import build_catalog
    from data_pipeline.convert import prepare
    from data_pipeline.prepare_plan import PrepareConfig

    cfg = PrepareConfig(tasks=tasks or TASKS, **options)
    catalog = build_catalog(data, None, val_fraction=cfg.val_fraction, seed=cfg.seed)
    echo(f"preparing {data} into {out}")
    prepare(catalog, out, cfg, print_fn=echo)
    return out


def facts(bench: Benchmark, prepared: Prepared, seeds: int) -> dict[str, Any]:
    """The benchmark config and what the prepared data says, for the protocol section."""
    manifest = _manifest(prepared.crop)
    images, mixed = test_images(prepared)
    return {
        "bench": bench.to_dict(),
        "facts": {
            "test_images": images,
            "mixed_test_images": mixed,
            "val_fraction": manifest.get("config", {}).get("val_fraction"),
            "test_prevalence": _prevalence(prepared.crop, manifest),
            "seeds": seeds,
            "split_seeds": sorted(prepared.splits),
        },
    }


def _manifest(prep: str) -> dict[str, Any]:
    return json.loads(Store.at(prep).read_bytes("manifest.json"))


def test_images(prepared: Prepared) -> tuple[int | None, int | None]:
    """Whole test images, and how many of them hold lesions of both CSVs (mass and calc), from
    the whole-image shards (detection, else whole-image classification); None without them."""
    for prep in (p for p in (prepared.crop, prepared.whole) if p):
        manifest = _manifest(prep)
        whole = manifest.get("config", {}).get("cls_input") == "whole"
        for task in ("detection", "classification"):
            if task not in manifest.get("tasks", {}) or (task == "classification" and not whole):
                continue
            types = _column(prep, task, "lesion_type")
            return len(types), sum("+" in str(t) for t in types)
    return None, None


def _prevalence(prep: str, manifest: dict[str, Any]) -> float | None:
    if "classification" not in manifest.get("tasks", {}):
        return None
    labels = _column(prep, "classification", "label")
    malignant = 2 if manifest.get("config", {}).get("label_map") == "3class" else 1
    return sum(label == malignant for label in labels) / len(labels) if labels else None


def _column(prep: str, task: str, name: str) -> list:
    import pyarrow.parquet as pq

    values = []
    for path in shard_paths(prep, task, "test"):
        with open_file(path) as handle:
            values += pq.read_table(handle, columns=[name]).column(name).to_pylist()
    return values
