"""A small CBIS-DDSM download made of real mammograms under real case-description rows.

The eight real full mammograms in ``tests/data/cbis-ddsm/dicom/`` (two test patients, all of
different shapes, Explicit VR LE and RLE Lossless) sit under their own rows of the official
Mass-Test CSV, at the paths those rows name (the files' UIDs match them). Training and
validation rows are real rows of the official Mass- and Calc-Training CSVs, copied verbatim,
each borrowing a copy of one of the eight real files of its side and view as its full
mammogram: the pixels and the rows are real, their pairing is not (so the tree supports pipeline
tests, not accuracy claims). One of them is a real repeated view, P_00034 RIGHT CC, listed by
both training CSVs under two series. The ROI masks (8-bit, 0/255, the image's size, an ellipse
wholly inside the breast) and lesion crops (16-bit) are made here, in the CSV layout the catalog
resolves by path.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from pydicom.uid import generate_uid

from data_pipeline.dicom import read_image
from data_pipeline.synth import _write_dicom
from tests.conftest import REAL_CSV_DIR

REAL_DICOMS = REAL_CSV_DIR / "dicom"
TEST_PATIENTS = ("P_00173", "P_00820")  # the owners of the real pixels: Mass-Test
TRAIN_VIEWS = {  # real training rows: (patient, side, view), benign and malignant patients
    "mass": [
        ("P_00001", "LEFT", "CC"),
        ("P_00001", "LEFT", "MLO"),
        ("P_00004", "LEFT", "CC"),
        ("P_00004", "LEFT", "MLO"),
        ("P_00009", "RIGHT", "CC"),
        ("P_00015", "LEFT", "MLO"),
        ("P_00018", "RIGHT", "CC"),
        ("P_00021", "LEFT", "CC"),
        ("P_00034", "RIGHT", "CC"),
    ],
    "calc": [("P_00034", "RIGHT", "CC")],
}
VAL_FRACTION = 0.4  # of 7 training patients: 3 validate (2 of 4 malignant, 1 of 3 benign)


def make_real_tree(out: Path) -> Path:
    """Write the tree under ``out`` (CSVs at its top); return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(REAL_DICOMS.glob("*.dcm"))
    borrowed = _borrow(sorted({v for rows in TRAIN_VIEWS.values() for v in rows}), sources)
    for lesion_type, split in (("mass", "test"), ("mass", "train"), ("calc", "train")):
        name = f"{lesion_type}_case_description_{split}_set.csv"
        header, rows = _official_rows(name, lesion_type, split)
        _write_csv(out / name, header, rows)
        for row in rows:
            _write_row_files(out, row, lesion_type, split, sources, borrowed)
    calc_test = "calc_case_description_test_set.csv"
    _write_csv(out / calc_test, _official_rows(calc_test, "calc", "test")[0], [])  # header only
    return out


def _borrow(views: list[tuple[str, str, str]], sources: list[Path]) -> dict[tuple, Path]:
    """A real file of the same side and view for each training view, the two owners in turn."""
    borrowed: dict[tuple, Path] = {}
    for patient, side, view in views:
        same = [p for p in sources if f"_{side}_{view}_ds4" in p.name]
        taken = sum(key[1:] == (side, view) for key in borrowed)
        borrowed[patient, side, view] = same[taken % len(same)]
    return borrowed


def _official_rows(name: str, lesion_type: str, split: str) -> tuple[list[str], list[dict]]:
    with open(REAL_CSV_DIR / name, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    if split == "test":
        keep = [r for r in rows if r["patient_id"] in TEST_PATIENTS]
    else:
        views = set(TRAIN_VIEWS[lesion_type])
        keep = [r for r in rows if _view(r) in views]
    return list(reader.fieldnames or []), keep


def _view(row: dict) -> tuple[str, str, str]:
    return row["patient_id"], row["left or right breast"], row["image view"]


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)


def _write_row_files(
    out: Path,
    row: dict,
    lesion_type: str,
    split: str,
    sources: list[Path],
    borrowed: dict[tuple, Path],
) -> None:
    """The row's full image (real, copied as it is), its ROI mask and its lesion crop."""
    image_path = out / row["image file path"].strip()
    if not image_path.is_file():
        subject = PurePosixPath(row["image file path"].strip()).parts[0]
        source = _own_file(subject, sources) if split == "test" else borrowed[_view(row)]
        image_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, image_path)
    pixels = read_image(image_path)
    # a view listed by both CSVs may reuse an abnormality id: its calc lesion sits elsewhere
    mask = lesion_mask(pixels, int(row["abnormality id"]) + (lesion_type == "calc"))
    x, y, w, h = cv2.boundingRect(mask)
    crop = np.ascontiguousarray(pixels[y : y + h, x : x + w])
    roi, cropped = row["ROI mask file path"].strip(), row["cropped image file path"].strip()
    _write_derived(out, roi, mask, row)
    if cropped != roi:
        _write_derived(out, cropped, crop, row)


def _own_file(subject: str, sources: list[Path]) -> Path:
    return next(p for p in sources if p.name.startswith(f"{subject}_ds4"))


def lesion_mask(pixels: np.ndarray, number: int) -> np.ndarray:
    """An ellipse of 255 (1-3 % of the breast) wholly inside it: breast pixels are bright, the
    background is 0. Lesion ``number`` picks the centre's height, so lesions of one image differ."""
    height = pixels.shape[0]
    axes = (height // 20, height // 28)
    breast = (pixels > np.percentile(pixels[pixels > 0], 20)).astype(np.uint8)
    reach = 2 * axes[0] + 1  # centres this far inside keep the whole ellipse in the breast
    inner = cv2.erode(breast, np.ones((reach, reach), np.uint8))
    ys, xs = np.nonzero(inner)
    centre = np.argsort(ys, kind="stable")[len(ys) * (1 + number % 3) // 4]
    mask = np.zeros(pixels.shape, np.uint8)
    cv2.ellipse(mask, (int(xs[centre]), int(ys[centre])), axes, 30, 0, 360, 255, -1)
    return mask


def _write_derived(out: Path, csv_path: str, pixels: np.ndarray, row: dict) -> None:
    path = out / csv_path
    path.parent.mkdir(parents=True, exist_ok=True)
    subject, study, series = PurePosixPath(csv_path).parts[:3]
    number = int(path.stem[-1])
    sop = generate_uid(entropy_srcs=[csv_path])
    view, side = row["image view"], row["left or right breast"]
    _write_dicom(path, pixels, subject, study, series, "ROI mask images", view, side, sop, number)
