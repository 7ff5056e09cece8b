"""Demo wall time by stage: ``mammobench benchmark --demo`` end to end in a fresh work dir, then
where its time went, read back from the MLflow store it wrote.

Stages: synthesis, prepare, the sweeps (two at a time in the demo) and the leaderboard, from the
benchmark run's ``time_*_s``; per sweep, its Tune run (``time_tune_s``), test evaluation
(``time_test_s``), model logging and registration (``time_register_s``) and figures
(``time_figures_s``); per trial, its start-up (``first_step_s``), its epochs (``epoch_s``, of which
validation ``epoch_eval_s``) and the rest (Tune's ``time_total_s`` less those: teardown and
reporting). Ends with one JSON line; ``ratio`` = the trials' start-up seconds / their epochs'
seconds. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/demo_time.py [--config demo] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_demo(home: Path, config: str) -> tuple[float, dict[str, Any]]:
    """The benchmark in its own process (as ``make demo`` runs it); wall seconds, its JSON."""
    cli = Path(sys.executable).with_name("mammobench")
    env = os.environ | {"MAMMOBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(
        [str(cli), "benchmark", "--config", config, "--json"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark failed ({done.returncode}):\n{done.stderr[-4000:]}")
    # Ray's workers may print after the JSON line: the benchmark's is the last one that parses
    lines = reversed(done.stdout.splitlines())
    return wall, next(json.loads(line) for line in lines if line.startswith('{"'))


def breakdown(home: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Stage seconds of the benchmark, of each sweep and of its trials, from MLflow."""
    from mlflow import MlflowClient

    from orchestration.results.tracking import KIND_TAG, PARENT_TAG

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    top = client.get_run(result["run_id"])
    exp = top.info.experiment_id
    sweeps = {}
    for run in client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{top.info.run_id}'"):
        if run.data.tags.get(KIND_TAG) != "sweep":
            continue
        trials = client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")
        if trials:  # not a skipped sweep (pretrained, without weights)
            sweeps[run.info.run_name] = _sweep(client, run) | _trials(client, trials)
    stages = {k.removeprefix("time_"): v for k, v in top.data.metrics.items() if "time_" in k}
    return {"stages": stages, "sweeps": sweeps}


def _sweep(client, run) -> dict[str, float]:
    wall = (run.info.end_time - run.info.start_time) / 1000
    times = {k.removeprefix("time_"): v for k, v in run.data.metrics.items() if "time_" in k}
    return {"wall_s": wall, **times}


def _trials(client, runs: list) -> dict[str, float]:
    """Summed over a sweep's trials: start-up, epochs, validation, the rest."""
    out = {"trials": len(runs), "startup_s": 0.0, "epochs_s": 0.0, "val_s": 0.0, "epochs": 0}
    for run in runs:
        rid = run.info.run_id
        first = client.get_metric_history(rid, "first_step_s")
        out["startup_s"] += first[0].value if first else 0.0
        epochs = client.get_metric_history(rid, "epoch_s")
        out["epochs_s"] += sum(m.value for m in epochs)
        out["val_s"] += sum(m.value for m in client.get_metric_history(rid, "epoch_eval_s"))
        out["epochs"] += len(epochs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo", help="a shipped benchmark config or a file")
    parser.add_argument("--home", type=Path, help="work dir [default: a fresh temporary one]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = (args.home or Path(tmp)).resolve()
        home.mkdir(parents=True, exist_ok=True)
        wall, result = run_demo(home, args.config)
        found = breakdown(home, result)
    print(f"benchmark --config {args.config}: {wall:.0f} s end to end")
    print("stages:", ", ".join(f"{k} {v:.0f}" for k, v in found["stages"].items()))
    for name, row in sorted(found["sweeps"].items()):
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
    print(json.dumps(_result(wall, found)))


def _result(wall: float, found: dict[str, Any]) -> dict[str, Any]:
    sweeps = list(found["sweeps"].values())
    total = {k: sum(s.get(k, 0.0) for s in sweeps) for k in sweeps[0]} if sweeps else {}
    stages = {f"stage_{k}": round(v, 1) for k, v in found["stages"].items()}
    return {
        "wall_s": round(wall, 1),
        **stages,
        "sweeps": len(sweeps),
        **{f"sweeps_{k}": round(v, 1) for k, v in total.items()},
        "ratio": round(total["startup_s"] / total["epochs_s"], 3) if total else None,
    }


if __name__ == "__main__":
    main()
