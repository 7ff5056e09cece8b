"""Parse the four CBIS-DDSM case-description CSVs into clean per-abnormality rows.

The official CSVs have quirks a loader must survive (see ``shared/reference/cbis-ddsm/SOURCES.md``):
path fields that end in a newline inside quotes, CRLF copies, ``breast_density`` vs
``breast density``, ``N/A``/``NA`` for missing, spelling variants (``LUCENT_CENTERED``) and doubled
values (``PLEOMORPHIC-PLEOMORPHIC``). Everything here is plain ``csv``: no pandas dialect guessing.

A bad row never costs the file: bytes that are not UTF-8, a wrong value, a short or long row, a stray
quote or an abnormality listed twice make that row a ``(line, reason)``, and the rest is read.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set.*\.csv$", re.IGNORECASE)
MISSING = {"", "N/A", "NA", "NAN", "NONE", "NULL"}
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
SIDES = ("LEFT", "RIGHT")
VIEWS = ("CC", "MLO")
PATIENT_ID = re.compile(r"^P_\d+$")
WHOLE_NUMBER = re.compile(r"^[+-]?\d+(?:\.0*)?$")  # 3, or 3.0 as a spreadsheet exports it
NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes kept by errors="surrogateescape"
SPELLING = {"LUCENT_CENTERED": "LUCENT_CENTER"}
# NBIA subject-folder prefixes, e.g. ``Mass-Training_P_00001_LEFT_CC``.
SUBJECT_PREFIX = {
    ("mass", "train"): "Mass-Training",
    ("mass", "test"): "Mass-Test",
    ("calc", "train"): "Calc-Training",
    ("calc", "test"): "Calc-Test",
}


class CaseCsvError(ValueError):
    """A case-description CSV cannot be used as a whole (wrong columns, unknown name).

    ``lines`` are the first lines of the rows it holds, so that each can be rejected.
    """

    def __init__(self, message: str, lines: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.lines = lines


class RowError(ValueError):
    """One row that cannot be used; the message names the column and the value."""


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


def csv_kind(path: PurePath) -> tuple[str, str]:
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


def _choice(cols: dict[str, str], column: str, allowed: tuple[str, ...]) -> str:
    value = cols[column].strip()
    if value.upper() not in allowed:
        raise RowError(f"{column}: {value!r} is not one of {list(allowed)}")
    return value.upper()


def _patient_id(cols: dict[str, str]) -> str:
    value = cols["patient_id"].strip()
    if not PATIENT_ID.match(value):
        raise RowError(f"patient_id: {value!r} is not a patient id like 'P_00001'")
    return value


def _whole_number(cols: dict[str, str], column: str) -> int | None:
    value = cols.get(column)
    if _missing(value):
        return None
    if not WHOLE_NUMBER.match(value.strip()):
        raise RowError(f"{column}: {value.strip()!r} is not a whole number")
    return int(float(value))


def _rating(cols: dict[str, str], column: str, valid: range) -> int | None:
    """A rating inside ``valid``; 0 outside it (density 0, subtlety 0 in the real CSVs) is unrated."""
    number = _whole_number(cols, column)
    if number is None or number in valid:
        return number
    if number == 0:
        return None
    raise RowError(f"{column}: {number} is outside {valid.start}..{valid[-1]}")


def _abnormality_id(cols: dict[str, str]) -> int:
    number = _whole_number(cols, "abnormality_id")
    if number is None or number < 1:
        raise RowError(f"abnormality_id: {cols['abnormality_id'].strip()!r} is not 1, 2, ...")
    return number


def _row(cols: dict[str, str], csv_file: str, line: int, kind: tuple[str, str]) -> CaseRow:
    lesion_type, split = kind
    mass = lesion_type == "mass"
    return CaseRow(
        csv_file=csv_file,
        line=line,
        lesion_type=lesion_type,
        official_split=split,
        patient_id=_patient_id(cols),
        side=_choice(cols, "left_or_right_breast", SIDES),
        view=_choice(cols, "image_view", VIEWS),
        abnormality_id=_abnormality_id(cols),
        pathology=_choice(cols, "pathology", PATHOLOGIES),
        assessment=_rating(cols, "assessment", range(0, 7)),
        subtlety=_rating(cols, "subtlety", range(1, 6)),
        breast_density=_rating(cols, "breast_density", range(1, 5)),
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


def read_case_csv(
    path: PurePath, label: str, data: bytes | None = None
) -> tuple[list[CaseRow], list[tuple[int, str]]]:
    """Read one case-description CSV.

    Args:
        path: The CSV file (LF or CRLF, with or without a BOM; quoted fields may hold newlines).
        label: How the file is named in records and errors (its path relative to DATA).
        data: The file's bytes, when read already (from an object store); else ``path`` is read.

    Returns:
        The parsed rows and ``(first line, reason)`` of every row that cannot be used; a second
        row of the same abnormality is one of those, never counted twice.

    Raises:
        CaseCsvError: The file is empty or its header lacks required columns.
    """
    kind = csv_kind(path)
    raw = Path(path).read_bytes() if data is None else data
    text = raw.decode("utf-8-sig", errors="surrogateescape")  # bytes kept as in a file name
    records = list(_records(io.StringIO(text, newline="").readlines()))
    if not records:
        raise CaseCsvError(f"{label}: empty file, no header")
    (_, names, _), body = records[0], records[1:]
    header = [_column(name) for name in names or []]
    absent = [name for name in REQUIRED if name not in header]
    if absent:
        hint = " (the header is not UTF-8 text)" if NOT_UTF8.search(",".join(names or [])) else ""
        raise CaseCsvError(f"{label}: missing columns {absent}{hint}", tuple(r[0] for r in body))
    rows: list[CaseRow] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for line, fields, error in body:
        try:
            row = _row(_columns(header, fields, error), label, line, kind)
        except RowError as exc:
            bad.append((line, str(exc)))
            continue
        if row.key in seen:
            bad.append(
                (line, f"duplicate: abnormality {row.key} is already on line {seen[row.key]}")
            )
            continue
        seen[row.key] = line
        rows.append(row)
    return rows, bad


def _columns(header: list[str], fields: list[str] | None, error: str) -> dict[str, str]:
    """A record's values by column, or the reason it has none."""
    if fields is None:
        raise RowError(error)
    if len(fields) != len(header):
        short = " (a truncated row?)" if len(fields) < len(header) else ""
        raise RowError(f"{len(fields)} values where the header has {len(header)} columns{short}")
    for column, value in zip(header, fields, strict=True):
        if NOT_UTF8.search(value):
            raw = value.encode("utf-8", "surrogateescape")
            raise RowError(f"{column}: bytes that are not UTF-8 in {raw!r}")
    return dict(zip(header, fields, strict=True))


class _Lines:
    """A file's lines as the ``csv`` reader pulls them, with a position that can be moved back."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self.pos = lines, 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _records(lines: list[str]) -> Iterator[tuple[int, list[str] | None, str]]:
    """``(first line, fields, error)`` of every record, header included, blank lines skipped.

    A quote left open makes one field of the rows after it: that record becomes an error at its
    first line and reading goes on from the next line, so the rows it swallowed are still read.
    Only a trailing newline inside a field is expected (the official path fields end in one, so a
    line of a lone quote is the tail of a broken row, not a row).
    """
    source = _Lines(lines)
    reader = csv.reader(source, strict=True)
    while source.pos < len(lines):
        start = source.pos
        if lines[start].strip() == '"':
            source.pos += 1
            continue
        try:
            fields, error = next(reader), ""
        except StopIteration:
            return
        except csv.Error as exc:
            at_end = source.pos == len(lines)
            fields, error = None, "the file ends inside this row" if at_end else f"not CSV: {exc}"
        if fields and any("\n" in f.strip() or "\r" in f.strip() for f in fields):
            fields, error = None, f"a quoted value runs on to line {source.pos} (a stray quote?)"
        if fields is None:
            source.pos = start + 1
            yield start + 1, None, error
        elif fields:
            yield start + 1, fields, ""


def find_case_csvs(names: Iterable[str]) -> list[PurePosixPath]:
    """The case-description CSVs among ``names`` (a listing: any depth), one per lesion type
    and split."""
    found: dict[tuple[str, str], PurePosixPath] = {}
    for path in sorted(PurePosixPath(name) for name in names):
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
