"""The one DICOM writer: the synthetic download's files and every test's are made here.

CBIS-DDSM's files are single-frame Secondary Captures with native (uncompressed) pixels; copies
found elsewhere are re-encoded (RLE, JPEG 2000). ``write_dicom`` writes the first kind by default,
encodes with pydicom's encoders for the second, and stores given encapsulated fragments as they
are for files no encoder makes (corrupt streams, syntaxes nobody can decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    syntax: UID = ExplicitVRLittleEndian,
    fragments: Sequence[bytes] | None = None,
    sop_class: UID = SecondaryCaptureImageStorage,
    sop_instance: str | None = None,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    **elements: object,
) -> Path:
    """Write one single-frame DICOM file of ``pixels`` and return its path.

    Args:
        path: where to write (parent folders are made).
        pixels: rows x columns (x samples); its dtype sets Bits Allocated and Pixel Representation.
        syntax: the transfer syntax. Native syntaxes store the pixels' bytes; a compressed one is
            encoded by pydicom's encoder for it (RLE Lossless needs no plugin).
        fragments: encapsulated pixel data stored as is under ``syntax`` instead of ``pixels``'
            bytes; ``syntax`` may then be any UID, a private one included.
        sop_class: SOP Class UID, in the file meta and the dataset.
        sop_instance: SOP Instance UID; a new one when not given.
        bits_stored: Bits Stored when fewer than allocated (High Bit follows it).
        photometric: Photometric Interpretation.
        **elements: header elements by keyword, set last: they add to or override everything
            above (a wrong ``Rows``, a cut ``PixelData``), which is how broken files are made.
    """
    syntax, sop_instance = UID(syntax), sop_instance or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_instance
    encode = fragments is None and syntax.is_transfer_syntax and syntax.is_compressed
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if encode else syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(pixels.dtype.kind == "i")
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if encode:
        ds.compress(syntax, np.ascontiguousarray(pixels))
    elif fragments is not None:
        ds.PixelData = encapsulate(list(fragments))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a private syntax does not say how the data set is encoded: explicit VR little endian, as
    # DICOM requires of every encapsulated one
    encoding = {} if syntax.is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
    ds.save_as(path, enforce_file_format=True, **encoding)
    return path
