"""Decode CBIS-DDSM DICOM files into display-ready numpy arrays, quickly and with specific errors.

CBIS-DDSM originals are uncompressed 16-bit MONOCHROME2 Secondary Captures, 25-30 MB each; copies
found elsewhere are often re-encoded (RLE, JPEG 2000). For uncompressed little-endian files pydicom
defers the pixel data, which is then read straight into the output array with one bounded read
(``Dataset.pixel_array`` costs several times more). The file is not memory-mapped: a file truncated
while it is read would kill the worker with SIGBUS instead of raising. Every other transfer syntax
goes through pydicom's decoders and their pylibjpeg plugins, after the declared image size is
checked, so a damaged header cannot make a decoder allocate gigabytes.

Every failure raises ``DicomError`` whose ``reason`` is short, specific and free of header values
(no names, dates or UIDs): the caller adds the file path and quarantines the file. A damaged file
makes pydicom raise almost anything (``BytesLengthException``, ``struct.error``, ``TypeError``,
``NotImplementedError``...): the public readers turn every exception into a ``DicomError``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_voi_lut, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLETransferSyntaxes,
)

PathArg = str | os.PathLike[str]
Source = PathArg | bytes  # a file, or its bytes (read from an object store)

PIXEL_DATA_TAG = 0x7FE00010
FAST_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
MAMMO_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCC", "XCCL", "XCCM", "FB", "SIO", "AT"})
_TRUNCATION_WARNING = "End of file reached"
_DEFER_BYTES = 1024  # pixel data (and any other value) above this size is left in the file
MAX_PIXELS = 2**27  # 134 M pixels (CBIS-DDSM's largest image has ~40 M): beyond, a damaged header
TRUNCATED_PIXELS = "truncated: the file ends inside its pixel data"
_T = TypeVar("_T")


class DicomError(Exception):
    """A DICOM file that cannot be used, with a short PHI-free ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def _values_not_validated() -> Iterator[None]:
    """pydicom warns and logs about invalid values by quoting them (names, UIDs, dates): while a
    file is read here no value is validated, so none is quoted (the setting is restored after)."""
    settings = pydicom.config.settings
    mode, settings.reading_validation_mode = settings.reading_validation_mode, pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = mode


def _contained(read: Callable[..., _T]) -> Callable[..., _T]:
    """Any exception of ``read`` becomes a ``DicomError`` naming its type (never its message,
    which may quote header values)."""

    @functools.wraps(read)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        try:
            with _values_not_validated():
                return read(*args, **kwargs)
        except DicomError:
            raise
        except MemoryError:
            raise DicomError("corrupt file: decoding it ran out of memory") from None
        except Exception as exc:
            raise DicomError(f"corrupt header or pixel data ({type(exc).__name__})") from None

    return wrapper


@_contained
def read_image(path: Source) -> np.ndarray:
    """Read a single-frame greyscale DICOM image, ready for display.

    Bits above BitsStored are masked off, a VOI LUT or window (if present) is applied and rescaled
    to the full range of the output dtype, and MONOCHROME1 is inverted so that bright means dense.
    Without a VOI transform, values stay in the stored bit range ``0 .. 2**BitsStored - 1``.

    Args:
        path: DICOM file, or its bytes.

    Returns:
        A 2-D Rows x Columns array, ``uint16`` for BitsAllocated 16 and ``uint8`` for 8.

    Raises:
        DicomError: the file is missing, not DICOM, truncated, has no or undecodable pixel data,
            or is not a single-frame greyscale image.
    """
    ds = _read_dataset(path, stop_before_pixels=False)
    return _to_display(ds, _stored_pixels(ds))


@_contained
def read_header(path: Source) -> dict[str, Any]:
    """Read the allow-listed, non-identifying header fields without touching the pixel data.

    Args:
        path: DICOM file, or its first bytes (the header's at least).

    Returns:
        Exactly the keys rows, columns, bits_allocated, bits_stored, photometric, transfer_syntax
        (its name), laterality ('L'/'R' or None) and view (e.g. 'CC'/'MLO' or None).

    Raises:
        DicomError: the file is missing, not DICOM or its header is unreadable.
    """
    ds = _read_dataset(path, stop_before_pixels=True)
    return {
        "rows": _int_or_none(ds.get("Rows")),
        "columns": _int_or_none(ds.get("Columns")),
        "bits_allocated": _int_or_none(ds.get("BitsAllocated")),
        "bits_stored": _int_or_none(ds.get("BitsStored")),
        "photometric": _photometric(ds),
        "transfer_syntax": _syntax_name(_transfer_syntax(ds)),
        "laterality": _laterality(ds),
        "view": _view(ds),
    }


@_contained
def classify_roi(path: Source) -> str:
    """Tell an ROI mask from a lesion crop by content (CBIS-DDSM file names and descriptions lie).

    A mask holds only the values 0 and 255 (8-bit in CBIS-DDSM); a crop is a 16-bit image.

    Args:
        path: a file from a CBIS-DDSM ROI series.

    Returns:
        "mask" or "crop".

    Raises:
        DicomError: unreadable file, or an 8-bit image that is not binary (neither kind).
    """
    ds = _read_dataset(path, stop_before_pixels=False)
    pixels = _stored_pixels(ds)
    binary = bool(np.all((pixels == 0) | (pixels == 255)))
    if binary:
        return "mask"
    if int(ds.BitsAllocated) == 16:
        return "crop"
    raise DicomError("ambiguous ROI: 8-bit image with values other than 0 and 255")


def align_mask(
    mask: np.ndarray, image_shape: tuple[int, ...], tolerance: float = 0.2
) -> np.ndarray:
    """Resize an ROI mask to its image's size when the two differ only a little.

    Real CBIS-DDSM masks can be up to ~15% smaller than their image (Mass-Test_P_00145_LEFT_CC:
    4386x1789 vs 5041x2056). Nearest-neighbour resizing keeps the mask's values.

    Args:
        mask: 2-D mask.
        image_shape: the image's shape (only the first two entries are used).
        tolerance: largest allowed relative size difference per axis, as a fraction of the image.

    Returns:
        The mask, resized to ``image_shape[:2]`` if needed.

    Raises:
        DicomError: a size difference beyond ``tolerance`` on either axis.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    if mask.shape[:2] == (height, width):
        return mask
    off = max(abs(mask.shape[0] - height) / height, abs(mask.shape[1] - width) / width)
    if off > tolerance:
        raise DicomError(
            f"mask size {mask.shape[0]}x{mask.shape[1]} differs from image size "
            f"{height}x{width} by more than {tolerance:.0%}"
        )
    source = mask.astype(np.uint8) if mask.dtype == bool else mask
    resized = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool) if mask.dtype == bool else resized


def _read_dataset(path: Source, *, stop_before_pixels: bool) -> Dataset:
    """``dcmread`` with its failures turned into reasons; truncation warnings become errors.

    Large values (the pixel data) are left unread: see ``_raw_pixels``.

    ``catch_warnings`` swaps process-global state: call from one thread per process (as Ray
    Data tasks do).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            in_memory = isinstance(path, bytes)  # nothing to defer: the value is read at once
            ds = pydicom.dcmread(
                io.BytesIO(path) if in_memory else path,
                stop_before_pixels=stop_before_pixels,
                defer_size=None if in_memory else _DEFER_BYTES,
            )
            _parse_values(ds)
        except FileNotFoundError:
            raise DicomError("file not found") from None
        except IsADirectoryError:
            raise DicomError("not a file (a directory)") from None
        except PermissionError:
            raise DicomError("permission denied") from None
        except InvalidDicomError:
            raise DicomError("not a DICOM file (no DICM preamble or file meta header)") from None
        except Exception as exc:  # struct.error, BytesLengthException, NotImplementedError...
            raise DicomError(f"truncated or corrupt header ({type(exc).__name__})") from None
    for warning in caught:  # not re-emitted: pydicom's warnings quote header values
        if _TRUNCATION_WARNING in str(warning.message):
            raise DicomError("truncated: file ends inside the encapsulated pixel data")
    return ds


def _parse_values(ds: Dataset) -> None:
    """Convert every top-level value now (pydicom converts on first access), deferred ones
    (the pixel data) excepted: a damaged value fails here, as a header error."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not (isinstance(raw, RawDataElement) and raw.value is None):
            ds[tag]


def _stored_pixels(ds: Dataset) -> np.ndarray:
    """Stored values as a Rows x Columns array, bits above BitsStored masked off."""
    _check_single_grey_frame(ds)
    syntax = _transfer_syntax(ds)
    pixels = _raw_pixels(ds) if syntax in FAST_SYNTAXES else _decoded_pixels(ds, syntax)
    if pixels.shape != (ds.Rows, ds.Columns):
        raise DicomError(
            f"shape mismatch: decoded {_shape_text(pixels.shape)}, header says "
            f"{ds.Rows}x{ds.Columns}"
        )
    return _mask_high_bits(pixels, int(ds.BitsStored))


def _check_single_grey_frame(ds: Dataset) -> None:
    if PIXEL_DATA_TAG not in ds:
        raise DicomError("no PixelData element")
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        raise DicomError("missing Rows, Columns or BitsAllocated")
    if _photometric(ds) is None:
        raise DicomError("missing PhotometricInterpretation")
    if int(ds.get("SamplesPerPixel", 1)) != 1 or _photometric(ds) not in GREYSCALE:
        raise DicomError("colour image (not a greyscale mammogram)")
    if int(ds.Rows) * int(ds.Columns) > MAX_PIXELS or min(int(ds.Rows), int(ds.Columns)) < 1:
        raise DicomError(
            f"implausible image size {int(ds.Rows)}x{int(ds.Columns)} (damaged header?)"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomError(f"multi-frame image ({frames} frames), not a single mammogram")
    if int(ds.BitsAllocated) not in (8, 16):
        raise DicomError(f"unsupported BitsAllocated {int(ds.BitsAllocated)} (expected 8 or 16)")
    if "BitsStored" not in ds:
        ds.BitsStored = ds.BitsAllocated


def _raw_pixels(ds: Dataset) -> np.ndarray:
    """Uncompressed little-endian pixels, read from the file into the array (one bounded read)."""
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    element = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    deferred = isinstance(element, RawDataElement) and element.value is None
    held = element.length if deferred else len(ds.PixelData)
    expected = rows * columns * dtype.itemsize
    if held < expected:
        raise DicomError(
            f"shape mismatch: PixelData holds {held} bytes, Rows*Columns*BitsAllocated/8 "
            f"is {expected}"
        )
    if deferred:
        if element.value_tell + element.length > os.path.getsize(ds.filename):
            raise DicomError(TRUNCATED_PIXELS)
        pixels = _read_deferred(ds.filename, element.value_tell, rows * columns, dtype)
    else:
        pixels = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * columns)
    return pixels.reshape(rows, columns)


def _read_deferred(filename: PathArg, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` values at ``offset`` of the file: a short read is a truncated file."""
    pixels = np.empty(count, dtype)
    with open(filename, "rb") as file:
        file.seek(offset)
        got = file.readinto(memoryview(pixels).cast("B"))
    if got < pixels.nbytes:
        raise DicomError(TRUNCATED_PIXELS)
    return pixels


def _decoded_pixels(ds: Dataset, syntax: UID) -> np.ndarray:
    """Decode compressed pixel data, after checking that a decoder is installed."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"unsupported transfer syntax: {_syntax_name(syntax)}") from None
    if not decoder.is_available:
        raise DicomError(f"{_syntax_name(syntax)} needs {_plugin_hint(syntax, decoder)}")
    try:
        return ds.pixel_array
    except Exception as exc:  # decoders raise many types; none of their messages may leak
        raise DicomError(
            f"{_syntax_name(syntax)} pixel data could not be decoded "
            f"(corrupt or truncated; {type(exc).__name__})"
        ) from None


def _plugin_hint(syntax: UID, decoder: Any) -> str:
    if syntax in JPEG2000TransferSyntaxes:
        return "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)"
    if syntax in JPEGLSTransferSyntaxes or syntax in JPEGTransferSyntaxes:
        return "pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)"
    if syntax in RLETransferSyntaxes:
        return "numpy or pylibjpeg-rle (pip install pylibjpeg pylibjpeg-rle)"
    return "one of: " + "; ".join(decoder.missing_dependencies)


def _mask_high_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Keep only the BitsStored low bits (sign-extended for signed data)."""
    bits_allocated = pixels.dtype.itemsize * 8
    if bits_stored >= bits_allocated:
        return pixels
    if pixels.dtype.kind == "u":
        return pixels & pixels.dtype.type((1 << bits_stored) - 1)
    shift = bits_allocated - bits_stored
    return (pixels << shift) >> shift


def _to_display(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Apply VOI (if any), make unsigned, and invert MONOCHROME1."""
    out_dtype = np.dtype(np.uint16 if stored.dtype.itemsize == 2 else np.uint8)
    bits_stored = int(ds.BitsStored)
    if _has_voi(ds):
        low, high = _voi_output_range(ds)
        voi = _apply_voi(ds, stored)
        top = float(np.iinfo(out_dtype).max)
        scaled = (voi - low) * (top / max(high - low, 1e-12))
        image, top_value = np.clip(np.rint(scaled), 0, top).astype(out_dtype), int(top)
    else:
        if stored.dtype.kind == "i":
            stored = stored.astype(np.int32) + (1 << (bits_stored - 1))
        image, top_value = stored.astype(out_dtype, copy=False), (1 << bits_stored) - 1
    if _photometric(ds) == "MONOCHROME1":
        image = out_dtype.type(top_value) - np.minimum(image, out_dtype.type(top_value))
    return image


def _has_voi(ds: Dataset) -> bool:
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def _apply_voi(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    try:
        return apply_voi_lut(stored, ds).astype(np.float64, copy=False)
    except (NotImplementedError, ValueError, AttributeError, IndexError, TypeError) as exc:
        raise DicomError(f"unusable VOI LUT or window ({type(exc).__name__})") from None


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The range pydicom's ``apply_voi_lut`` maps into (a LUT's entry depth, else the window's)."""
    if "VOILUTSequence" in ds:
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return float(low), float(high)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(syntax) if syntax else ImplicitVRLittleEndian


def _syntax_name(syntax: UID) -> str:
    """A transfer syntax's standard name; non-standard UIDs are not echoed."""
    return syntax.name if syntax.is_transfer_syntax else "unknown (non-standard) transfer syntax"


def _photometric(ds: Dataset) -> str | None:
    value = ds.get("PhotometricInterpretation")
    return str(value).strip().upper() if value else None


def _laterality(ds: Dataset) -> str | None:
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(ds.get(keyword) or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _view(ds: Dataset) -> str | None:
    for keyword in ("PatientOrientation", "ViewPosition"):
        value = ds.get(keyword)
        if isinstance(value, str) and value.strip().upper() in MAMMO_VIEWS:
            return value.strip().upper()
    return None


def _int_or_none(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)
