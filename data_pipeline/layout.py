"""Find CBIS-DDSM files in a listing of DATA, in the three layouts a download comes in.

1. The CSVs' own layout: ``<Subject>/<StudyUID>/<SeriesUID>/00000N.dcm``.
2. The NBIA download with ``metadata.csv``: ``Series UID`` -> ``File Location`` (files ``1-N.dcm``).
3. The NBIA layout without ``metadata.csv``: ``<Subject>/<MM-DD-YYYY>-DDSM-[NA-]<study5>/
   1.000000-<description>-<series5>/1-N.dcm``, matched by subject and the UIDs' last five digits.

Paths from CSVs are untrusted: absolute paths and paths that climb out of DATA are rejected before
anything is opened.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

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
    """Where each DICOM series lives under DATA, from one listing of the tree (one walk of a
    folder, or one paged LIST of a bucket prefix). Every path is relative to DATA."""

    folders: dict[str, list[str]] = field(default_factory=dict)  # folder -> its .dcm files
    by_uid: dict[str, str] = field(default_factory=dict)  # metadata.csv
    by_csv_path: dict[tuple[str, str, str], str] = field(default_factory=dict)
    by_suffix: dict[tuple[str, str, str], str] = field(default_factory=dict)
    metadata_files: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, files: Iterable[str], read_text: Callable[[str], str]) -> SeriesIndex:
        """Index every folder of ``files`` (relative paths) that holds ``.dcm`` files;
        ``read_text`` reads a ``metadata.csv`` among them."""
        index = cls()
        for name in sorted(files):
            folder, base = posixpath.split(name)
            if base.lower().endswith(".dcm"):
                index.folders.setdefault(folder, []).append(name)
            elif base == "metadata.csv":
                index._read_metadata(name, read_text(name))
        for folder in index.folders:
            index._add_series_dir(folder)
        return index

    def _add_series_dir(self, folder: str) -> None:
        parts = PurePosixPath(folder).parts
        if len(parts) < 3:
            return
        subject, study, series = parts[-3:]
        self.by_csv_path.setdefault((subject, study, series), folder)
        study_match, series_match = STUDY_DIR.match(study), SERIES_DIR.match(series)
        if study_match and series_match:
            key = (subject, study_match.group(1), series_match.group(1))
            self.by_suffix.setdefault(key, folder)

    def _read_metadata(self, name: str, text: str) -> None:
        self.metadata_files.append(name)
        for row in csv.DictReader(io.StringIO(text, newline="")):
            cols = {re.sub(r"\W+", "_", k.strip().lower()): v for k, v in row.items() if k}
            uid, location = cols.get("series_uid"), cols.get("file_location")
            if not uid or not location:
                continue
            try:
                rel = check_relative(location)
            except UnsafePathError:
                continue  # a bad metadata row is ignored; its series resolves another way
            folder = posixpath.normpath(posixpath.join(posixpath.dirname(name), str(rel)))
            if not folder.startswith("../"):
                self.by_uid[uid.strip()] = folder

    def series_dir(self, csv_path: PurePosixPath) -> str | None:
        """The folder holding the series a CSV path names, in whichever layout exists."""
        if len(csv_path.parts) < 4:
            return None
        subject, study, series = csv_path.parts[-4:-1]
        folder = (
            self.by_uid.get(series)
            or self.by_csv_path.get((subject, study, series))
            or self.by_suffix.get((subject, study[-5:], series[-5:]))
        )
        return folder if folder in self.folders else None

    def resolve_file(self, csv_path: PurePosixPath) -> str | None:
        """The file a CSV path names: exact name in the CSV layout, ``1-(N+1).dcm`` in NBIA's."""
        folder = self.series_dir(csv_path)
        if folder is None:
            return None
        files = self.folders[folder]
        exact = posixpath.join(folder, csv_path.name)
        if exact in files:
            return exact
        match = CSV_FILE.match(csv_path.name)
        if match:
            nbia = posixpath.join(folder, f"1-{int(match.group(1)) + 1}.dcm")
            if nbia in files:
                return nbia
        return files[0] if len(files) == 1 else None

    def series_files(self, folder: str) -> list[str]:
        """The DICOM files of one series folder, sorted."""
        return list(self.folders.get(folder, ()))
