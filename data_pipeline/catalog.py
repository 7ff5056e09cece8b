"""The CBIS-DDSM catalog: one record per abnormality and per full image, files resolved, splits made.

``build_catalog(DATA)`` reads any subset of the four case-description CSVs, resolves every referenced
DICOM in whichever layout the download uses (see ``layout``), tells the ROI mask from the lesion crop
by content (CBIS-DDSM swaps them in places), and assigns patient-level splits (see ``splits``).
Nothing is dropped silently: unreadable rows and unsafe paths are ``rejected`` with a reason, rows of
patients who are also test patients are ``excluded``, absent files are listed as ``missing``, files
whose header cannot be read as ``unreadable`` (prepare quarantines them). A CSV
that cannot be read as a whole (empty, columns missing) is one of ``csv_errors``, and its rows are
rejected with that reason: the other CSVs are still catalogued.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from data_pipeline import SPLITS
from data_pipeline.case_csv import CaseCsvError, CaseRow, find_case_csvs, read_case_csv
from data_pipeline.dicom import DicomError, read_header
from data_pipeline.layout import SeriesIndex, UnsafePathError, check_relative
from data_pipeline.splits import assign_splits, row_split
from data_pipeline.storage import Store

HEADER_BYTES = 64 * 1024  # a CBIS-DDSM header is ~2 KB: one ranged read in an object store

MASK_SIZE_TOLERANCE = 0.25  # a mask is "about the full image's size"
PATH_COLUMNS = {  # CSV column -> CaseRow field, in the order the catalog uses them
    "image_file_path": "image_path",
    "cropped_image_file_path": "crop_path",
    "roi_mask_file_path": "roi_path",
}


@dataclass(frozen=True)
class Abnormality:
    """One lesion: the CSV's cleaned values, its files (relative to DATA) and its split."""

    key: str
    image_key: str
    patient_id: str
    lesion_type: str
    official_split: str
    split: str
    side: str
    view: str
    abnormality_id: int
    pathology: str
    assessment: int | None
    subtlety: int | None
    breast_density: int | None
    morphology: str | None
    distribution: str | None
    csv_file: str
    line: int
    image_csv_path: str = ""
    roi_csv_path: str = ""
    image_file: str | None = None
    mask_file: str | None = None
    crop_file: str | None = None
    roi_by_content: bool = False


@dataclass(frozen=True)
class FullImage:
    """One physical mammogram (patient, side, view) with all its lesions; malignant if any is.

    CBIS-DDSM lists 71 views under both a Mass and a Calc series (the same mammogram twice):
    they are one image here, with every lesion of both (``lesion_type`` ``"calc+mass"``), both
    source series kept (``source_keys``, ``image_files``) and one of them read (``image_file``).
    """

    image_key: str
    patient_id: str
    lesion_type: str
    official_split: str
    split: str
    side: str
    view: str
    pathology: str
    image_file: str | None
    image_csv_path: str
    abnormality_keys: tuple[str, ...]
    mask_files: tuple[str | None, ...]
    lesion_pathologies: tuple[str, ...]
    source_keys: tuple[str, ...] = ()
    image_files: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class Rejection:
    """A CSV row that was not used, and why (never opened when its path is unsafe)."""

    csv_file: str
    line: int
    reason: str
    key: str | None = None


@dataclass
class Catalog:
    """Everything the later stages need to know about one CBIS-DDSM download."""

    root: str  # an absolute local path or an s3:// / gs:// URI
    csv_files: list[str]
    abnormalities: list[Abnormality]
    images: list[FullImage]
    rejected: list[Rejection]
    missing: list[str] = field(default_factory=list)
    patients: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # file (relative) -> reason
    csv_errors: list[str] = field(default_factory=list)
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # listing: (size, mtime)
    csv_digests: dict[str, str] = field(default_factory=dict)  # CSV label -> SHA-256

    def summary(self) -> dict[str, Any]:
        """Counts for ``mammobench catalog --json`` (``images``: physical images)."""
        by_split = Counter({s: 0 for s in (*SPLITS, "excluded")})
        by_split.update(a.split for a in self.abnormalities)
        series = {a.image_key for a in self.abnormalities} | self._rejected_images()
        views = Counter(physical_view(key) for key in series)
        return {
            "data": self.root,
            "csv_files": self.csv_files,
            "abnormalities": len(self.abnormalities) + len(self.rejected),
            "images": len(views),
            "duplicate_views": sum(count > 1 for count in views.values()),
            "patients": self.patients,
            "by_split": dict(by_split),
            "images_by_split": dict(Counter(i.split for i in self.images)),
            "by_pathology": dict(Counter(a.pathology for a in self.abnormalities)),
            "by_lesion_type": dict(Counter(a.lesion_type for a in self.abnormalities)),
            "missing_files": len(self.missing),
            "missing_examples": self.missing[:10],
            "unreadable_files": len(self.unreadable),
            "rejected_rows": len(self.rejected),
            "rejections": [asdict(r) for r in self.rejected[:50]],
            "csv_errors": self.csv_errors,
            "rows_by_csv": self._rows_by_csv(),
            "roi_by_content": sum(a.roi_by_content for a in self.abnormalities),
        }

    def _rows_by_csv(self) -> dict[str, dict[str, int]]:
        """Per CSV, its rows: ``kept`` (catalogued) and ``rejected``."""
        kept = Counter(a.csv_file for a in self.abnormalities)
        rejected = Counter(r.csv_file for r in self.rejected)
        return {f: {"kept": kept[f], "rejected": rejected[f]} for f in self.csv_files}

    def _rejected_images(self) -> set[str]:
        return {r.key.rsplit("_", 1)[0] for r in self.rejected if r.key}


def physical_view(image_key: str) -> str:
    """``P_00016_LEFT_CC`` of ``Calc-Training_P_00016_LEFT_CC``: the mammogram, whichever CSV."""
    return image_key.split("_", 1)[1]


def _check_paths(row: CaseRow) -> list[PurePosixPath]:
    """The row's image, crop and ROI paths, checked; an unsafe one is named by its column."""
    checked = []
    for column, name in PATH_COLUMNS.items():
        try:
            checked.append(check_relative(getattr(row, name)))
        except UnsafePathError as exc:
            raise UnsafePathError(f"{column}: {exc}") from None
    return checked


def _pick_mask(
    candidates: list[str],
    image: str | None,
    shape: Callable[[str], tuple[int, int, int] | None],
) -> tuple[str | None, str | None]:
    """Mask and crop among a ROI series' files, by content: a mask is 8-bit and image-sized."""
    shapes = {path: shape(path) for path in candidates}
    image_shape = shape(image) if image is not None else None
    masks, crops = [], []
    for path, found in shapes.items():
        if found is None:
            continue
        if found[2] == 8 and (image_shape is None or _about_same(found, image_shape)):
            masks.append(path)
        elif found[2] == 16:
            crops.append(path)
    return (masks[0] if masks else None), (crops[0] if crops else None)


def _about_same(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= MASK_SIZE_TOLERANCE * y for x, y in zip(a[:2], b[:2], strict=True))


class _Resolver:
    """Resolves a row's three CSV paths to files, recording the ones that are absent."""

    def __init__(self, index: SeriesIndex, store: Store) -> None:
        self.index, self.store = index, store
        self.missing: dict[str, None] = {}
        self.unreadable: dict[str, str] = {}  # relative path -> reason
        self._shapes: dict[str, tuple[int, int, int] | None] = {}

    def shape(self, rel: str) -> tuple[int, int, int] | None:
        """Rows, columns and bits of a file's header; None (and recorded) if unreadable."""
        if rel not in self._shapes:
            try:
                header = file_header(self.store, rel)
                found = header["rows"], header["columns"], header["bits_allocated"]
                if None in found:
                    raise DicomError("missing Rows, Columns or BitsAllocated")
            except DicomError as exc:  # not missing: prepare quarantines it with the reason
                self.unreadable[rel] = exc.reason
                found = None
            self._shapes[rel] = found
        return self._shapes[rel]

    def file(self, csv_path: PurePosixPath) -> str | None:
        found = self.index.resolve_file(csv_path)
        if found is None:
            self.missing[str(csv_path)] = None
        return found

    def roi_files(self, crop: PurePosixPath, roi: PurePosixPath) -> list[str]:
        files: dict[str, None] = {}
        for path in (crop, roi):
            folder = self.index.series_dir(path)
            if folder is None:
                self.missing[str(path)] = None
                continue
            files.update(dict.fromkeys(self.index.series_files(folder)))
        return list(files)


def file_header(store: Store, rel: str) -> dict[str, Any]:
    """``read_header`` of a file of ``store``: in an object store from its first bytes (the
    whole file only when the header runs past them)."""
    local = store.local_path(rel)
    if local is not None:
        return read_header(local)
    try:
        head = store.read_head(rel, HEADER_BYTES)
    except FileNotFoundError:
        raise DicomError("file not found") from None
    try:
        return read_header(head)
    except DicomError:
        if len(head) < HEADER_BYTES:
            raise
    return read_header(store.read_bytes(rel))


def _abnormality(row: CaseRow, paths: list[PurePosixPath], res: _Resolver) -> Abnormality:
    image = res.file(paths[0])
    candidates = res.roi_files(paths[1], paths[2])
    mask, crop = _pick_mask(candidates, image, res.shape)
    by_content = mask is not None
    if mask is None and candidates:
        mask = res.index.resolve_file(paths[2])  # unverified: prepare checks the content
    if crop is None and candidates:
        crop = res.index.resolve_file(paths[1])
    return Abnormality(
        key=row.key,
        image_key=row.image_key,
        split="",
        **{k: v for k, v in asdict(row).items() if k in _ROW_FIELDS},
        image_csv_path=str(paths[0]),
        roi_csv_path=str(paths[2]),
        image_file=image,
        mask_file=mask,
        crop_file=crop,
        roi_by_content=by_content,
    )


_ROW_FIELDS = set(Abnormality.__dataclass_fields__) - {"key", "image_key", "split"}


def _images(abnormalities: list[Abnormality]) -> list[FullImage]:
    """One record per physical view: its lesions from every CSV that lists it."""
    groups: dict[str, list[Abnormality]] = {}
    for abn in abnormalities:
        groups.setdefault(physical_view(abn.image_key), []).append(abn)
    return [_image(lesions) for _, lesions in sorted(groups.items())]


def _image(lesions: list[Abnormality]) -> FullImage:
    """The merged image: where its patient goes (test if any of its rows is a test row)."""
    lesions = sorted(lesions, key=lambda a: (a.lesion_type, a.abnormality_id))
    splits = {a.split for a in lesions}
    split = "test" if "test" in splits else lesions[0].split
    copies = {a.image_key: a for a in sorted(lesions, key=lambda a: a.split != split)}
    first = next(iter(copies.values()))  # a copy from the image's own split
    files = tuple(a.image_file for a in copies.values())
    read = next((a for a in copies.values() if a.image_file), first)
    pathologies = tuple(a.pathology for a in lesions)
    return FullImage(
        image_key=first.image_key,
        patient_id=first.patient_id,
        lesion_type="+".join(sorted({a.lesion_type for a in lesions})),
        official_split=first.official_split,
        split=split,
        side=first.side,
        view=first.view,
        pathology=image_pathology(pathologies),
        image_file=read.image_file,
        image_csv_path=read.image_csv_path,
        abnormality_keys=tuple(a.key for a in lesions),
        mask_files=tuple(a.mask_file for a in lesions),
        lesion_pathologies=pathologies,
        source_keys=tuple(copies),
        image_files=files,
    )


def image_pathology(pathologies: tuple[str, ...]) -> str:
    """Image-level pathology: malignant if any lesion is, else benign if any lesion is."""
    for label in ("MALIGNANT", "BENIGN"):
        if label in pathologies:
            return label
    return "BENIGN_WITHOUT_CALLBACK"


def build_catalog(
    data: str | Path, csv_dir: str | Path | None = None, val_fraction: float = 0.15, seed: int = 0
) -> Catalog:
    """Catalog a CBIS-DDSM download (or ``mammobench synth`` output).

    Args:
        data: Folder or ``s3://`` / ``gs://`` prefix holding the DICOM tree (CSV layout or NBIA
            layout) and, unless ``csv_dir`` is given, the case-description CSVs at any depth.
        csv_dir: Folder or prefix holding the case-description CSVs, if they live elsewhere.
        val_fraction: Share of training patients carved out as validation.
        seed: Seed of the validation split.
    """
    store = Store.at(data)
    if not store.is_dir():
        raise FileNotFoundError(f"{store.root}: DATA folder not found")
    listing = store.files()
    csv_store = store if csv_dir is None else Store.at(csv_dir)
    csv_names = listing if csv_dir is None else csv_store.files()
    csvs = [str(p) for p in find_case_csvs(csv_names)]
    if not csvs:
        raise FileNotFoundError(f"no CBIS-DDSM case-description CSVs under {csv_store.root}")
    labels = {name: name if csv_dir is None else csv_store.uri(name) for name in csvs}
    rows, rejected, csv_errors, digests = _read_rows(csv_store, labels)
    resolver = _Resolver(SeriesIndex.build(listing, partial(_text, store)), store)
    records: list[Abnormality] = []
    for row in rows:
        try:
            paths = _check_paths(row)
        except UnsafePathError as exc:
            rejected.append(Rejection(row.csv_file, row.line, str(exc), row.key))
            continue
        records.append(_abnormality(row, paths, resolver))
    splits = assign_splits(
        ((a.patient_id, a.official_split, a.pathology) for a in records), val_fraction, seed
    )
    records = [replace(a, split=row_split(splits[a.patient_id], a.official_split)) for a in records]
    return Catalog(
        root=store.root,
        csv_files=list(labels.values()),
        abnormalities=records,
        images=_images(records),
        rejected=rejected,
        missing=list(resolver.missing),
        unreadable=dict(sorted(resolver.unreadable.items())),
        patients=len({r.patient_id for r in rows}),
        csv_errors=csv_errors,
        files=listing,
        csv_digests=digests,
    )


def _text(store: Store, name: str) -> str:
    """A text file's content; bytes that are not UTF-8 kept as in a file name."""
    return store.read_bytes(name).decode("utf-8-sig", errors="surrogateescape")


def _read_rows(
    store: Store, labels: dict[str, str]
) -> tuple[list[CaseRow], list[Rejection], list[str], dict[str, str]]:
    """The rows of every CSV, the rows rejected, the CSVs that cannot be read as a whole, and
    each CSV's SHA-256 (part of ``prepare``'s fingerprint)."""
    rows: list[CaseRow] = []
    rejected: list[Rejection] = []
    errors: list[str] = []
    digests: dict[str, str] = {}
    for name, label in labels.items():
        data = store.read_bytes(name)
        digests[label] = hashlib.sha256(data).hexdigest()
        try:
            parsed, bad = read_case_csv(PurePosixPath(name), label, data)
        except CaseCsvError as exc:
            errors.append(str(exc))
            parsed, bad = [], [(line, str(exc)) for line in exc.lines]
        rows.extend(parsed)
        rejected.extend(Rejection(label, line, reason) for line, reason in bad)
    return rows, rejected, errors, digests
