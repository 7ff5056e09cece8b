"""Malformed case-description CSVs, made by damaging copies of the real ones (and the synthetic
download's): every bad row is one rejection naming the file, the line and the reason, and every
other row is still catalogued (kept + rejected = the rows the file holds)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_pipeline.catalog import Catalog, build_catalog
from orchestration.cli import app
from tests.conftest import REAL_CSV_DIR

MASS_TEST = "mass_case_description_test_set.csv"  # 378 rows of two lines each
CALC_TEST = "calc_case_description_test_set.csv"  # 326 rows
ROWS = {MASS_TEST: 378, CALC_TEST: 326}


def _split(raw: bytes) -> tuple[bytes, list[bytes]]:
    """Header line and rows of a real CSV (each row ends in a quoted path with a newline)."""
    lines = raw.splitlines(keepends=True)
    rows = [lines[i] + lines[i + 1] for i in range(1, len(lines), 2)]
    assert all(row.count(b"\n") == 2 for row in rows)
    return lines[0], rows


def _write(path: Path, header: bytes, rows: list[bytes]) -> list[int]:
    """Write the file; the first line of each row."""
    path.write_bytes(header + b"".join(rows))
    starts, line = [], 2
    for row in rows:
        starts.append(line)
        line += row.count(b"\n")
    return starts


def _edit(header: bytes, row: bytes, column: str, value: str) -> bytes:
    """The row with one column's value replaced (a trailing newline kept, so lines stay put)."""
    names = next(csv.reader([header.decode()]))
    fields = next(csv.reader(io.StringIO(row.decode(), newline="")))
    index = names.index(column)
    fields[index] = value + ("\n" if fields[index].endswith("\n") else "")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode()


def _data(tmp_path: Path, *names: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    for name in names:
        shutil.copy(REAL_CSV_DIR / name, data / name)
    return data


def _accounted(catalog: Catalog, rows: dict[str, int]) -> dict[str, dict[str, int]]:
    """Assert no row is lost or counted twice; the per-CSV counts."""
    by_csv = catalog.summary()["rows_by_csv"]
    assert {name: c["kept"] + c["rejected"] for name, c in by_csv.items()} == rows
    keys = [a.key for a in catalog.abnormalities]
    assert len(keys) == len(set(keys))
    return by_csv


def _one_rejection(catalog: Catalog, line: int) -> str:
    (rejection,) = catalog.rejected
    assert (rejection.csv_file, rejection.line) == (MASS_TEST, line)
    return rejection.reason


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("abnormality id", "x", "abnormality_id: 'x' is not a whole number"),
        ("abnormality id", "0", "abnormality_id: '0' is not 1, 2, ..."),
        ("assessment", "high", "assessment: 'high' is not a whole number"),
        ("subtlety", "9.5", "subtlety: '9.5' is not a whole number"),
        ("subtlety", "9", "subtlety: 9 is outside 1..5"),
        ("breast_density", "-2", "breast_density: -2 is outside 1..4"),
        ("pathology", "MALIGN", "pathology: 'MALIGN' is not one of"),
        ("left or right breast", "MIDDLE", "left_or_right_breast: 'MIDDLE' is not one of"),
        ("image view", "AP", "image_view: 'AP' is not one of"),
        ("patient_id", "", "patient_id: '' is not a patient id"),
        ("image file path", "../../etc/x.dcm", "image_file_path: path '../../etc/x.dcm' climbs"),
        ("ROI mask file path", "/etc/passwd", "roi_mask_file_path: absolute path '/etc/passwd'"),
        ("cropped image file path", "C:\\x\\1.dcm", "cropped_image_file_path: absolute path"),
        ("image file path", "a/b\x00c/d.dcm", "image_file_path: path 'a/b\\x00c/d.dcm' holds"),
    ],
)
def test_a_bad_value_rejects_its_row_only(
    tmp_path: Path, column: str, value: str, reason: str
) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    rows[100] = _edit(header, rows[100], column, value)
    lines = _write(data / MASS_TEST, header, rows)
    catalog = build_catalog(data)
    assert reason in _one_rejection(catalog, lines[100])
    assert _accounted(catalog, {MASS_TEST: 378})[MASS_TEST] == {"kept": 377, "rejected": 1}


def test_the_same_abnormality_twice_is_one_row_and_one_rejection(tmp_path: Path) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    conflicting = _edit(header, rows[10], "pathology", "BENIGN")  # row 10 is MALIGNANT
    rows = [*rows[:11], rows[10], *rows[11:], conflicting]
    lines = _write(data / MASS_TEST, header, rows)
    catalog = build_catalog(data)
    reasons = {r.line: r.reason for r in catalog.rejected}
    assert set(reasons) == {lines[11], lines[-1]}
    assert all(f"is already on line {lines[10]}" in reason for reason in reasons.values())
    assert _accounted(catalog, {MASS_TEST: 380})[MASS_TEST] == {"kept": 378, "rejected": 2}
    pristine = build_catalog(_data(tmp_path / "pristine", MASS_TEST))
    assert catalog.summary()["by_pathology"] == pristine.summary()["by_pathology"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda row: row.replace(b",OVAL,", b",OVAL\xe9,", 1),
            "bytes that are not UTF-8 in b'OVAL",
        ),
        (lambda row: row.replace(b"P_", b"P_" + _noise(), 1), "patient_id: bytes that are not"),
        (lambda row: row.replace(b"000000.dcm", b"0\x9c0.dcm", 1), "image_file_path: bytes that"),
    ],
)
def test_bytes_that_are_not_utf8_reject_their_row_only(tmp_path: Path, damage, reason) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    index = next(i for i, row in enumerate(rows) if b",OVAL," in row)
    rows[index] = damage(rows[index])
    lines = _write(data / MASS_TEST, header, rows)
    catalog = build_catalog(data)
    assert reason in _one_rejection(catalog, lines[index])
    _accounted(catalog, {MASS_TEST: 378})


def _noise() -> bytes:
    """Random bytes no UTF-8 text holds (0xff never occurs in it), seeded."""
    return b"\xff" + np.random.default_rng(7).integers(0x80, 0x100, 12, dtype=np.uint8).tobytes()


def test_utf8_text_and_a_bom_are_read_as_written(tmp_path: Path) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    index = next(i for i, row in enumerate(rows) if b",OVAL," in row)
    rows[index] = rows[index].replace(b",OVAL,", ",OVALÉ,".encode(), 1)
    _write(data / MASS_TEST, b"\xef\xbb\xbf" + header, rows)
    catalog = build_catalog(data)
    assert not catalog.rejected and not catalog.csv_errors
    assert "OVALÉ" in {a.morphology for a in catalog.abnormalities}
    assert _accounted(catalog, {MASS_TEST: 378})[MASS_TEST]["kept"] == 378


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (0.3, "12 values where the header has 14 columns (a truncated row?)"),  # image path
        (0.9, "the file ends inside this row"),  # inside the quoted ROI path
    ],
)
def test_a_truncated_last_row_is_rejected(tmp_path: Path, cut: float, reason: str) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    first_line = rows[-1].split(b"\n")[0]
    rows[-1] = first_line[: int(len(first_line) * cut)]
    lines = _write(data / MASS_TEST, header, rows)
    catalog = build_catalog(data)
    assert _one_rejection(catalog, lines[-1]) == reason
    _accounted(catalog, {MASS_TEST: 378})


def test_a_stray_quote_swallows_no_later_rows(tmp_path: Path) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    rows[200] = rows[200].replace(b",LEFT,", b',"LEFT,', 1).replace(b",RIGHT,", b',"RIGHT,', 1)
    lines = _write(data / MASS_TEST, header, rows)
    catalog = build_catalog(data)
    assert _one_rejection(catalog, lines[200]) == "not CSV: ',' expected after '\"'"
    assert _accounted(catalog, {MASS_TEST: 378})[MASS_TEST]["kept"] == 377


def test_a_file_without_a_required_column_is_one_error_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path, CALC_TEST)
    with open(REAL_CSV_DIR / MASS_TEST, newline="") as handle:
        table = [row[:9] + row[10:] for row in csv.reader(handle)]  # no pathology column
    with open(data / MASS_TEST, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(table)
    catalog = build_catalog(data)
    assert catalog.csv_errors == [f"{MASS_TEST}: missing columns ['pathology']"]
    lines = [r.line for r in catalog.rejected]
    assert lines == list(range(2, 2 + 2 * 378, 2))  # every row, by its own first line
    assert {r.reason for r in catalog.rejected} == set(catalog.csv_errors)
    assert _accounted(catalog, ROWS) == {
        CALC_TEST: {"kept": 326, "rejected": 0},
        MASS_TEST: {"kept": 0, "rejected": 378},
    }


def test_a_header_that_is_not_utf8_is_named_as_such(tmp_path: Path) -> None:
    data = _data(tmp_path, CALC_TEST)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    _write(data / MASS_TEST, header.replace(b"pathology", b"patholog\xeda"), rows)
    (error,) = build_catalog(data).csv_errors
    assert error == f"{MASS_TEST}: missing columns ['pathology'] (the header is not UTF-8 text)"


@pytest.mark.parametrize(("body", "error"), [(b"", "empty file, no header"), (b"header", None)])
def test_empty_and_header_only_files_lose_nothing(
    tmp_path: Path, body: bytes, error: str | None
) -> None:
    data = _data(tmp_path, MASS_TEST)
    header = (REAL_CSV_DIR / CALC_TEST).read_bytes().splitlines(keepends=True)[0]
    (data / CALC_TEST).write_bytes(header if body else b"")
    catalog = build_catalog(data)
    assert catalog.csv_errors == ([f"{CALC_TEST}: {error}"] if error else [])
    assert not catalog.rejected
    assert _accounted(catalog, {MASS_TEST: 378, CALC_TEST: 0})[MASS_TEST]["kept"] == 378


def test_rows_naming_absent_files_are_kept_and_their_files_listed_missing(
    tmp_path: Path, synthetic_data: Path
) -> None:
    """The synthetic download's own CSVs, one path pointing at a series that is not there."""
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    name = "mass_case_description_train_set.csv"
    with open(synthetic_data / name, newline="") as handle:
        table = list(csv.DictReader(handle))
    gone = "Mass-Training_P_00001_LEFT_CC/1.2.3/4.5.6/000000.dcm"
    table[0]["image file path"] = gone
    with open(csvs / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    catalog = build_catalog(synthetic_data, csv_dir=csvs)
    assert catalog.missing == [gone] and not catalog.rejected
    by_line = {a.line: a for a in catalog.abnormalities}
    assert by_line[2].image_file is None and by_line[2].image_csv_path == gone
    assert all(a.image_file for a in catalog.abnormalities if a.line != 2)
    assert _accounted(catalog, {str(csvs / name): len(table)})


def test_catalog_json_reports_every_kind_of_damage(tmp_path: Path) -> None:
    data = _data(tmp_path)
    header, rows = _split((REAL_CSV_DIR / MASS_TEST).read_bytes())
    rows[3] = _edit(header, rows[3], "abnormality id", "x")
    rows[5] = rows[5].replace(b"P_", b"P_\xe9", 1)
    rows.append(rows[7])
    lines = _write(data / MASS_TEST, header, rows)
    (data / CALC_TEST).write_text("patient_id,pathology\nP_00001,BENIGN\n")
    result = CliRunner().invoke(app, ["catalog", str(data), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["csv_errors"] == [f"{CALC_TEST}: missing columns {_absent()}"]
    assert summary["rows_by_csv"] == {
        CALC_TEST: {"kept": 0, "rejected": 1},
        MASS_TEST: {"kept": 376, "rejected": 3},
    }
    found = {(r["csv_file"], r["line"]): r["reason"] for r in summary["rejections"]}
    assert found[(CALC_TEST, 2)] == summary["csv_errors"][0]
    assert "abnormality_id: 'x'" in found[(MASS_TEST, lines[3])]
    assert "patient_id: bytes that are not UTF-8 in b'P_\\xe900" in found[(MASS_TEST, lines[5])]
    assert f"is already on line {lines[7]}" in found[(MASS_TEST, lines[-1])]
    assert summary["abnormalities"] == 376 + 3 + 1


def _absent() -> list[str]:
    from data_pipeline.case_csv import REQUIRED

    return [name for name in REQUIRED if name not in ("patient_id", "pathology")]
