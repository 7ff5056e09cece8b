"""Damaged DICOMs are contained: pydicom's own broken files and a generated corpus of >1,000 cases.

Every case goes through the three readers ``prepare`` uses and through ``write_shard`` (the function
Ray Data maps over the shards, here called in-process): each ends as a decoded image or a
``DicomError`` / quarantine record, never another exception, and no reason quotes a header value.
"""

from __future__ import annotations

import csv
import random
import struct
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from data_pipeline.convert import write_shard
from data_pipeline.dicom import DicomError, classify_roi, read_header, read_image
from data_pipeline.dicom_write import write_dicom
from data_pipeline.prepare_plan import PrepareConfig

REPO = Path(__file__).resolve().parents[2]
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
REAL_RLE = REPO / "tests/data/cbis-ddsm/dicom/Mass-Test_P_00820_LEFT_CC_ds4_RLE.dcm"
CANARY = "CANARYX9"
PHI = {"PatientName": CANARY, "PatientID": CANARY, "InstitutionName": CANARY}  # in every case
READERS: tuple[Callable, ...] = (read_header, read_image, classify_roi)
CONFIG = PrepareConfig(cls_size=32, seg_size=32, det_size=64)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(200, 3000, (64, 48), dtype=np.uint16)
    image[20:40, 10:30] += 800
    return image


def _mask() -> np.ndarray:
    mask = np.zeros((64, 48), np.uint8)
    mask[20:40, 10:30] = 255
    return mask


def _seeds(folder: Path) -> dict[str, bytes]:
    image = write_dicom(folder / "image.dcm", _image(), bits_stored=12, **PHI)
    mask = write_dicom(folder / "mask.dcm", _mask(), **PHI)
    return {"image": image.read_bytes(), "mask": mask.read_bytes(), "rle": REAL_RLE.read_bytes()}


def _byte_cases(name: str, data: bytes, rng: random.Random, n: int) -> Iterator[tuple[str, bytes]]:
    """Truncations at evenly spaced offsets, byte flips (header-heavy) and random blocks."""
    for offset in np.linspace(0, len(data) - 1, n // 3, dtype=int):
        yield f"{name}-cut{offset}", data[:offset]
    for index in range(n // 3):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(min(len(data), 1200) if index % 3 else len(data))
            flipped[at] ^= 1 << rng.randrange(8)
        yield f"{name}-flip{index}", bytes(flipped)
    for index in range(n - 2 * (n // 3)):
        block = bytearray(data)
        at = rng.randrange(len(data))
        block[at : at + 64] = rng.randbytes(64)
        yield f"{name}-random{index}", bytes(block)


HEADER_EDITS: dict[str, dict[str, object]] = {
    "rows-doubled": {"Rows": 128},
    "columns-doubled": {"Columns": 96},
    "rows-zero": {"Rows": 0},
    "rows-one": {"Rows": 1},
    "huge-declared": {"Rows": 65535, "Columns": 65535},
    "bits-stored-0": {"BitsStored": 0},
    "bits-stored-1": {"BitsStored": 1},
    "bits-stored-17": {"BitsStored": 17},
    "bits-stored-32": {"BitsStored": 32},
    "bits-allocated-12": {"BitsAllocated": 12},
    "bits-allocated-32": {"BitsAllocated": 32},
    "bits-allocated-1": {"BitsAllocated": 1},
    "monochrome1": {"PhotometricInterpretation": "MONOCHROME1"},
    "signed": {"PixelRepresentation": 1},
    "rgb": {"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
    "frames": {"NumberOfFrames": 3},
    "palette": {"PhotometricInterpretation": "PALETTE COLOR"},
    "window": {"WindowCenter": 100, "WindowWidth": 0},
    "bad-window": {"WindowCenter": "1234", "WindowWidth": "1"},  # then "1234" -> "ab!c"
    "rescale": {"RescaleSlope": 0, "RescaleIntercept": 0, "WindowCenter": 5, "WindowWidth": 2},
}


def _header_cases(folder: Path) -> Iterator[tuple[str, bytes]]:
    for seed_name, pixels in (("image", _image()), ("mask", _mask())):
        for edit, values in HEADER_EDITS.items():
            path = write_dicom(folder / f"{seed_name}-{edit}.dcm", pixels, **PHI | values)
            data = path.read_bytes()
            if edit == "bad-window":  # pydicom refuses to write a non-number DS
                data = data.replace(b"1234", b"ab!c")
            yield f"{seed_name}-{edit}", data
    good = (folder / "image.dcm").read_bytes()
    yield "odd-length-pixels", _odd_pixel_data(folder, _image())
    yield "empty", b""
    yield "one-byte", b"\x00"
    yield "no-preamble", good[128:]
    yield "broken-magic", good[:128] + b"DICX" + good[132:]
    yield "zeroed-preamble", b"\x00" * 132 + good[132:]
    yield "text", b"Patient: " + CANARY.encode() + b"\n" * 200
    yield "huge-length-field", _huge_pixel_length(good)


def _odd_pixel_data(folder: Path, pixels: np.ndarray) -> bytes:
    path = write_dicom(folder / "odd.dcm", pixels, PixelData=pixels.tobytes()[:-1], **PHI)
    return path.read_bytes()


def _huge_pixel_length(data: bytes) -> bytes:
    """PixelData's explicit-VR OW length field set to ~4 GB (nothing allocated before checks)."""
    at = data.rindex(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    return data[:at] + struct.pack("<I", 0xFFFFFFF0) + data[at + 4 :]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    seeds, rng = _seeds(folder), random.Random(13)
    cases = [
        *_byte_cases("image", seeds["image"], rng, 420),
        *_byte_cases("mask", seeds["mask"], rng, 420),
        *_byte_cases("rle", seeds["rle"], rng, 120),
        *_header_cases(folder),
    ]
    files = {}
    for name, data in cases:
        files[name] = folder / "cases" / f"{name}.dcm"
        files[name].parent.mkdir(exist_ok=True)
        files[name].write_bytes(data)
    return files


def _outcome(reader: Callable, path: Path) -> str:
    """ "ok" or the ``DicomError`` reason; any other exception fails the test."""
    try:
        value = reader(path)
    except DicomError as exc:
        assert CANARY not in exc.reason and exc.reason, (path.name, exc.reason)
        return exc.reason
    if isinstance(value, np.ndarray):
        assert value.ndim == 2 and value.dtype in (np.uint8, np.uint16), path.name
    return "ok"


def test_generated_corpus_only_raises_dicom_errors(corpus: dict[str, Path]) -> None:
    assert len(corpus) >= 1000
    outcomes = Counter()
    for path in corpus.values():
        for reader in READERS:
            outcomes[_outcome(reader, path) == "ok"] += 1
    assert outcomes[True] and outcomes[False] > len(corpus)  # both kinds happen


def test_every_header_edit_ends_in_an_image_or_a_reason(corpus: dict[str, Path]) -> None:
    results = {name: _outcome(read_image, corpus[f"image-{name}"]) for name in HEADER_EDITS}
    assert results["monochrome1"] == "ok" and results["signed"] == "ok"
    assert results["huge-declared"].startswith("implausible image size")
    assert results["rows-doubled"].startswith("shape mismatch")
    assert results["rgb"].startswith("colour image") and results["frames"].startswith("multi")
    for name in ("empty", "no-preamble", "broken-magic", "text"):
        assert _outcome(read_image, corpus[name]).startswith("not a DICOM file"), name


def test_huge_declared_sizes_allocate_nothing_before_validation(corpus: dict[str, Path]) -> None:
    for name in ("image-huge-declared", "huge-length-field", "image-rows-doubled"):
        tracemalloc.start()
        reason = _outcome(read_image, corpus[name])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert reason != "ok" and peak < 16 * 2**20, (name, reason, peak)


def test_every_case_is_a_row_or_a_quarantine_record(corpus: dict[str, Path]) -> None:
    """Each damaged file once as the image and once as the mask of an item of every task."""
    root = next(iter(corpus.values())).parents[1]
    good_image, good_mask = "image.dcm", "mask.dcm"
    rels = [p.relative_to(root).as_posix() for p in corpus.values()]
    items = [
        item
        for rel in rels
        for image, mask in ((rel, good_mask), (good_image, rel))
        for item in _items(image, mask, rel)
    ]
    totals = Counter()
    spec = {"split": "train", "name": "train/00000", "items": items}
    result = write_shard(spec, str(root), str(root / "out"), _config_dict())
    for task, part in result["tasks"].items():
        assert part["expected"] == part["written"] + len(part["quarantine"])
        for record in [*part["quarantine"], *part["damaged"]]:
            assert (root / record["source_path"]).is_file(), record
            assert CANARY not in record["reason"]
        totals[task] = len(part["quarantine"])
    assert set(totals) == {"classification", "segmentation", "detection"}
    assert all(totals[t] > len(corpus) // 2 for t in totals), totals


def _items(image: str, mask: str, crop: str) -> list[dict]:
    base = {"split": "train", "label": 1, "image_csv_path": image, "patient_id": "P_1"}
    one = {"image_file": image, "mask_files": [mask], "mask_csv_paths": [mask]}
    return [
        {**base, **one, "task": "classification", "key": f"c-{image}-{mask}"},
        {**base, **one, "task": "segmentation", "key": f"s-{image}-{mask}"},
        {
            **base,
            **one,
            "task": "detection",
            "key": f"d-{image}-{mask}",
            "lesion_labels": [1],
            "lesion_keys": ["k"],
            "check_files": [crop] if crop not in (image, mask) else [],
        },
    ]


def _config_dict() -> dict:
    return asdict(CONFIG)


BROKEN_PYDICOM = {
    "MR_truncated.dcm",
    "rtplan_truncated.dcm",
    "no_meta.dcm",
    "meta_missing_tsyntax.dcm",
    "badVR.dcm",
    "ExplVR_BigEndNoMeta.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "no_meta_group_length.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "J2K_pixelrep_mismatch.dcm",
}


def test_pydicoms_own_test_files_are_images_or_reasons() -> None:
    files = sorted(PYDICOM_FILES.glob("*.dcm"))
    assert {f.name for f in files} >= BROKEN_PYDICOM and len(files) > 60
    outcomes = {f.name: _outcome(read_image, f) for f in files}
    for reader in (read_header, classify_roi):
        for f in files:
            _outcome(reader, f)
    assert outcomes["MR_truncated.dcm"].startswith("truncated")
    assert outcomes["CT_small.dcm"] == "ok" and outcomes["MR_small_RLE.dcm"] == "ok"
    assert outcomes["SC_rgb_rle.dcm"].startswith("colour image")
    assert outcomes["rtplan.dcm"] == "no PixelData element"
    assert sum(v == "ok" for v in outcomes.values()) >= 10


TRUNCATE_MID_READ = """
import sys
from dataclasses import asdict
from pathlib import Path
import data_pipeline.dicom as dicom
import data_pipeline.samples as samples
from data_pipeline.convert import write_shard
from data_pipeline.prepare_plan import PrepareConfig

root, image, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def cut(path):
    if Path(path).name == image:
        with open(path, "r+b") as handle:
            handle.truncate(4096)

def cutting(read):  # another process cuts the file right after ``read``
    def wrapper(path, **kwargs):
        value = read(path, **kwargs)
        cut(path)
        return value
    return wrapper

if when == "after-header":
    dicom._read_dataset = cutting(dicom._read_dataset)
else:
    samples.read_image = cutting(samples.read_image)
item = {"task": "detection", "key": "k", "split": "train", "label": 1, "patient_id": "P",
        "image_file": image, "image_csv_path": image, "mask_files": ["mask.dcm"],
        "mask_csv_paths": ["mask.dcm"], "lesion_labels": [1], "lesion_keys": ["k"]}
spec = {"split": "train", "name": "train/00000", "items": [item]}
result = write_shard(spec, str(root), str(root / when), asdict(PrepareConfig(det_size=64)))["tasks"]
print(result["detection"]["written"], *(q["reason"] for q in result["detection"]["quarantine"]))
"""


@pytest.mark.parametrize(
    ("when", "expected"), [("after-header", "0 truncated"), ("after-read", "1")]
)
def test_file_truncated_while_prepare_reads_it_is_contained(
    tmp_path: Path, when: str, expected: str
) -> None:
    """A file cut while it is read (a download still being written, a network file system):
    cut before its pixels are read, a quarantine row; after, the row from what was read. A
    memory-mapped read would SIGBUS the worker (the pages are touched after the cut)."""
    big = np.random.default_rng(1).integers(0, 4095, (1024, 768), dtype=np.uint16)
    write_dicom(tmp_path / "image.dcm", big)
    mask = np.zeros((1024, 768), np.uint8)
    mask[100:200, 100:200] = 255
    write_dicom(tmp_path / "mask.dcm", mask)
    script = tmp_path / "cut.py"
    script.write_text(TRUNCATE_MID_READ)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "image.dcm", when],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.strip().startswith(expected), run.stdout


def _damage(path: Path, kind: int, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if kind == 0:
        data = data[: len(data) // 2]  # truncated
    elif kind == 1:
        for _ in range(6):  # header byte flips
            data[rng.randrange(132, 700)] ^= 0xFF
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at : at + 256] = rng.randbytes(256)  # random bytes
    elif kind == 3:
        data = bytearray()  # empty
    elif kind == 4:
        data[128:132] = b"XXXX"  # broken preamble
    else:  # Rows (US) declared 3 bytes long: pydicom's BytesLengthException on access
        at = data.index(b"\x28\x00\x10\x00US\x02\x00") + 6
        data[at : at + 2] = b"\x03\x00"
    path.write_bytes(bytes(data))


def test_prepare_survives_a_third_of_the_files_damaged(tmp_path: Path, ray_local) -> None:
    from data_pipeline.catalog import build_catalog
    from data_pipeline.convert import prepare
    from data_pipeline.synth import SynthConfig, make_synthetic

    data = make_synthetic(tmp_path / "data", SynthConfig(patients=12, seed=7, size=(128, 96)))
    rng = random.Random(3)
    damaged = sorted(data.rglob("*.dcm"))[::3]
    for index, path in enumerate(damaged):
        _damage(path, index % 6, rng)
    out, catalog = tmp_path / "prep", build_catalog(data)
    cfg = PrepareConfig(cls_size=32, seg_size=32, det_size=64, shard_size=8)
    manifest = prepare(catalog, out, cfg, print_fn=lambda *_: None)
    assert (out / "manifest.json").is_file()
    for summary in manifest["tasks"].values():
        assert summary["expected"] == summary["written"] + summary["quarantined"]
        assert summary["written"] and summary["quarantined"]
    with open(out / "quarantine.csv", newline="") as handle:
        listed = {(data / row["source_path"]).resolve() for row in csv.DictReader(handle)}
    used = {
        (data / f).resolve()
        for a in catalog.abnormalities
        if a.split != "excluded"
        for f in (a.image_file, a.mask_file, a.crop_file)
        if f
    }
    unusable = {p.resolve() for p in damaged if _outcome(read_image, p) != "ok"}
    assert len(unusable & used) > len(damaged) // 2
    assert unusable & used <= listed, sorted(str(p) for p in (unusable & used) - listed)
