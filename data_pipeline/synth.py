"""A faithful miniature of a CBIS-DDSM download, for the demo and the tests.

``make_synthetic(out)`` writes what NBIA and TCIA hand out, read by the catalog through exactly the
same code path as the real data: the NBIA folder tree with ``metadata.csv`` (or the NBIA tree without
it, or the CSVs' own layout), four case-description CSVs with the real columns and quirks, and
DICOMs like the real ones (Secondary Capture, MG, MONOCHROME2, 16-bit images and crops, 8-bit 0/255
masks, a few masks slightly smaller than their image, ROI series whose crop and mask files come in
either order). Deterministic for a given seed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import SecondaryCaptureImageStorage

from data_pipeline.case_csv import SUBJECT_PREFIX
from data_pipeline.dicom_write import write_dicom
from data_pipeline.synth_images import (
    breast_image,
    draw_calcifications,
    draw_mass,
    lesion_crop,
    shrink_mask,
)

LAYOUTS = ("nbia", "nbia-no-metadata", "csv")
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."
BATCH_DATE = {
    "Mass-Training": "07-20-2016",
    "Mass-Test": "10-04-2016",
    "Calc-Training": "08-07-2016",
    "Calc-Test": "08-29-2017",
}
MASS_COLUMNS = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_COLUMNS = [c.replace("breast_density", "breast density") for c in MASS_COLUMNS[:6]] + [
    "calc type",
    "calc distribution",
    *MASS_COLUMNS[8:],
]
NBIA_COLUMNS = [
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
]


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise. ``size`` is the full image's (rows, columns)."""

    patients: int = 24
    seed: int = 0
    size: tuple[int, int] = (320, 192)
    layout: str = "nbia"
    test_share: float = 0.3
    multi_lesion_share: float = 0.15
    small_mask_share: float = 0.1


@dataclass
class _Writer:
    """Accumulates files, CSV rows and NBIA metadata while the tree is written."""

    out: Path
    cfg: SynthConfig
    rng: np.random.Generator
    csv_rows: dict[tuple[str, str], list[list[str]]] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)

    def uid(self) -> str:
        digits = "".join(str(d) for d in self.rng.integers(0, 10, 37))
        return f"{UID_ROOT}{self.rng.integers(1, 10)}{digits}"

    def series(
        self,
        subject: str,
        study: str,
        series: str,
        description: str,
        files: list[tuple[int, np.ndarray]],
        view: str,
        side: str,
    ) -> None:
        """Write one series; ``files`` holds (CSV index N of ``00000N.dcm``, pixels)."""
        folder = self._folder(subject, study, series, description)
        folder.mkdir(parents=True, exist_ok=True)
        for position, (index, pixels) in enumerate(files):
            name = f"{index:06d}.dcm" if self.cfg.layout == "csv" else f"1-{position + 1}.dcm"
            _write_dicom(
                folder / name,
                pixels,
                subject,
                study,
                series,
                description,
                view,
                side,
                self.uid(),
                position + 1,
            )
        if self.cfg.layout == "nbia":
            self._metadata_row(subject, study, series, description, folder, len(files))

    def _folder(self, subject: str, study: str, series: str, description: str) -> Path:
        if self.cfg.layout == "csv":
            return self.out / subject / study / series
        prefix = subject.split("_")[0]
        na = "NA-" if self.cfg.layout == "nbia-no-metadata" and self.rng.random() < 0.5 else ""
        study_dir = f"{BATCH_DATE[prefix]}-DDSM-{na}{study[-5:]}"
        return (
            self.out / "CBIS-DDSM" / subject / study_dir / f"1.000000-{description}-{series[-5:]}"
        )

    def _metadata_row(self, subject, study, series, description, folder, count) -> None:
        size = sum(f.stat().st_size for f in folder.iterdir())
        self.metadata.append(
            {
                "Series UID": series,
                "Collection": "CBIS-DDSM",
                "3rd Party Analysis": "NO",
                "Data Description URI": "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY",
                "Subject ID": subject,
                "Study UID": study,
                "Study Description": "",
                "Study Date": BATCH_DATE[subject.split("_")[0]],
                "Series Description": description,
                "Manufacturer": "",
                "Modality": "MG",
                "SOP Class Name": "Secondary Capture Image Storage",
                "SOP Class UID": SecondaryCaptureImageStorage,
                "Number of Images": str(count),
                "File Size": f"{size / 1e6:.2f} MB",
                "File Location": "./" + folder.relative_to(self.out).as_posix(),
                "Download Timestamp": "2026-01-01T00:00:00.000",
            }
        )


def _write_dicom(
    path: Path,
    pixels: np.ndarray,
    subject: str,
    study: str,
    series: str,
    description: str,
    view: str,
    side: str,
    sop: str,
    number: int,
) -> None:
    """A file of the synthetic download: MG, the subject as name and ID, its batch's date."""
    month, day, year = BATCH_DATE[subject.split("_")[0]].split("-")
    write_dicom(
        path,
        pixels,
        sop_instance=sop,
        Modality="MG",
        ConversionType="WSD",
        SeriesDescription=description,
        PatientName=subject,
        PatientID=subject,
        StudyDate=f"{year}{month}{day}",
        StudyInstanceUID=study,
        SeriesInstanceUID=series,
        StudyID="DDSM",
        SeriesNumber=1,
        InstanceNumber=number,
        BodyPartExamined="BREAST",
        PatientOrientation=view,
        Laterality=side[0],
    )


def _descriptors(lesion_type: str, malignant: bool, rng: np.random.Generator) -> list[str]:
    if lesion_type == "mass":
        shape = rng.choice(
            ["IRREGULAR", "IRREGULAR-ARCHITECTURAL_DISTORTION"]
            if malignant
            else ["ROUND", "OVAL", "LOBULATED"]
        )
        margins = rng.choice(
            ["SPICULATED", "ILL_DEFINED", "N/A"]
            if malignant
            else ["CIRCUMSCRIBED", "OBSCURED", "N/A"]
        )
        return [str(shape), str(margins)]
    kind = rng.choice(
        ["PLEOMORPHIC", "FINE_LINEAR_BRANCHING", "PLEOMORPHIC-PLEOMORPHIC"]
        if malignant
        else ["ROUND_AND_REGULAR", "LUCENT_CENTERED", "PUNCTATE"]
    )
    spread = rng.choice(
        ["CLUSTERED", "LINEAR", "N/A"] if malignant else ["N/A", "REGIONAL", "CLUSTERED"]
    )
    return [str(kind), str(spread)]


def _pathology(rng: np.random.Generator) -> str:
    return str(rng.choice(["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"], p=[0.45, 0.4, 0.15]))


def _image(
    w: _Writer,
    patient: str,
    lesion_type: str,
    split: str,
    side: str,
    view: str,
    pathologies: list[str],
    density: int,
) -> None:
    """One full image with its lesions, their crops and masks, and their CSV rows."""
    prefix = SUBJECT_PREFIX[(lesion_type, split)]
    subject = f"{prefix}_{patient}_{side}_{view}"
    image = breast_image(w.rng, w.cfg.size, side)
    draw = draw_mass if lesion_type == "mass" else draw_calcifications
    lesions = [draw(w.rng, image, side, p == "MALIGNANT") for p in pathologies]
    study, series = w.uid(), w.uid()
    w.series(subject, study, series, "full mammogram images", [(0, image)], view, side)
    image_path = f"{subject}/{study}/{series}/000000.dcm"
    for number, (pathology, lesion) in enumerate(zip(pathologies, lesions, strict=True), 1):
        mask = lesion.mask
        if w.rng.random() < w.cfg.small_mask_share:
            mask = shrink_mask(mask, w.rng.uniform(0.93, 0.97))
        crop_path, roi_path = _roi_series(
            w, f"{subject}_{number}", lesion_type, view, side, lesion_crop(image, lesion.box), mask
        )
        malignant = pathology == "MALIGNANT"
        assessment = w.rng.choice([4, 5]) if malignant else w.rng.choice([2, 3, 4])
        row = [
            patient,
            str(density),
            side,
            view,
            str(number),
            "mass" if lesion_type == "mass" else "calcification",
            *_descriptors(lesion_type, malignant, w.rng),
            str(assessment),
            pathology,
            str(w.rng.integers(1, 6)),
            image_path,
            crop_path,
            roi_path,
        ]
        w.csv_rows.setdefault((lesion_type, split), []).append(row)


def _roi_series(
    w: _Writer,
    subject: str,
    lesion_type: str,
    view: str,
    side: str,
    crop: np.ndarray,
    mask: np.ndarray,
) -> tuple[str, str]:
    """Write crop and mask as CBIS-DDSM does; return the CSV's (crop, ROI) paths with its quirks."""
    study, series = w.uid(), w.uid()
    crop_index, mask_index = (0, 1) if lesion_type == "mass" else (1, 0)
    files = [(crop_index, crop), (mask_index, mask)]
    if w.rng.random() < 0.5:
        files.reverse()  # 1-1.dcm is sometimes the crop and sometimes the mask
    if lesion_type == "mass" and w.rng.random() < 0.15:  # ROI alone in another series
        other = w.uid()
        w.series(subject, study, series, "cropped images", [(0, crop)], view, side)
        w.series(subject, study, other, "ROI mask images", [(0, mask)], view, side)
        return f"{subject}/{study}/{series}/000000.dcm", f"{subject}/{study}/{other}/000000.dcm\n"
    w.series(subject, study, series, "ROI mask images", files, view, side)
    crop_path = f"{subject}/{study}/{series}/{crop_index:06d}.dcm"
    roi_path = f"{subject}/{study}/{series}/{mask_index:06d}.dcm"
    if lesion_type == "mass":
        return crop_path, roi_path + "\n"  # mass CSVs end the ROI path in a newline
    return crop_path + "\n", roi_path  # calc CSVs end the crop path in one


def _patient_plan(cfg: SynthConfig, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(patient, lesion type, official split) per patient and lesion type."""
    n_test = max(1, round(cfg.patients * cfg.test_share))
    test = set(rng.permutation(cfg.patients)[:n_test].tolist())
    plan = []
    for i in range(cfg.patients):
        patient = f"P_{1 + 3 * i:05d}"
        lesion_type = "mass" if i % 2 == 0 else "calc"
        plan.append((patient, lesion_type, "test" if i in test else "train"))
        if i % 11 == 5:  # also a test patient of the other lesion type, as 31 real patients are
            plan.append((patient, "calc" if lesion_type == "mass" else "mass", "test"))
    return plan


def make_synthetic(out: Path, cfg: SynthConfig | None = None) -> Path:
    """Write a synthetic CBIS-DDSM download to ``out`` and return it."""
    cfg = cfg or SynthConfig()
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {cfg.layout!r}; choose from {LAYOUTS}")
    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out=out, cfg=cfg, rng=np.random.default_rng(cfg.seed))
    for patient, lesion_type, split in _patient_plan(cfg, w.rng):
        density = int(w.rng.integers(1, 5))
        for side in ["LEFT", "RIGHT"][: int(w.rng.integers(1, 3))]:
            n = 2 if w.rng.random() < cfg.multi_lesion_share else 1
            pathologies = [_pathology(w.rng) for _ in range(n)]
            for view in ("CC", "MLO"):
                _image(w, patient, lesion_type, split, side, view, pathologies, density)
    _write_csvs(w)
    return out


def _write_csvs(w: _Writer) -> None:
    for (lesion_type, split), rows in sorted(w.csv_rows.items()):
        columns = MASS_COLUMNS if lesion_type == "mass" else CALC_COLUMNS
        path = w.out / f"{lesion_type}_case_description_{split}_set.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
    if w.metadata:
        with open(w.out / "metadata.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, NBIA_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(w.metadata)
