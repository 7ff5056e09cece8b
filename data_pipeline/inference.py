"""A new case's file, made into the input its model was trained on.

A registered model takes the bytes of a DICOM or an image file (PNG, JPEG, TIFF) and applies
``prepare``'s own steps to them: the same DICOM decode (bits above BitsStored masked, VOI LUT or
window, MONOCHROME1 inverted), the same min-max scaling to 8 bits, the same area resize and the
same CLAHE. A classifier or segmenter of lesion crops expects the file to be the lesion's region
(CBIS-DDSM's cropped image, or any crop around it); a whole-image classifier and a detector expect
the whole mammogram.
"""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

from data_pipeline.dicom import DicomError, read_image
from data_pipeline.transforms import detection_image, whole_image

DICOM_MAGIC_OFFSET = 128  # "DICM" follows the 128-byte preamble of a Part 10 file


class InputError(ValueError):
    """A file a model cannot read (not DICOM, not an image, or a damaged one)."""


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file (its "DICM" prefix)."""
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def read_any(data: bytes) -> np.ndarray:
    """A greyscale 2-D array from a DICOM file's or an image file's bytes.

    DICOMs go through ``read_image`` (as ``prepare`` reads them); colour images become grey.

    Raises:
        InputError: the bytes are neither a readable DICOM nor an image OpenCV decodes.
    """
    if is_dicom(data):
        return _read_dicom(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError("neither a DICOM file nor an image OpenCV decodes (PNG, JPEG, TIFF)")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def _read_dicom(data: bytes) -> np.ndarray:
    """``read_image`` reads files (its bounded raw read needs a path): a private temp file."""
    handle, path = tempfile.mkstemp(suffix=".dcm")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        return read_image(path)
    except DicomError as exc:
        raise InputError(f"DICOM: {exc}") from None
    finally:
        os.unlink(path)


def model_image(image: np.ndarray, task: str, size: int, clip_limit: float) -> np.ndarray:
    """``prepare``'s output for ``image``: a ``size`` square (classification and segmentation)
    or its long side at ``size`` (detection), as uint8 with CLAHE."""
    if task == "detection":
        return detection_image(image, [], size, clip_limit)[0]
    return whole_image(image, size, clip_limit)
