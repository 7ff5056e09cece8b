"""``prepare`` end to end on synthetic downloads: every task, bad inputs, no PHI, resume, re-run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.uid import MPEG2MPML

from data_pipeline.catalog import build_catalog
from data_pipeline.convert import prepare
from data_pipeline.dicom_write import write_dicom
from data_pipeline.prepare_plan import PrepareConfig
from data_pipeline.synth import SynthConfig, make_synthetic
from data_pipeline.transforms import decode_png

SMALL = {"cls_size": 32, "seg_size": 48, "det_size": 96, "shard_size": 4}


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _quarantine(folder: Path) -> list[dict[str, str]]:
    with open(folder / "quarantine.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _check_conservation(manifest: dict) -> None:
    for task in manifest["tasks"].values():
        assert task["expected"] == task["written"] + task["quarantined"]
        assert task["written"] == sum(task["splits"].values())


@pytest.fixture(scope="module")
def prepared(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory, ray_local):
    out = tmp_path_factory.mktemp("prep")
    catalog = build_catalog(synthetic_data)
    return catalog, out, prepare(catalog, out, PrepareConfig(**SMALL))


def test_every_task_writes_shards(prepared) -> None:
    catalog, out, manifest = prepared
    _check_conservation(manifest)
    n_abn = sum(a.split != "excluded" for a in catalog.abnormalities)
    n_img = sum(i.split != "excluded" for i in catalog.images)
    assert manifest["tasks"]["classification"]["expected"] == n_abn
    assert manifest["tasks"]["segmentation"]["expected"] == n_abn
    assert manifest["tasks"]["detection"]["expected"] == n_img
    for task in manifest["tasks"].values():
        assert task["quarantined"] == 0 and all(task["splits"].values())
    files = sorted((out / "classification" / "train").glob("*.parquet"))
    assert files[0].name == "00000.parquet"


def test_classification_rows(prepared) -> None:
    catalog, out, manifest = prepared
    table = pq.read_table([out / f for f in manifest["tasks"]["classification"]["shards"]["test"]])
    rows = table.to_pylist()
    by_key = {a.key: a for a in catalog.abnormalities}
    for row in rows:
        image = decode_png(row["image"])
        assert image.shape == (32, 32) and image.dtype == np.uint8
        abn = by_key[row["key"]]
        assert row["label"] == int(abn.pathology == "MALIGNANT") and row["split"] == "test"
        assert row["lesion_type"] == abn.lesion_type and row["view"] == abn.view


def test_segmentation_rows_are_aligned_binary_masks(prepared) -> None:
    _, out, manifest = prepared
    shards = manifest["tasks"]["segmentation"]["shards"]["train"]
    for row in pq.read_table([out / f for f in shards]).to_pylist():
        image, mask = decode_png(row["image"]), decode_png(row["mask"])
        assert image.shape == mask.shape == (48, 48)
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert image[mask > 0].mean() > image[mask == 0].mean()  # the lesion is bright


def test_detection_rows_have_boxes_in_output_pixels(prepared) -> None:
    catalog, out, manifest = prepared
    shards = manifest["tasks"]["detection"]["shards"]["val"]
    for row in pq.read_table([out / f for f in shards]).to_pylist():
        image = decode_png(row["image"])
        assert max(image.shape) == 96
        image_info = next(i for i in catalog.images if i.image_key == row["key"])
        assert len(row["boxes"]) == len(image_info.abnormality_keys) == len(row["box_labels"])
        for xmin, ymin, xmax, ymax in row["boxes"]:
            assert 0 <= xmin < xmax <= image.shape[1] and 0 <= ymin < ymax <= image.shape[0]


def test_rerun_is_a_noop(prepared) -> None:
    catalog, out, manifest = prepared
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    snapshot = _outputs(out)
    again = prepare(catalog, out, PrepareConfig(**SMALL))
    assert again == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert _outputs(out) == snapshot


def test_changed_config_writes_fresh_output(
    synthetic_data: Path, tmp_path: Path, ray_local
) -> None:
    catalog = build_catalog(synthetic_data)
    cfg = PrepareConfig(tasks=("classification",), cls_size=32, shard_size=4)
    first = prepare(catalog, tmp_path, cfg)
    second = prepare(catalog, tmp_path, PrepareConfig(tasks=("classification",), cls_size=40))
    assert first["fingerprint"] != second["fingerprint"]
    shards = sorted(tmp_path.rglob("*.parquet"))
    assert len(shards) == sum(len(v) for v in second["tasks"]["classification"]["shards"].values())
    for path in shards:
        assert decode_png(pq.read_table(path).column("image")[0].as_py()).shape == (40, 40)


def _damage(data: Path) -> dict[str, str]:
    """Break one file of each kind; return {key: expected reason fragment}."""
    catalog = build_catalog(data)
    abns = sorted((a for a in catalog.abnormalities if a.split != "excluded"), key=lambda a: a.key)
    by_image: dict[str, list] = {}
    for abn in abns:
        by_image.setdefault(abn.image_key, []).append(abn)
    singles = [v[0] for v in by_image.values() if len(v) == 1]
    expected = {}
    truncated, text, nopixels, missing, syntax, empty, shrunk = singles[:7]
    raw = (data / truncated.image_file).read_bytes()
    (data / truncated.image_file).write_bytes(raw[: len(raw) // 2])
    expected[truncated.key] = "truncated"
    (data / text.mask_file).write_text("this is not a DICOM file\n")
    expected[text.key] = "not a DICOM"
    ds = pydicom.dcmread(data / nopixels.image_file)
    del ds.PixelData
    ds.save_as(data / nopixels.image_file)
    expected[nopixels.key] = "PixelData"
    (data / missing.image_file).unlink()
    expected[missing.key] = "file not found"
    pixels = pydicom.dcmread(data / syntax.image_file).pixel_array
    # MPEG-2 pixel data, which no installed decoder reads
    write_dicom(data / syntax.image_file, pixels, syntax=MPEG2MPML, fragments=[b"\x00" * 64])
    expected[syntax.key] = "transfer syntax"
    _rewrite_mask(data / empty.mask_file, lambda m: np.zeros_like(m))
    expected[empty.key] = "empty"
    _rewrite_mask(data / shrunk.mask_file, lambda m: np.ascontiguousarray(m[::2, ::2]))
    expected[shrunk.key] = "differs from image size"
    return expected


def _rewrite_mask(path: Path, change) -> None:
    write_dicom(path, change(pydicom.dcmread(path).pixel_array))


def _add_traversal_row(data: Path) -> None:
    path = data / "mass_case_description_train_set.csv"
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    bad = list(rows[1])
    bad[4] = "9"
    bad[-1] = "../../../etc/passwd"
    with open(path, "a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerow(bad)


def test_bad_inputs_are_quarantined_with_reasons(tmp_path: Path, ray_local) -> None:
    data = make_synthetic(tmp_path / "data", SynthConfig(patients=14, seed=5))
    expected = _damage(data)
    _add_traversal_row(data)
    out = tmp_path / "prep"
    cfg = PrepareConfig(tasks=("classification", "segmentation"), **SMALL)
    manifest = prepare(build_catalog(data), out, cfg)
    _check_conservation(manifest)
    rows = _quarantine(out)
    cls_rows = {r["key"]: r for r in rows if r["task"] == "classification"}
    for key, fragment in expected.items():
        assert fragment in cls_rows[key]["reason"], (key, cls_rows[key])
        source = cls_rows[key]["source_path"]
        assert not Path(source).is_absolute() and ".." not in source
    traversal = [r for r in rows if "climbs out of DATA" in r["reason"]]
    assert len(traversal) == 2  # once per task
    assert manifest["tasks"]["classification"]["quarantined"] == len(expected) + 1


def test_quarantine_source_path_is_the_file_on_disk(tmp_path: Path, ray_local) -> None:
    data = make_synthetic(tmp_path / "data", SynthConfig(patients=4, seed=2))
    abn = next(a for a in build_catalog(data).abnormalities if a.split != "excluded")
    (data / abn.mask_file).write_bytes(b"garbage")
    out = tmp_path / "prep"
    prepare(build_catalog(data), out, PrepareConfig(tasks=("classification",), **SMALL))
    (row,) = _quarantine(out)
    assert (data / row["source_path"]).resolve() == (data / abn.mask_file).resolve()


CANARIES = {
    "PatientName": "CANARYNAME^JANE",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "CANARYACC77",
    "InstitutionName": "CANARY GENERAL HOSPITAL",
    "StudyDate": "19020304",
    "ReferringPhysicianName": "CANARYDOC^X",
}


def test_no_phi_leaves_the_headers(tmp_path: Path, ray_local) -> None:
    data = make_synthetic(tmp_path / "data", SynthConfig(patients=6, seed=4))
    sop_uids = []
    for path in data.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in CANARIES.items():
            setattr(ds, keyword, value)
        sop_uids.append(ds.SOPInstanceUID)
        ds.save_as(path)
    broken = next(data.rglob("*.dcm"))
    broken.write_bytes(broken.read_bytes()[:-5000])  # its error must not leak either
    out = tmp_path / "prep"
    prepare(build_catalog(data), out, PrepareConfig(**SMALL))
    blob = b"".join(_outputs(out).values())
    for value in [*CANARIES.values(), *sop_uids]:
        assert value.encode() not in blob, value
    assert b"CANARY" not in blob


def _cli(args: list[str]) -> list[str]:
    return [str(Path(sys.executable).parent / "mammobench"), *args]
