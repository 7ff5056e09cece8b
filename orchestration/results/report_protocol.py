"""The report's "How our protocol differs from the study's": computed, never hand-written.

Each topic states the study's practice (from its text, ``../shared/seed/``) beside ours, read from
the benchmark config as logged and from the prepared data (``analysis.json``'s ``protocol``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestration.results.report_sections import INPUT_TEXT, _e, _names_by_setting, missing
from orchestration.train.operating_point import THRESHOLD_TEXT

STUDY = {  # the study's practice, from its text
    "data split": (
        "all images augmented first, then split into train and test: augmented copies "
        "of one image can land on both sides (leakage)"
    ),
    "test set balance": "re-balanced by augmenting the minority class",
    "classifier input": "whole mammograms resized to 224 px",
    "scratch models": (
        'trained "from scratch" with the early layers frozen: those layers keep '
        "their random weights"
    ),
    "U-Net": "a custom U-Net (batch norm, dropout, transposed convolutions)",
    "optimiser and schedule": "Adam, early stopping, learning rate reduced on plateau",
    "model selection and threshold": (
        "the saved best model; accuracy of the argmax class (threshold 0.5)"
    ),
    "mixed images": "not discussed",
    "seeds": "one run per model",
}
BALANCING = {"oversample": "oversampling", "weighted": "a class-weighted loss", "none": "nothing"}
ENCODERS = {"resnet50": "ResNet-50", "resnet34": "ResNet-34", "resnet18": "ResNet-18"}
ENCODERS["tu-tf_efficientnet_lite0"] = "EfficientNet-Lite0"
UNET_ENCODERS = {"unet": "resnet50", "unet_efficientnet_lite0": "tu-tf_efficientnet_lite0"}


def protocol_differences(
    bench: Mapping[str, Any], facts: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """(topic, the study, ours) rows: the study's practice from its text, ours computed from the
    logged benchmark config and the prepared data's facts."""
    runs = bench.get("runs", [])
    ours = {
        "data split": _split(bench, facts),
        "test set balance": _balance(runs, facts),
        "classifier input": _inputs(bench),
        "scratch models": _scratch(runs),
        "U-Net": _unet(runs),
        "optimiser and schedule": _optimiser(runs),
        "model selection and threshold": _selection(runs),
        "mixed images": _mixed(facts),
        "seeds": _seeds(facts),
    }
    return [(topic, STUDY[topic], ours[topic]) for topic in STUDY]


def _train(run: Mapping[str, Any], key: str, default: str) -> str:
    sweep = run.get("sweep", {})
    return str(sweep.get("train", {}).get(key) or sweep.get("fix", {}).get(key) or default)


def _split(bench: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    fraction = facts.get("val_fraction", bench.get("prepare", {}).get("val_fraction"))
    val = f"{fraction:.0%} of training patients" if fraction is not None else "training patients"
    images = facts.get("test_images")
    test = f" ({images} images)" if images is not None else ""
    return (
        f"the official CBIS-DDSM test split{test}; a patient-level validation split of {val}; "
        "augmentation on the fly, in training only"
    )


def _balance(runs: Sequence[Mapping[str, Any]], facts: Mapping[str, Any]) -> str:
    prevalence = facts.get("test_prevalence")
    if prevalence is None:
        text = "the official test prevalence (not recorded)"
    else:
        majority = max(prevalence, 1 - prevalence)
        text = (
            f"the official test prevalence, {prevalence:.0%} malignant "
            f"(always answering the majority class scores {majority:.0%} accuracy)"
        )
    classifiers = [r for r in runs if r.get("task") == "classification"]
    balancing = sorted({_train(r, "balance", "oversample") for r in classifiers})
    by = " / ".join(BALANCING.get(b, b) for b in balancing)
    return text + (f"; training classes balanced by {by}" if balancing else "")


def _inputs(bench: Mapping[str, Any]) -> str:
    """Each classification input at each size (a run's own ``prepare`` size over the config's)."""
    default = bench.get("prepare", {}).get("cls_input", "crop")
    size = bench.get("prepare", {}).get("cls_size")
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for run in bench.get("runs", []):
        if run.get("task") == "classification":
            own = (run.get("prepare") or {}).get("cls_size", size)
            groups.setdefault((run.get("input") or default, own), []).append(run)
    if not groups:
        return "no classification run"
    return "; ".join(
        f"{INPUT_TEXT.get(kind, kind)}{f' at {px} px' if px else ''}: {_names_by_setting(rs)}"
        for (kind, px), rs in groups.items()
    )


def _scratch(runs: Sequence[Mapping[str, Any]]) -> str:
    frozen = [r for r in runs if r.get("setting") == "study_frozen"]
    text = "every layer trained from random initialisation"
    if frozen:
        return (
            text + f'; setting "study_frozen" reproduces the study\'s: {_names_by_setting(frozen)}'
        )
    return text + ' (no "study_frozen" run reproduces the study\'s frozen random layers)'


def _unet(runs: Sequence[Mapping[str, Any]]) -> str:
    unets = [r for r in runs if r.get("model") in UNET_ENCODERS]
    if not unets:
        return "no U-Net run"
    encoders = sorted({_train(r, "encoder", UNET_ENCODERS[r["model"]]) for r in unets})
    names = " / ".join(ENCODERS.get(e, e) for e in encoders)
    return f"segmentation_models.pytorch's U-Net, {names} encoder"


def _optimiser(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return "no run"
    combos = _by_value(
        runs, lambda r: f"{_train(r, 'optimizer', 'adamw')} + {_train(r, 'schedule', 'cosine')}"
    )
    sweeps = [r.get("sweep", {}) for r in runs]
    epochs = "/".join(str(e) for e in sorted({s.get("max_epochs") or 0 for s in sweeps}))
    samples = "/".join(str(n) for n in sorted({s.get("samples") or 0 for s in sweeps}))
    stop = "/".join(sorted({s.get("scheduler") or "asha" for s in sweeps}))
    return f"{combos}; up to {epochs} epochs, {samples} trials per sweep, {stop} stops trials early"


def _selection(runs: Sequence[Mapping[str, Any]]) -> str:
    classifiers = [r for r in runs if r.get("task") == "classification"]
    rules = _by_value(classifiers, _rule_text)
    return (
        "best epoch and trial by validation AUC; threshold chosen by "
        f"{rules or THRESHOLD_TEXT['youden']}, applied unchanged to test"
    )


def _rule_text(run: Mapping[str, Any]) -> str:
    rule = _train(run, "threshold_rule", "youden")
    return THRESHOLD_TEXT.get(rule, rule)


def _by_value(runs: Sequence[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], str]) -> str:
    """``v (all runs)``, or the commonest value for "the other runs" and the rest by run."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(value(run), []).append(run)
    if len(groups) < 2:
        return "".join(f"{v} (all runs)" for v in groups)
    common = max(groups, key=lambda v: len(groups[v]))
    rest = [f"{v} ({_names_by_setting(rs)})" for v, rs in groups.items() if v != common]
    return "; ".join([f"{common} (the other runs)", *rest])


def _mixed(facts: Mapping[str, Any]) -> str:
    mixed, total = facts.get("mixed_test_images"), facts.get("test_images")
    if mixed is None or total is None:
        return "not recorded"
    return (
        f"{mixed} of {total} test images hold lesions from both the mass and the calcification "
        "CSVs (one label per lesion, not per image)"
    )


def _seeds(facts: Mapping[str, Any]) -> str:
    seeds = facts.get("seeds")
    if not seeds:
        return "not recorded"
    return f"{seeds} seeds per classifier (mean ± sd)" if seeds > 1 else "one seed per run"


def protocol_section(protocol: Mapping[str, Any] | None) -> str:
    """The protocol table, or the one-line message when the config was not logged."""
    if not protocol or "bench" not in protocol:
        return missing("protocol comparison", "protocol")
    rows = protocol_differences(protocol["bench"], protocol.get("facts", {}))
    body = "".join(f"<tr><th>{_e(t)}</th><td>{_e(s)}</td><td>{_e(o)}</td></tr>" for t, s, o in rows)
    return f'<table class="protocol"><tr><th>topic</th><th>the study</th><th>ours</th></tr>{body}</table>'


# Paired comparisons
