"""Find CBIS-DDSM files on disk in the three layouts a download comes in.

1. The CSVs' own layout: ``<Subject>/<StudyUID>/<SeriesUID>/00000N.dcm``.
2. The NBIA download with ``metadata.csv``: ``Series UID`` -> ``File Location`` (files ``1-N.dcm``).
3. The NBIA layout without ``metadata.csv``: ``<Subject>/<MM-DD-YYYY>-DDSM-[NA-]<study5>/
   1.000000-<description>-<series5>/1-N.dcm``, matched by subject and the UIDs' last five digits.

Paths from CSVs are untrusted: absolute paths and paths that climb out of DATA are rejected before
anything is opened.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

STUDY_DIR = re.compile(r"^\d{2}-\d{2}-\d{4}-DDSM-(?:NA-)?(\d{5})$")
SERIES_DIR = re.compile(r"^\d+\.\d+-.*-(\d{5})$")
CSV_FILE = re.compile(r"^0*(\d+)\.dcm$", re.IGNORECASE)


class UnsafePathError(ValueError):
    """A path from a CSV that is absolute or climbs out of DATA."""


def check_relative(path: str) -> PurePosixPath:
    """Validate a path read from a CSV: relative, inside DATA, no drive letters or control bytes.

    Raises:
        UnsafePathError: With the reason, before the path is ever opened.
    """
    text = path.strip().replace("\\", "/")
    if not text:
        raise UnsafePathError("empty path")
    if any(ord(char) < 32 for char in text):  # a NUL would fail at open(), a newline in a listing
        raise UnsafePathError(f"path {text!r} holds control characters")
    pure = PurePosixPath(text)
    if pure.is_absolute() or PureWindowsPath(path.strip()).drive:
        raise UnsafePathError(f"absolute path {text!r} is not allowed")
    if ".." in pure.parts:
        raise UnsafePathError(f"path {text!r} climbs out of DATA ('..')")
    return pure


@dataclass
class SeriesIndex:
    """Where each DICOM series lives under DATA, from one walk of the tree."""

    root: Path
    by_uid: dict[str, Path] = field(default_factory=dict)  # metadata.csv
    by_csv_path: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    by_suffix: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    metadata_files: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, root: Path) -> SeriesIndex:
        """Walk ``root`` once and index every folder that holds ``.dcm`` files."""
        index = cls(root=root.resolve())
        for dirpath, dirnames, filenames in os.walk(index.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            if "metadata.csv" in filenames:
                index._read_metadata(here / "metadata.csv")
            if any(name.lower().endswith(".dcm") for name in filenames):
                index._add_series_dir(here)
        return index

    def _add_series_dir(self, folder: Path) -> None:
        parts = folder.relative_to(self.root).parts
        if len(parts) < 3:
            return
        subject, study, series = parts[-3:]
        self.by_csv_path.setdefault((subject, study, series), folder)
        study_match, series_match = STUDY_DIR.match(study), SERIES_DIR.match(series)
        if study_match and series_match:
            key = (subject, study_match.group(1), series_match.group(1))
            self.by_suffix.setdefault(key, folder)

    def _read_metadata(self, path: Path) -> None:
        self.metadata_files.append(str(path.relative_to(self.root)))
        # undecodable bytes kept as on disk: a POSIX file name may hold them too
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            for row in csv.DictReader(handle):
                cols = {re.sub(r"\W+", "_", k.strip().lower()): v for k, v in row.items() if k}
                uid, location = cols.get("series_uid"), cols.get("file_location")
                if not uid or not location:
                    continue
                try:
                    rel = check_relative(location)
                except UnsafePathError:
                    continue  # a bad metadata row is ignored; its series resolves another way
                folder = self._inside(path.parent / rel)
                if folder is not None:
                    self.by_uid[uid.strip()] = folder

    def _inside(self, path: Path) -> Path | None:
        resolved = path.resolve()
        return resolved if resolved.is_relative_to(self.root) else None

    def series_dir(self, csv_path: PurePosixPath) -> Path | None:
        """The folder holding the series a CSV path names, in whichever layout exists."""
        if len(csv_path.parts) < 4:
            return None
        subject, study, series = csv_path.parts[-4:-1]
        folder = (
            self.by_uid.get(series)
            or self.by_csv_path.get((subject, study, series))
            or self.by_suffix.get((subject, study[-5:], series[-5:]))
        )
        return folder if folder is not None and folder.is_dir() else None

    def resolve_file(self, csv_path: PurePosixPath) -> Path | None:
        """The file a CSV path names: exact name in the CSV layout, ``1-(N+1).dcm`` in NBIA's."""
        folder = self.series_dir(csv_path)
        if folder is None:
            return None
        exact = folder / csv_path.name
        if exact.is_file():
            return self._inside(exact)
        match = CSV_FILE.match(csv_path.name)
        if match:
            nbia = folder / f"1-{int(match.group(1)) + 1}.dcm"
            if nbia.is_file():
                return self._inside(nbia)
        files = series_files(folder)
        return files[0] if len(files) == 1 else None

    def relative(self, path: Path) -> str:
        """A resolved path as an operator finds it: relative to DATA, POSIX separators."""
        return path.relative_to(self.root).as_posix()


def series_files(folder: Path) -> list[Path]:
    """The DICOM files of one series folder, sorted."""
    return sorted(p.resolve() for p in folder.iterdir() if p.suffix.lower() == ".dcm")
