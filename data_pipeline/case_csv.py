"""Parse the four CBIS-DDSM case-description CSVs into clean per-abnormality rows.

The official CSVs have quirks a loader must survive (see ``shared/reference/cbis-ddsm/SOURCES.md``):
path fields that end in a newline inside quotes, CRLF copies, ``breast_density`` vs
``breast density``, ``N/A``/``NA`` for missing, spelling variants (``LUCENT_CENTERED``) and doubled
values (``PLEOMORPHIC-PLEOMORPHIC``). Everything here is plain ``csv``: no pandas dialect guessing.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set.*\.csv$", re.IGNORECASE)
MISSING = {"", "N/A", "NA", "NAN", "NONE", "NULL"}
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
SPELLING = {"LUCENT_CENTERED": "LUCENT_CENTER"}
# NBIA subject-folder prefixes, e.g. ``Mass-Training_P_00001_LEFT_CC``.
SUBJECT_PREFIX = {
    ("mass", "train"): "Mass-Training",
    ("mass", "test"): "Mass-Test",
    ("calc", "train"): "Calc-Training",
    ("calc", "test"): "Calc-Test",
}


class CaseCsvError(ValueError):
    """A case-description CSV cannot be used as a whole (wrong columns, unknown name)."""


@dataclass(frozen=True)
class CaseRow:
    """One abnormality as the CSV describes it, values cleaned, paths still as written."""

    csv_file: str
    line: int
    lesion_type: str  # "mass" | "calc"
    official_split: str  # "train" | "test"
    patient_id: str
    side: str  # "LEFT" | "RIGHT"
    view: str  # "CC" | "MLO"
    abnormality_id: int
    pathology: str
    assessment: int | None
    subtlety: int | None
    breast_density: int | None
    morphology: str | None  # mass shape or calc type
    distribution: str | None  # mass margins or calc distribution
    image_path: str
    crop_path: str
    roi_path: str

    @property
    def image_key(self) -> str:
        """NBIA subject name of the full image, e.g. ``Mass-Test_P_00173_LEFT_CC``."""
        prefix = SUBJECT_PREFIX[(self.lesion_type, self.official_split)]
        return f"{prefix}_{self.patient_id}_{self.side}_{self.view}"

    @property
    def key(self) -> str:
        """NBIA subject name of the abnormality's ROI series, e.g. ``..._LEFT_CC_1``."""
        return f"{self.image_key}_{self.abnormality_id}"


def csv_kind(path: Path) -> tuple[str, str]:
    """Lesion type and official split from a case-description file name."""
    match = CSV_NAME.match(path.name)
    if not match:
        raise CaseCsvError(f"{path}: not a CBIS-DDSM case-description file name")
    return match.group(1).lower(), match.group(2).lower()


def _column(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


def _missing(value: str | None) -> bool:
    return value is None or value.strip().upper() in MISSING


def clean_category(value: str | None) -> str | None:
    """Upper-case, drop doubled parts of ``-``-joined values and fix known spelling variants."""
    if _missing(value):
        return None
    parts: list[str] = []
    for part in value.strip().upper().split("-"):
        part = SPELLING.get(part, part)
        if part and part not in parts:
            parts.append(part)
    return "-".join(parts)


def _int_or_none(value: str | None, valid: range) -> int | None:
    """An integer inside ``valid``; out-of-range values (density 0, subtlety 0) are missing."""
    if _missing(value):
        return None
    number = int(float(value))
    return number if number in valid else None


def _row(cols: dict[str, str], csv_file: str, line: int, kind: tuple[str, str]) -> CaseRow:
    lesion_type, split = kind
    mass = lesion_type == "mass"
    pathology = cols["pathology"].strip().upper()
    if pathology not in PATHOLOGIES:
        raise ValueError(f"unknown pathology {pathology!r}")
    return CaseRow(
        csv_file=csv_file,
        line=line,
        lesion_type=lesion_type,
        official_split=split,
        patient_id=cols["patient_id"].strip(),
        side=cols["left_or_right_breast"].strip().upper(),
        view=cols["image_view"].strip().upper(),
        abnormality_id=int(cols["abnormality_id"]),
        pathology=pathology,
        assessment=_int_or_none(cols.get("assessment"), range(0, 7)),
        subtlety=_int_or_none(cols.get("subtlety"), range(1, 6)),
        breast_density=_int_or_none(cols.get("breast_density"), range(1, 5)),
        morphology=clean_category(cols.get("mass_shape" if mass else "calc_type")),
        distribution=clean_category(cols.get("mass_margins" if mass else "calc_distribution")),
        image_path=cols["image_file_path"].strip(),
        crop_path=cols["cropped_image_file_path"].strip(),
        roi_path=cols["roi_mask_file_path"].strip(),
    )


REQUIRED = (
    "patient_id",
    "breast_density",
    "left_or_right_breast",
    "image_view",
    "abnormality_id",
    "pathology",
    "image_file_path",
    "cropped_image_file_path",
    "roi_mask_file_path",
)


def read_case_csv(path: Path, label: str) -> tuple[list[CaseRow], list[tuple[int, str]]]:
    """Read one case-description CSV.

    Args:
        path: The CSV file (LF or CRLF; quoted fields may hold newlines).
        label: How the file is named in records and errors (its path relative to DATA).

    Returns:
        The parsed rows and ``(line, reason)`` for rows whose values cannot be parsed.
    """
    kind = csv_kind(path)
    rows: list[CaseRow] = []
    bad: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [_column(name) for name in reader.fieldnames or []]
        absent = [name for name in REQUIRED if name not in header]
        if absent:
            raise CaseCsvError(f"{label}: missing columns {absent}")
        reader.fieldnames = header
        for record in reader:
            line = reader.line_num
            try:
                rows.append(_row(record, label, line, kind))
            except (ValueError, KeyError, AttributeError) as exc:
                bad.append((line, f"unparseable row: {exc}"))
    return rows, bad


def find_case_csvs(root: Path) -> list[Path]:
    """All case-description CSVs under ``root`` (any depth), one per lesion type and split."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(root.rglob("*.csv")):
        if not CSV_NAME.match(path.name) or ".venv" in path.parts:
            continue
        kind = csv_kind(path)
        if kind in found:
            raise CaseCsvError(
                f"two case-description CSVs for {kind[0]}/{kind[1]}: {found[kind]} and {path}; "
                "keep one or name the folder with --csv"
            )
        found[kind] = path
    return [found[k] for k in sorted(found)]
