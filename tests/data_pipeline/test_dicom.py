"""DICOM decoding on real CBIS-DDSM files and on small, deliberately broken files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut
from pydicom.uid import UID, HTJ2KLossless, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from data_pipeline import dicom_write
from data_pipeline.dicom import DicomError, align_mask, classify_roi, read_header, read_image

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared/reference/cbis-ddsm"
DICOM_DIR = REFERENCE / "dicom"
DOWNSAMPLED = sorted((DICOM_DIR / "downsampled4x").glob("*.dcm"))
HEADERS = sorted((DICOM_DIR / "headers").glob("*.header_only.dcm"))
NATIVE_CROP = DICOM_DIR / "native_crop/Mass-Test_P_00820_LEFT_CC_crop1024_r2001_c155.dcm"
EVRLE = DICOM_DIR / "downsampled4x/Mass-Test_P_00173_LEFT_CC_ds4_EVRLE.dcm"
RLE = DICOM_DIR / "downsampled4x/Mass-Test_P_00820_LEFT_CC_ds4_RLE.dcm"
HEADER_KEYS = {
    "rows",
    "columns",
    "bits_allocated",
    "bits_stored",
    "photometric",
    "transfer_syntax",
    "laterality",
    "view",
}


SUBJECT = "Mass-Test_P_99999_LEFT_CC"


def write_dicom(path: Path, pixels: np.ndarray, **options: object) -> Path:
    """The package's writer, with a CBIS-DDSM subject as name and ID (PHI the reader must drop)."""
    return dicom_write.write_dicom(
        path, pixels, **{"PatientName": SUBJECT, "PatientID": SUBJECT} | options
    )


def write_encapsulated(path: Path, syntax: UID) -> Path:
    """A file whose transfer syntax is compressed but whose single fragment is garbage."""
    return write_dicom(
        path, np.zeros((8, 8), np.uint16), syntax=syntax, fragments=[b"\x00garbage" * 8]
    )


def reason_of(path: Path) -> str:
    with pytest.raises(DicomError) as info:
        read_image(path)
    return info.value.reason


# --- real CBIS-DDSM files -------------------------------------------------------------------


def test_every_reference_file_reads_as_a_single_frame_mammogram():
    """The shared reference set is what the real-pixel tests rely on: 8 downsampled images,
    8 header-only files and a native crop, each read by the product's header reader."""
    assert len(DOWNSAMPLED) == 8 and len(HEADERS) == 8
    for path in [*DOWNSAMPLED, *HEADERS, NATIVE_CROP]:
        header = read_header(path)
        assert header["rows"] > 0 and header["columns"] > 0, path.name
        assert header["photometric"].startswith("MONOCHROME"), path.name


@pytest.mark.parametrize("path", DOWNSAMPLED, ids=lambda p: p.name)
def test_real_downsampled_file_decodes_exactly(path: Path):
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert image.shape == (ds.Rows, ds.Columns)
    assert image.dtype == np.uint16
    assert 0 < int(image.max()) <= 65535
    assert np.array_equal(image, ds.pixel_array)  # fast path (EVRLE) and RLE decoder alike


def test_real_native_crop_decodes_to_1024_square():
    image = read_image(NATIVE_CROP)
    assert image.shape == (1024, 1024) and image.dtype == np.uint16
    assert np.array_equal(image, pydicom.dcmread(NATIVE_CROP).pixel_array)


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.name)
def test_header_only_file_has_no_pixel_data(path: Path):
    assert reason_of(path) == "no PixelData element"


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.name)
def test_read_header_returns_only_allow_listed_fields(path: Path):
    header = read_header(path)
    ds = pydicom.dcmread(path)
    assert set(header) == HEADER_KEYS
    side, view = path.name.split(".")[0].split("_")[-2:]
    assert header["laterality"] == side[0] and header["view"] == view
    assert (header["rows"], header["columns"]) == (ds.Rows, ds.Columns)
    assert header["bits_allocated"] == header["bits_stored"] == 16
    assert header["photometric"] == "MONOCHROME2"
    assert header["transfer_syntax"] == "RLE Lossless"
    assert str(ds.PatientID) not in repr(header) and str(ds.StudyInstanceUID) not in repr(header)


def test_read_header_falls_back_to_image_laterality_and_view_position(tmp_path):
    path = write_dicom(
        tmp_path / "a.dcm", np.zeros((4, 4), np.uint16), ImageLaterality="R", ViewPosition="MLO"
    )
    header = read_header(path)
    assert (header["laterality"], header["view"]) == ("R", "MLO")
    assert header["transfer_syntax"] == "Explicit VR Little Endian"


# --- broken inputs --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert reason_of(tmp_path / "nope.dcm") == "file not found"
    with pytest.raises(DicomError, match="file not found"):
        read_header(tmp_path / "nope.dcm")


def test_text_file_is_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    assert reason_of(path).startswith("not a DICOM file (no DICM preamble")


def test_truncated_uncompressed_file(tmp_path):
    data = EVRLE.read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    reason = reason_of(path)
    assert reason.startswith("truncated: the file ends inside its pixel data")
    ds = pydicom.dcmread(EVRLE, stop_before_pixels=True)
    for secret in (str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.StudyDate)):
        assert secret not in reason


def test_uncompressed_pixels_are_read_once_into_the_array(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 4096, (3000, 2000), dtype=np.uint16)  # 12 MB
    path = write_dicom(tmp_path / "big.dcm", pixels)
    tracemalloc.start()
    image = read_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # one buffer of the image's size: no bytes object beside it (pydicom's path holds two)
    assert peak < 1.1 * pixels.nbytes, f"read_image allocated {peak} bytes"
    assert np.array_equal(image, pixels)


def test_truncated_rle_file(tmp_path):
    data = RLE.read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path).startswith("truncated")


def test_corrupt_jpeg2000_names_the_syntax(tmp_path):
    reason = reason_of(write_encapsulated(tmp_path / "j2k.dcm", JPEG2000Lossless))
    assert reason.startswith("JPEG 2000 Image Compression (Lossless Only) pixel data could not be")


def test_made_up_transfer_syntax_is_unsupported(tmp_path):
    path = write_encapsulated(tmp_path / "odd.dcm", UID("1.2.826.0.1.3680043.9.9999.1"))
    assert reason_of(path) == "unsupported transfer syntax: unknown (non-standard) transfer syntax"


def test_missing_decoder_plugin_names_the_package(tmp_path):
    """In a fresh interpreter without pydicom's pylibjpeg plugin for HTJ2K (as if not installed)."""
    path = write_encapsulated(tmp_path / "htj2k.dcm", HTJ2KLossless)
    script = (
        "from pydicom.pixels import get_decoder\n"
        "from pydicom.uid import HTJ2KLossless\n"
        "get_decoder(HTJ2KLossless).remove_plugin('pylibjpeg')\n"
        "from data_pipeline.dicom import DicomError, read_image\n"
        "try:\n    read_image(__import__('sys').argv[1])\n"
        "except DicomError as exc:\n    print(exc.reason)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.stdout.strip() == (
        "High-Throughput JPEG 2000 Image Compression (Lossless Only) needs pylibjpeg-openjpeg "
        "(pip install pylibjpeg pylibjpeg-openjpeg)"
    )


def test_rows_larger_than_data_is_a_shape_mismatch(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.ones((10, 12), np.uint16), Rows=20)
    assert reason_of(path).startswith("shape mismatch: PixelData holds 240 bytes")


def test_multi_frame_and_colour_are_rejected(tmp_path):
    two_frames = np.zeros((8, 4), np.uint16)  # two 4x4 frames
    frames = write_dicom(tmp_path / "mf.dcm", two_frames, Rows=4, NumberOfFrames=2)
    assert reason_of(frames).startswith("multi-frame image (2 frames)")
    rgb = write_dicom(
        tmp_path / "rgb.dcm",
        np.zeros((4, 4, 3), np.uint8),
        photometric="RGB",
        SamplesPerPixel=3,
        PlanarConfiguration=0,
    )
    assert reason_of(rgb).startswith("colour image")


def test_dicom_error_survives_pickling():  # Ray ships exceptions between processes
    error = pickle.loads(pickle.dumps(DicomError("file not found")))
    assert isinstance(error, DicomError) and error.reason == "file not found"


# --- pixel semantics ------------------------------------------------------------------------


def test_implicit_vr_and_8_bit(tmp_path):
    pixels = np.arange(35, dtype=np.uint8).reshape(5, 7)  # odd length: PixelData is padded
    path = write_dicom(tmp_path / "a.dcm", pixels, syntax=ImplicitVRLittleEndian)
    image = read_image(path)
    assert image.dtype == np.uint8 and np.array_equal(image, pixels)


def test_bits_stored_12_masks_high_bits(tmp_path):
    pixels = np.array([[0, 4095, 4096 + 7, 65535]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    image = read_image(path)
    assert image.tolist() == [[0, 4095, 7, 4095]]
    assert np.array_equal(image, pydicom.dcmread(path).pixel_array)


def test_rle_files_decode_like_their_native_copies(tmp_path):
    """Re-encoded copies (12-bit images, 8-bit masks) take the decoder's path, to equal pixels."""
    image = np.random.default_rng(0).integers(0, 4096, (24, 16), dtype=np.uint16)
    mask = np.zeros((24, 16), np.uint8)
    mask[4:12, 2:10] = 255
    for name, pixels, bits in (("image", image, 12), ("mask", mask, None)):
        native = write_dicom(tmp_path / f"{name}.dcm", pixels, bits_stored=bits)
        rle = write_dicom(
            tmp_path / f"{name}-rle.dcm", pixels, bits_stored=bits, syntax=RLELossless
        )
        assert read_header(rle)["transfer_syntax"] == "RLE Lossless"
        assert np.array_equal(read_image(rle), read_image(native)), name
        assert np.array_equal(read_image(rle), pixels), name
    assert classify_roi(tmp_path / "mask-rle.dcm") == "mask"


def test_monochrome1_is_inverted_over_stored_range(tmp_path):
    pixels = np.array([[0, 100, 4095]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    assert read_image(path).tolist() == [[4095, 3995, 0]]


def test_signed_pixels_become_unsigned(tmp_path):
    pixels = np.array([[-2048, 0, 2047]], np.int16)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    image = read_image(path)
    assert image.dtype == np.uint16 and image.tolist() == [[0, 2048, 4095]]


def test_window_is_applied_and_rescaled_to_uint16(tmp_path):
    pixels = np.array([[0, 900, 1000, 1100, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm", pixels, bits_stored=12, WindowCenter=1000, WindowWidth=200
    )
    image = read_image(path)
    ds = pydicom.dcmread(path)
    expected = np.rint(apply_voi_lut(ds.pixel_array, ds) * (65535 / 4095))
    assert image.dtype == np.uint16
    assert image.tolist() == expected.astype(np.uint16).tolist()
    assert image[0, 0] == image[0, 1] == 0 and image[0, 3] == image[0, 4] == 65535
    assert 30000 < image[0, 2] < 35000


def test_window_with_monochrome1_inverts_after_windowing(tmp_path):
    pixels = np.array([[0, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm",
        pixels,
        bits_stored=12,
        photometric="MONOCHROME1",
        WindowCenter=2048,
        WindowWidth=4096,
    )
    assert read_image(path).tolist() == [[65535, 0]]


# --- ROI files ------------------------------------------------------------------------------


def test_classify_roi_by_content(tmp_path):
    mask = np.zeros((40, 30), np.uint8)
    mask[10:20, 5:15] = 255
    crop = np.random.default_rng(0).integers(30000, 65535, (25, 20), dtype=np.uint16)
    assert classify_roi(write_dicom(tmp_path / "mask.dcm", mask)) == "mask"
    assert classify_roi(write_dicom(tmp_path / "crop.dcm", crop)) == "crop"
    grey = write_dicom(tmp_path / "grey.dcm", np.arange(256, dtype=np.uint8).reshape(16, 16))
    with pytest.raises(DicomError, match="ambiguous ROI"):
        classify_roi(grey)


def test_classify_roi_of_real_file_is_crop():
    assert classify_roi(NATIVE_CROP) == "crop"


def test_align_mask_resizes_a_slightly_smaller_mask_with_nearest():
    mask = np.zeros((95, 190), np.uint8)
    mask[20:60, 40:120] = 255
    aligned = align_mask(mask, (100, 200))
    assert aligned.shape == (100, 200) and aligned.dtype == np.uint8
    assert set(np.unique(aligned).tolist()) == {0, 255}
    assert abs(int(aligned.sum() // 255) - 40 * 80 * 100 * 200 // (95 * 190)) < 200


def test_align_mask_keeps_same_size_and_accepts_the_real_cbis_case():
    mask = np.zeros((50, 60), np.uint8)
    assert align_mask(mask, (50, 60)) is mask
    assert align_mask(np.zeros((4386, 1789), np.uint8), (5041, 2056)).shape == (5041, 2056)


def test_align_mask_refuses_a_large_mismatch():
    with pytest.raises(DicomError) as info:
        align_mask(np.zeros((70, 200), np.uint8), (100, 200))
    assert info.value.reason == "mask size 70x200 differs from image size 100x200 by more than 20%"
