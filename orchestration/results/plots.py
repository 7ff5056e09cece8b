"""Figures for runs and reports: ROC curve, confusion matrix, mask overlays, detections, curves.

Built on matplotlib's object API (``Figure``), so no display or pyplot state is involved; callers
save them (``fig.savefig``) or hand them to MLflow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

CLASS_NAMES = {2: ["benign", "malignant"], 3: ["benign", "benign w/o callback", "malignant"]}


def roc_figure(labels: np.ndarray, scores: np.ndarray, title: str = "ROC") -> Figure:
    """ROC curve of malignant-vs-rest scores, with its AUC in the legend."""
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(labels, scores):.3f}")
        ax.legend(loc="lower right")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Confusion matrix (rows: truth, columns: prediction) with counts in the cells."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ticks = range(len(classes))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix",
    )
    fig.tight_layout()
    return fig


def _grid(n: int, title: str) -> tuple[Figure, list[Any]]:
    cols = min(n, 4)
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows + 0.3), dpi=100)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return fig, axes


def overlay_figure(images: np.ndarray, masks: np.ndarray, preds: np.ndarray) -> Figure:
    """Images with the true mask (green) and the predicted mask (red) outlined."""
    fig, axes = _grid(len(images), "true (green) vs predicted (red)")
    for ax, image, mask, pred in zip(axes, images, masks, preds, strict=True):
        ax.imshow(image, cmap="gray")
        for layer, colour in ((mask, "lime"), (pred, "red")):
            if np.asarray(layer).max() > 0:
                ax.contour(np.asarray(layer) > 127, levels=[0.5], colors=colour, linewidths=1)
    return fig


def detection_figure(
    images: np.ndarray,
    boxes: Sequence[np.ndarray],
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    threshold: float = 0.3,
) -> Figure:
    """Images with true boxes (green) and detections above ``threshold`` (red, with score)."""
    fig, axes = _grid(len(images), f"true (green) vs detected (red, score >= {threshold})")
    for ax, image, true, pred, score in zip(
        axes, images, boxes, pred_boxes, pred_scores, strict=True
    ):
        ax.imshow(image, cmap="gray")
        for box in np.asarray(true).reshape(-1, 4):
            ax.add_patch(_rect(box, "lime"))
        for box, s in zip(np.asarray(pred).reshape(-1, 4), np.asarray(score), strict=True):
            if s >= threshold:
                ax.add_patch(_rect(box, "red"))
                ax.text(box[0], box[1], f"{s:.2f}", color="red", fontsize=6, va="bottom")
    return fig


def _rect(box: np.ndarray, colour: str) -> Rectangle:
    x0, y0, x1, y1 = (float(v) for v in box)
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1)


def curves_figure(histories: Mapping[str, Sequence[tuple[int, float]]], metric: str) -> Figure:
    """One line per run: ``metric`` against epoch."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, points in histories.items():
        if points:
            epochs, values = zip(*sorted(points), strict=True)
            ax.plot(epochs, values, marker="o", ms=3, label=name)
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if histories:
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def comparison_figure(rows: Sequence[Mapping[str, Any]], metric: str) -> Figure:
    """Each trial's best ``metric`` as a bar, pretrained and scratch trials in two colours."""
    fig = Figure(figsize=(max(4, 0.6 * len(rows) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    names = [str(r["name"]) for r in rows]
    values = [float(r.get("value", np.nan)) for r in rows]
    colours = ["tab:blue" if r.get("pretrained") else "tab:orange" for r in rows]
    ax.bar(range(len(rows)), values, color=colours)
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=f"best {metric} per trial\n(blue: pretrained, orange: scratch)")
    fig.tight_layout()
    return fig


def sweep_figures(
    rows: Sequence[Mapping[str, Any]],
    histories: Mapping[str, Sequence[tuple[int, float]]],
    metric: str,
) -> dict[str, Figure]:
    """A sweep's figures by artifact path: each trial's best ``metric``, and its curves."""
    return {
        "plots/trials_comparison.png": comparison_figure(rows, metric),
        "plots/learning_curves.png": curves_figure(histories, metric),
    }


def validation_figures(task: str, record: Mapping[str, Any]) -> Iterator[tuple[str, Figure]]:
    """(file name, figure) pairs of a trial's best validation predictions (its checkpoint's
    record: ``outputs`` of classification, a ``preview`` batch of segmentation and detection)."""
    outputs, preview = record.get("outputs", {}), record.get("preview", {})
    if task == "classification" and "probs" in outputs:
        probs, labels = outputs["probs"].numpy(), outputs["label"].numpy()
        classes = CLASS_NAMES.get(probs.shape[1], [str(i) for i in range(probs.shape[1])])
        matrix = confusion_matrix(labels, probs.argmax(1), labels=list(range(probs.shape[1])))
        yield "confusion_matrix.png", confusion_figure(matrix, classes)
        malignant = (labels == probs.shape[1] - 1).astype(int)
        yield "roc_curve.png", roc_figure(malignant, probs[:, -1], "validation ROC")
    elif task == "segmentation" and "image" in preview:
        yield (
            "mask_overlays.png",
            overlay_figure(*(preview[k].numpy() for k in ("image", "mask", "pred"))),
        )
    elif task == "detection" and "image" in preview:
        boxes = [[t.numpy() for t in preview[k]] for k in ("boxes", "pred_boxes", "pred_scores")]
        images = [image.numpy() for image in preview["image"]]
        yield "detections.png", detection_figure(images, *boxes)
