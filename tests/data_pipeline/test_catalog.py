"""The catalog on the real CBIS-DDSM CSVs and on synthetic downloads in all three layouts."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from data_pipeline.case_csv import clean_category, read_case_csv
from data_pipeline.catalog import build_catalog
from data_pipeline.dicom_write import write_dicom
from data_pipeline.synth import SynthConfig, make_synthetic
from tests.conftest import REAL_CSV_DIR


@pytest.fixture(scope="module")
def real_catalog(real_csv_dir: Path):
    return build_catalog(real_csv_dir)


def test_real_csv_counts(real_catalog) -> None:
    summary = real_catalog.summary()
    assert summary["abnormalities"] == 3568
    assert summary["images"] == 3032  # physical images: 3,103 series, 71 listed twice
    assert summary["patients"] == 1566
    assert summary["by_pathology"] == {
        "MALIGNANT": 637 + 147 + 544 + 129,
        "BENIGN": 577 + 194 + 528 + 130,
        "BENIGN_WITHOUT_CALLBACK": 104 + 37 + 474 + 67,
    }
    assert summary["rejected_rows"] == 0
    # No DICOMs: every referenced file is missing (TCIA lists 10239 images in the collection).
    assert summary["missing_files"] == 10239


def test_real_splits_are_patient_disjoint(real_catalog) -> None:
    patients = defaultdict(set)
    for abn in real_catalog.abnormalities:
        if abn.split != "excluded":
            patients[abn.split].add(abn.patient_id)
    assert patients["train"] and patients["val"] and patients["test"]
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    by_split = real_catalog.summary()["by_split"]
    assert by_split["test"] == 378 + 326  # the official test split stays intact
    assert sum(by_split.values()) == 3568


def test_real_mass_calc_overlap_is_excluded(real_catalog) -> None:
    test_patients = {a.patient_id for a in real_catalog.abnormalities if a.official_split == "test"}
    excluded = [a for a in real_catalog.abnormalities if a.split == "excluded"]
    assert {a.patient_id for a in excluded} <= test_patients
    assert len({a.patient_id for a in excluded}) == 13 + 18
    assert all(a.official_split == "train" for a in excluded)


def test_val_split_is_seeded_and_stratified(real_csv_dir: Path, real_catalog) -> None:
    again = build_catalog(real_csv_dir)
    assert [a.split for a in again.abnormalities] == [a.split for a in real_catalog.abnormalities]
    other = build_catalog(real_csv_dir, seed=1)
    assert [a.split for a in other.abnormalities] != [a.split for a in again.abnormalities]
    val = [a for a in real_catalog.abnormalities if a.split == "val"]
    train = [a for a in real_catalog.abnormalities if a.split == "train"]
    share = len({a.patient_id for a in val}) / len({a.patient_id for a in val + train})
    assert 0.13 < share < 0.17
    malignant = [np.mean([a.pathology == "MALIGNANT" for a in rows]) for rows in (val, train)]
    assert abs(malignant[0] - malignant[1]) < 0.08


def test_crlf_variant_parses_like_lf() -> None:
    lf, bad_lf = read_case_csv(REAL_CSV_DIR / "calc_case_description_train_set.csv", "lf")
    crlf, bad_crlf = read_case_csv(
        REAL_CSV_DIR / "variants" / "calc_case_description_train_set.CRLF.csv", "crlf"
    )
    assert not bad_lf and not bad_crlf
    assert len(lf) == len(crlf) == 1546
    strip = [(r.key, r.pathology, r.crop_path, r.roi_path, r.breast_density) for r in lf]
    assert strip == [(r.key, r.pathology, r.crop_path, r.roi_path, r.breast_density) for r in crlf]
    assert not any(r.crop_path.endswith("\n") or r.roi_path.endswith("\n") for r in crlf)


def test_values_are_cleaned() -> None:
    assert clean_category("PLEOMORPHIC-PLEOMORPHIC") == "PLEOMORPHIC"
    assert clean_category("LUCENT_CENTERED") == "LUCENT_CENTER"
    assert clean_category("REGIONAL-REGIONAL") == "REGIONAL"
    assert clean_category("N/A") is None and clean_category("NA") is None
    rows, _ = read_case_csv(REAL_CSV_DIR / "calc_case_description_test_set.csv", "calc-test")
    p01743 = [r for r in rows if r.patient_id == "P_01743"]
    assert p01743 and all(r.breast_density is None for r in p01743)  # density 0 is not BI-RADS
    assert {r.breast_density for r in rows} - {None} <= {1, 2, 3, 4}
    mass, _ = read_case_csv(REAL_CSV_DIR / "mass_case_description_train_set.csv", "mass-train")
    assert sum(r.distribution is None for r in mass) == 43  # mass margins N/A
    assert all(r.lesion_type == "mass" and r.breast_density for r in mass)


def _rewrite_rows(src: Path, dst: Path, edits: dict[int, dict[str, str]]) -> None:
    with open(src, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for index, change in edits.items():
        rows[index].update(change)
    with open(dst, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_path_traversal_rows_are_rejected_not_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "outside" / "x" / "y" / "000000.dcm"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"not for you")
    src = REAL_CSV_DIR / "mass_case_description_test_set.csv"
    _rewrite_rows(
        src,
        data / src.name,
        {
            0: {"image file path": "../outside/x/y/000000.dcm"},
            5: {"ROI mask file path": "/etc/passwd"},
        },
    )
    catalog = build_catalog(data)
    summary = catalog.summary()
    assert summary["rejected_rows"] == 2
    reasons = [r["reason"] for r in summary["rejections"]]
    assert any("climbs out of DATA" in r for r in reasons)
    assert any("absolute path" in r for r in reasons)
    assert summary["abnormalities"] == 378 and len(catalog.abnormalities) == 376
    assert all(r["line"] > 1 and r["csv_file"] == src.name for r in summary["rejections"])


def test_only_test_rows_is_valid(tmp_path: Path) -> None:
    shutil.copy(REAL_CSV_DIR / "mass_case_description_test_set.csv", tmp_path)
    summary = build_catalog(tmp_path).summary()
    assert summary["by_split"] == {"train": 0, "val": 0, "test": 378, "excluded": 0}


@pytest.mark.parametrize("layout", ["nbia", "nbia-no-metadata", "csv"])
def test_synthetic_layouts_resolve_every_file(tmp_path: Path, layout: str) -> None:
    data = make_synthetic(tmp_path / layout, SynthConfig(patients=8, seed=1, layout=layout))
    catalog = build_catalog(data)
    summary = catalog.summary()
    assert summary["missing_files"] == 0
    assert summary["rejected_rows"] == 0
    assert summary["roi_by_content"] == len(catalog.abnormalities) > 0
    for abn in catalog.abnormalities:
        mask = pydicom.dcmread(data / abn.mask_file)
        crop = pydicom.dcmread(data / abn.crop_file)
        assert mask.BitsAllocated == 8 and set(np.unique(mask.pixel_array)) <= {0, 255}
        assert crop.BitsAllocated == 16
        assert (data / abn.image_file).is_file()


def test_synthetic_splits_exclude_cross_type_test_patients(synthetic_data: Path) -> None:
    catalog = build_catalog(synthetic_data)
    excluded = {a.patient_id for a in catalog.abnormalities if a.split == "excluded"}
    test = {a.patient_id for a in catalog.abnormalities if a.split == "test"}
    assert excluded and excluded <= test
    assert {"train", "val", "test"} <= {a.split for a in catalog.abnormalities}
    multi = [i for i in catalog.images if len(i.abnormality_keys) > 1]
    assert multi, "the synthetic set must hold images with several abnormalities"
    for image in catalog.images:
        expected = "MALIGNANT" if "MALIGNANT" in image.lesion_pathologies else image.pathology
        assert image.pathology == expected


def test_mask_and_crop_told_apart_by_content_on_a_real_dicom(
    tmp_path: Path, reference_dicoms: Path
) -> None:
    """A real full mammogram in the CSV layout, with the ROI series' two files swapped."""
    real = reference_dicoms / "downsampled4x" / "Mass-Test_P_00173_LEFT_CC_ds4_EVRLE.dcm"
    src = REAL_CSV_DIR / "mass_case_description_test_set.csv"
    with open(src, newline="") as handle:
        row = next(
            r
            for r in csv.DictReader(handle)
            if r["image file path"].startswith("Mass-Test_P_00173_LEFT_CC/")
        )
    image_path = tmp_path / row["image file path"].strip()
    image_path.parent.mkdir(parents=True)
    shutil.copy(real, image_path)
    ds = pydicom.dcmread(real)
    pixels = ds.pixel_array
    mask = np.zeros(pixels.shape, np.uint8)
    mask[400:500, 200:300] = 255
    crop_csv, roi_csv = row["cropped image file path"].strip(), row["ROI mask file path"].strip()
    assert Path(crop_csv).parent == Path(roi_csv).parent
    # swapped: the "crop" file holds the mask
    write_dicom(tmp_path / crop_csv, mask, sop_class=ds.SOPClassUID)
    write_dicom(tmp_path / roi_csv, pixels[400:500, 200:300], sop_class=ds.SOPClassUID)
    with open(tmp_path / src.name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(row))
        writer.writeheader()
        writer.writerow(row)
    catalog = build_catalog(tmp_path)
    (abn,) = catalog.abnormalities
    assert abn.roi_by_content
    assert abn.mask_file == crop_csv and abn.crop_file == roi_csv
    assert abn.image_file == row["image file path"].strip()
    assert catalog.summary()["missing_files"] == 0


def test_real_repeated_views_are_one_image(real_catalog) -> None:
    summary = real_catalog.summary()
    # 3,103 full-image series in the CSVs, 71 of them a second series of the same mammogram.
    assert summary["duplicate_views"] == 71 and summary["images"] == 3032
    views = [(i.patient_id, i.side, i.view) for i in real_catalog.images]
    assert len(views) == len(set(views))  # one record per physical image: no view in two splits
    merged = [i for i in real_catalog.images if len(i.source_keys) > 1]
    assert len(merged) == 71 and all(i.lesion_type == "calc+mass" for i in merged)
    lesions = {a.key: a for a in real_catalog.abnormalities}
    for image in merged:
        types = {lesions[k].lesion_type for k in image.abnormality_keys}
        assert types == {"mass", "calc"} and len(image.image_files) == 2
        malignant = any(lesions[k].pathology == "MALIGNANT" for k in image.abnormality_keys)
        assert (image.pathology == "MALIGNANT") == malignant
    assert sum(len({lesions[k].pathology for k in i.abnormality_keys}) > 1 for i in merged) > 0


def test_real_cross_csv_images_go_where_their_patient_goes(real_catalog) -> None:
    lesions = {a.key: a for a in real_catalog.abnormalities}
    cross = [
        i
        for i in real_catalog.images
        if {lesions[k].official_split for k in i.abnormality_keys} == {"train", "test"}
    ]
    assert len(cross) == 29
    for image in cross:
        assert image.split == "test"  # its patient is a test patient of the other lesion type
        assert {lesions[k].split for k in image.abnormality_keys} == {"test", "excluded"}


def test_real_detection_items_hold_every_lesion_of_the_image(real_catalog) -> None:
    from data_pipeline.prepare_plan import PrepareConfig, plan_items

    items = plan_items(real_catalog, PrepareConfig(), "detection")
    images = {i.image_key: i for i in real_catalog.images}
    assert len(items) == sum(i.split in ("train", "val", "test") for i in images.values())
    for item in items:
        image = images[item["key"]]
        assert item["lesion_keys"] == list(image.abnormality_keys)
        assert len(item["mask_files"]) == len(item["lesion_labels"]) == len(item["lesion_keys"])
        assert item["label"] == int(image.pathology == "MALIGNANT")
    mass_only = plan_items(real_catalog, PrepareConfig(lesion_type="mass"), "detection")
    keys = {k for item in mass_only for k in item["lesion_keys"]}
    assert keys and all("Mass-" in k for k in keys)
