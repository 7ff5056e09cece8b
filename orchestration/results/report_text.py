"""Plain-text renderings of summaries for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def catalog_text(summary: dict[str, Any]) -> str:
    """A readable catalog summary."""
    lines = [
        f"CBIS-DDSM catalog of {summary['data']}",
        f"  CSV files      {', '.join(summary['csv_files'])}",
        f"  abnormalities  {summary['abnormalities']}",
        f"  full images    {summary['images']}",
        f"  patients       {summary['patients']}",
        f"  by split       {_counts(summary['by_split'])}",
        f"  by pathology   {_counts(summary['by_pathology'])}",
        f"  by lesion type {_counts(summary['by_lesion_type'])}",
        f"  missing files  {summary['missing_files']}",
        f"  rejected rows  {summary['rejected_rows']}",
    ]
    lines += [f"    e.g. missing {path}" for path in summary["missing_examples"][:3]]
    lines += [
        f"    rejected {r['csv_file']} line {r['line']}: {r['reason']}"
        for r in summary["rejections"][:5]
    ]
    return "\n".join(lines)


def prepare_text(manifest: dict[str, Any], out: Any, tasks: tuple[str, ...]) -> tuple[str, float]:
    """A readable prepare summary, and the largest quarantined share among ``tasks``."""
    lines, worst = [f"prepared {out}"], 0.0
    for task in tasks:
        t = manifest["tasks"][task]
        share = t["quarantined"] / t["expected"] if t["expected"] else 0.0
        worst = max(worst, share)
        lines.append(
            f"  {task:<15} expected {t['expected']:>6}  written {t['written']:>6}  "
            f"quarantined {t['quarantined']:>5} ({share:.1%})  {_counts(t['splits'])}"
        )
    lines.append(f"  manifest {out}/manifest.json, quarantine {out}/quarantine.csv")
    return "\n".join(lines), worst


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and value and isinstance(value[0], float):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    return str(value)


def train_text(result: dict[str, Any]) -> str:
    """Best validation and test metrics of one training job."""
    lines = [f"run {result['run']}: {result['epochs']} epochs, best epoch {result['best_epoch']}"]
    for split in ("val", "test"):
        items = [f"{k} {_fmt(v)}" for k, v in result[split].items() if not isinstance(v, dict)]
        lines.append(f"  {split:<4} " + ", ".join(items))
    lines.append(f"  checkpoint {result['checkpoint']}")
    return "\n".join(lines)


def evaluation_text(result: dict[str, Any]) -> str:
    """An external validation's metrics (with their CIs) on one prepared split."""
    head = f"{result['model_uri']} on {result['data']} ({result['split']}, n={result['n']})"
    items = [
        f"{k} {_fmt(v)}" + (f" {_fmt(result[k + '_ci'])}" if k + "_ci" in result else "")
        for k, v in result.items()
        if isinstance(v, float) and not k.endswith("_ci")
    ]
    return "\n".join([head, "  " + ", ".join(items), f"  MLflow run {result['run_id']}"])


def _choices(choices: list[Any]) -> str:
    numbers = [c for c in choices if isinstance(c, int)]
    return f"0..{max(numbers)}, all" if numbers else ", ".join(map(str, choices))


def models_text(rows: list[dict[str, Any]]) -> str:
    """The model registry as an aligned table."""
    lines = [f"{'name':22} {'task':15} {'library':12} {'size':>5} {'params':>12}  unfreeze"]
    for r in rows:
        lines.append(
            f"{r['name']:22} {r['task']:15} {r['library']:12} {r['input_size']:>5} "
            f"{r['params']:>12,}  {_choices(r['unfreeze_choices'])}"
        )
    return "\n".join(lines)


def tune_text(summary: dict[str, Any], settings: Any) -> str:
    """A sweep's trials, its best trial and where to look next."""
    lines = [
        f"sweep {summary['sweep']} (MLflow experiment {summary['experiment']}, "
        f"parent run {summary['parent_run_id']})"
    ]
    if summary.get("skipped_pretrained"):
        reason = summary["skipped_pretrained"].replace("\n", "\n    ")
        lines.append(f"  pretrained trials skipped: {reason}")
    for t in summary["trials"]:
        value = next((v for k, v in t.items() if k.startswith("best_val_")), None)
        stopped = " (stopped early)" if t["stopped_early"] else ""
        lines.append(
            f"  {t['trial_id']}: {t['status']}, {t['epochs']} epochs, best "
            f"{_fmt(value)}{stopped}  {t['config']}"
        )
    best = summary.get("best")
    if best:
        lines.append(f"  best {best['trial_id']}: {best['params']}")
        items = [
            f"{k} {_fmt(v)}" for k, v in best.get("test", {}).items() if not isinstance(v, dict)
        ]
        lines.append("  test " + ", ".join(items))
    seeds = summary.get("seeds") or {}
    for key in (k for k in seeds if k.startswith("seed_mean_")):
        metric = key.removeprefix("seed_mean_")
        lines.append(
            f"  {seeds['seeds']} seeds: test {metric} {_fmt(seeds[key])} "
            f"+- {_fmt(seeds[f'seed_sd_{metric}'])} (mean +- sd)"
        )
    if summary.get("registered_model"):
        reg = summary["registered_model"]
        lines.append(f"  registered model {reg['name']} version {reg['version']}")
    lines.append(f"  browse: mammobench --tracking-uri {settings.tracking_uri} ui")
    return "\n".join(lines)


def benchmark_text(result: dict[str, Any], report: Path, settings: Any) -> str:
    """The leaderboard and where everything went."""
    from orchestration.results.leaderboard import markdown

    folder = Path(result["folder"])
    lines = [
        f"benchmark {result['name']} (MLflow experiment {result['experiment']})",
        "",
        markdown(result["rows"]),
        f"leaderboard: {folder / 'leaderboard.md'} and {folder / 'leaderboard.csv'}",
        f"report:      {report}",
        f"MLflow UI:   mammobench --tracking-uri {settings.tracking_uri} ui   (or: make ui)",
    ]
    if result.get("timings"):
        spent = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in result["timings"].items())
        lines.append(f"time:        {spent}")
    if result["failed"]:
        lines.append(f"failed sweeps: {', '.join(result['failed'])} (see the notes above)")
    return "\n".join(lines)
