"""The report's reviewer sections, rendered from hand-made dicts and read as a reader would: the
cells of a table, the lines under it, the figures embedded."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestration.results import report, report_protocol, report_sections, review_plots
from orchestration.results.leaderboard import COLUMNS

SKIP = "pretrained weights not found in /weights"


def _row(model: str, task: str, setting: str, **values: Any) -> dict[str, Any]:
    metric = {"classification": "accuracy", "segmentation": "dice", "detection": "map50"}[task]
    row = dict.fromkeys(COLUMNS) | {"model": model, "task": task, "setting": setting}
    return row | {"metric": metric, "status": "done", "published_other": "", "note": ""} | values


class _Tables(HTMLParser):
    """Every table's rows as lists of cell texts (``th`` and ``td`` alike)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" / ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _pair(difference: float, p_holm: float) -> dict[str, float]:
    return {
        "auc_a": 0.8,
        "auc_b": 0.8 - difference,
        "difference": difference,
        "p": p_holm / 3,
        "p_holm": p_holm,
        "ci_low": difference - 0.03,
        "ci_high": difference + 0.03,
    }


COMPARISON = {
    "input": "crop",
    "models": ["vgg16-scratch", "resnet50-scratch", "ensemble"],
    "n": 120,
    "auc": {"vgg16-scratch": 0.75, "resnet50-scratch": 0.70, "ensemble": 0.80},
    "best": "ensemble",
    "pairs": {  # keys: the two names sorted, joined by " vs "; difference = first - second
        "resnet50-scratch vs vgg16-scratch": _pair(-0.05, 0.25),
        "ensemble vs vgg16-scratch": _pair(0.05, 0.0004),
        "ensemble vs resnet50-scratch": _pair(0.10, 0.0123),
    },
    "vs_best": {
        "ensemble": {"p_holm": None, "different": None, "text": "best"},
        "vgg16-scratch": {"p_holm": 0.0004, "different": True, "text": "lower than ensemble"},
    },
}


def test_delong_matrix_holds_holm_p_and_signed_differences() -> None:
    page = report_sections.comparisons_section([COMPARISON])
    (matrix,) = _Tables(page).tables
    assert matrix[0] == ["", "vgg16-scratch", "resnet50-scratch", "ensemble"]
    cell = {
        (r[0].split(" (")[0], col): r[j] for r in matrix[1:] for j, col in enumerate(matrix[0]) if j
    }
    assert cell["vgg16-scratch", "vgg16-scratch"] == "—"
    assert cell["vgg16-scratch", "ensemble"] == "p <0.001 / Δ -0.050 [-0.080, -0.020]"
    assert cell["ensemble", "vgg16-scratch"] == "p <0.001 / Δ +0.050 [+0.020, +0.080]"
    assert cell["vgg16-scratch", "resnet50-scratch"] == "p 0.250 / Δ +0.050 [+0.020, +0.080]"
    assert cell["resnet50-scratch", "ensemble"].startswith("p 0.012 / Δ -0.100")
    assert matrix[3][0] == "ensemble (AUC 0.800)"
    assert "DeLong" in page and "Holm" in page and "120 shared test cases" in page
    assert report_sections.DELONG_NOTE in html.unescape(page)
    assert "vgg16-scratch: lower than ensemble" in page


def test_p_text() -> None:
    assert [report_sections.p_text(p) for p in (0.0004, 0.001, 0.04567, None)] == [
        "<0.001",
        "0.001",
        "0.046",
        "-",
    ]


# One run a line, as in a benchmark file.
BENCH = {
    "name": "study",
    "prepare": {"cls_size": 224, "seg_size": 512, "det_size": 1024, "cls_input": "crop"},
    "runs": [
        {"model": "vgg16", "task": "classification", "setting": "scratch", "input": "crop",
         "sweep": {"max_epochs": 30, "scheduler": "asha", "samples": 8, "train": {}, "fix": {}}},
        {"model": "vgg16", "task": "classification", "setting": "study_frozen", "input": "crop",
         "sweep": {"max_epochs": 30, "scheduler": "asha", "samples": 8,
                   "train": {"optimizer": "adam", "schedule": "plateau"}, "fix": {}}},
        {"model": "resnet50", "task": "classification", "setting": "pretrained", "input": "whole",
         "sweep": {"max_epochs": 30, "scheduler": "asha", "samples": 8,
                   "train": {"threshold_rule": "sens90"}, "fix": {}}},
        {"model": "unet", "task": "segmentation", "setting": "scratch",
         "sweep": {"max_epochs": 30, "scheduler": "asha", "samples": 8, "train": {}, "fix": {}}},
    ],
}  # fmt: skip
FACTS = {
    "test_images": 40,
    "mixed_test_images": 3,
    "val_fraction": 0.15,
    "test_prevalence": 0.39,
    "seeds": 3,
}


def test_protocol_differences_are_computed_from_the_config_and_facts() -> None:
    rows = report_protocol.protocol_differences(BENCH, FACTS)
    ours = {topic: text for topic, _, text in rows}
    assert [t for t, _, _ in rows][:3] == ["data split", "test set balance", "classifier input"]
    assert "leakage" in dict((t, s) for t, s, _ in rows)["data split"]
    assert "official CBIS-DDSM test split (40 images)" in ours["data split"]
    assert "15% of training patients" in ours["data split"]
    assert "39% malignant" in ours["test set balance"]
    assert "majority class scores 61%" in ours["test set balance"]
    assert (
        "lesion crops (GT-localised) at 224 px: vgg16 (scratch); vgg16 (study_frozen)"
        in ours["classifier input"]
    )
    assert "whole images at 224 px: resnet50 (pretrained)" in ours["classifier input"]
    own = {"model": "efficientnet_lite0", "task": "classification", "setting": "pretrained",
           "input": "crop", "prepare": {"cls_size": 64}, "sweep": BENCH["runs"][0]["sweep"]}  # fmt: skip
    sized = report_protocol.protocol_differences({**BENCH, "runs": [*BENCH["runs"], own]}, FACTS)
    inputs = dict((t, o) for t, _, o in sized)["classifier input"]
    assert "lesion crops (GT-localised) at 64 px: efficientnet_lite0 (pretrained)" in inputs
    assert "at 224 px: vgg16 (scratch); vgg16 (study_frozen);" in inputs  # not with the 64 px run
    lite0_unet = {**BENCH["runs"][3], "model": "unet_efficientnet_lite0"}
    unets = report_protocol.protocol_differences({**BENCH, "runs": [lite0_unet]}, FACTS)
    assert "U-Net, EfficientNet-Lite0 encoder" in dict((t, o) for t, _, o in unets)["U-Net"]
    assert 'setting "study_frozen" reproduces' in ours["scratch models"]
    assert "vgg16 (study_frozen)" in ours["scratch models"]
    assert "ResNet-50 encoder" in ours["U-Net"]
    assert "adamw + cosine (the other runs)" in ours["optimiser and schedule"]
    assert "adam + plateau (vgg16 (study_frozen))" in ours["optimiser and schedule"]
    selection = ours["model selection and threshold"]
    assert "Youden's J on validation (the other runs)" in selection
    assert "sensitivity >= 0.9 on validation (resnet50 (pretrained))" in selection
    assert "3 of 40 test images" in ours["mixed images"]
    assert ours["seeds"].startswith("3 seeds")


def test_protocol_section_escapes_and_tolerates_missing_facts() -> None:
    bench = BENCH | {
        "runs": [{"model": "<b>x</b>", "task": "classification", "setting": "scratch"}]
    }
    page = report_protocol.protocol_section({"bench": bench, "facts": {}})
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    table = _Tables(page).tables[0]
    assert table[0] == ["topic", "the study", "ours"]
    assert ["mixed images", "not discussed", "not recorded"] in table


def test_leaderboard_groups_tasks_and_says_a_repeated_note_once() -> None:
    rows = [
        _row("vgg16", "classification", "scratch", test=0.7),
        *(
            _row(m, "classification", "pretrained", status="skipped", note=SKIP)
            for m in ("vgg16", "resnet50", "densenet121")
        ),
        _row("ensemble", "classification", "scratch", test=0.75, note="mean of vgg16, resnet50"),
        _row("unet", "segmentation", "scratch", test=0.4),
        _row("fasterrcnn", "detection", "scratch", test=0.2),
    ]
    page = report_sections.leaderboard_section(rows)
    table = _Tables(page).tables[0]
    headings = [r[0] for r in table if len(r) == 1]
    assert headings == ["Classification", "Segmentation", "Detection"]
    assert [r[0] for r in table[2:8]] == [
        "vgg16",
        "vgg16",
        "resnet50",
        "densenet121",
        "ensemble",
        "Segmentation",
    ]
    assert page.count(SKIP) == 1
    assert f"skipped: {SKIP} — vgg16, resnet50, densenet121 (pretrained)" in page
    assert "mean of vgg16, resnet50 — ensemble (scratch)" in page


def test_calibration_section_has_scores_and_a_reliability_diagram() -> None:
    bins = [
        {"low": 0.1, "high": 0.2, "mean_score": 0.15, "fraction_positive": 0.1, "count": 20},
        {"low": 0.8, "high": 0.9, "mean_score": 0.85, "fraction_positive": 0.9, "count": 10},
    ]
    calibration = {"vgg16-scratch": {"brier": 0.18, "ece": 0.052, "bins": bins}}
    page = report_sections.calibration_section(calibration)
    assert ["vgg16-scratch", "0.180", "0.052"] in _Tables(page).tables[0]
    assert page.count('src="data:image/png;base64,') == 1
    fig = review_plots.reliability_figure(calibration)
    top, bottom = fig.axes
    assert [line.get_label() for line in top.get_lines()] == [
        "perfect calibration",
        "vgg16-scratch",
    ]
    assert [p.get_height() for p in bottom.patches] == [20, 10]


def test_subgroup_tables_show_models_by_level_with_dash_for_nan() -> None:
    def entry(group: str, level: str, auc: float | None, n: int) -> dict[str, Any]:
        return {
            "group": group,
            "level": level,
            "n": n,
            "n_malignant": 2,
            "auc": auc,
            "ci_low": 0.6,
            "ci_high": 0.9,
        }

    subgroups = {
        "vgg16-scratch": [entry("assessment", "3", 0.75, 12), entry("assessment", "2", None, 5)],
        "ensemble": [entry("assessment", "3", 0.8, 12)],
    }
    breast = {"ensemble": {"n": 30, "n_malignant": 11, "auc": 0.81, "ci_low": 0.7, "ci_high": 0.9}}
    page = report_sections.subgroups_section(subgroups, breast)
    assessment, breasts = _Tables(page).tables
    assert "BI-RADS assessment" in page and "CC and MLO" in page
    assert assessment == [
        ["classifier", "3", "2"],
        ["vgg16-scratch", "0.750 [0.600, 0.900] (12)", "- (5)"],
        ["ensemble", "0.800 [0.600, 0.900] (12)", "-"],
    ]
    assert breasts[1] == ["ensemble", "0.810 [0.700, 0.900]", "30", "11"]


@pytest.mark.parametrize(
    ("render", "key"),
    [
        (lambda: report_sections.comparisons_section(None), "comparisons"),
        (lambda: report_sections.calibration_section({}), "calibration"),
        (lambda: report_protocol.protocol_section(None), "protocol"),
        (lambda: report_sections.subgroups_section({"m": []}, None), "breast"),
    ],
)
def test_missing_data_gives_one_line(render: Any, key: str) -> None:
    page = render()
    assert f'analysis.json has no "{key}"' in page
    assert page.count("<p") == 1 and "<table" not in page


def test_published_figure_labels_rows_and_annotates_seeds() -> None:
    rows = [
        _row(
            "vgg16",
            "classification",
            "scratch",
            test=0.7,
            test_ci_low=0.65,
            test_ci_high=0.75,
            published=0.7156,
            seeds=3.0,
            test_sd=0.012,
        ),
        _row("resnet50", "classification", "scratch", test=0.68, protocol="input: whole image; x"),
        _row("vit_b16", "classification", "pretrained", status="skipped", note=SKIP),
        _row("unet", "segmentation", "scratch", test=0.4, published=0.8402),
    ]
    fig = review_plots.published_figure(rows)
    accuracy, dice = fig.axes
    labels = [t.get_text() for t in accuracy.get_yticklabels()]
    assert labels == ["vgg16 · scratch", "resnet50 · scratch · whole"]
    assert accuracy.get_xlabel() == "accuracy (official test split)"
    assert accuracy.get_xlim() == (0, 1) and dice.get_xlabel() == "dice (official test split)"
    assert [t.get_text() for t in accuracy.texts] == ["± 0.012 (3 seeds)"]
    assert review_plots.published_figure(rows[2:3]) is None
    # a mean over seeds outside the best trial's CI: the bar spans the CI, the point the mean
    outside = rows[0] | {"test": 0.6}
    (bar, *_) = review_plots.published_figure([outside]).axes
    (segments,) = [c for c in bar.collections if c.get_segments()]
    (((x0, _), (x1, _)),) = segments.get_segments()
    assert (x0, x1) == pytest.approx((0.65, 0.75))


def test_seeds_section_only_when_a_row_has_several_seeds() -> None:
    one = _row("vgg16", "classification", "scratch", test=0.7)
    three = _row(
        "resnet50",
        "classification",
        "scratch",
        test=0.7,
        test_sd=0.0125,
        seeds=3,
        test_seeds="0.71, 0.69, 0.70",
    )
    assert report_sections.seeds_section([one]) == ""
    table = _Tables(report_sections.seeds_section([one, three])).tables[0]
    assert table[1] == ["resnet50", "scratch", "accuracy", "0.700 ± 0.013 (3)", "0.71, 0.69, 0.70"]


def test_a_whole_page_renders_with_or_without_analysis(tmp_path: Path) -> None:
    rows = [
        _row("vgg16", "classification", "scratch", test=0.7, test_ci_low=0.65, test_ci_high=0.75),
        _row("vgg16", "classification", "pretrained", status="skipped", note=SKIP),
    ]
    calibration = {"vgg16-scratch": {"brier": 0.2, "ece": 0.05, "bins": []}}
    analysis = {
        "comparisons": [COMPARISON],
        "calibration": calibration,
        "protocol": {"bench": BENCH, "facts": FACTS},
    }
    path = tmp_path / "report.html"
    path.write_text(report._page("t", "benchmark-t", report.review(rows, analysis), "sqlite://"))
    page = path.read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 2
    for heading in ("Ours vs published", "How our protocol differs", "DeLong", "Calibration"):
        assert heading in page
    assert 'analysis.json has no "subgroups"' in page
    bare = report.review(rows, {})
    assert (
        bare.count('class="missing"') == 6
    )  # protocol, transfer, comparisons, calibration, subgroups, breast
    assert "trained both ways" in report.review(rows, {**analysis, "transfer": []})
