"""DICOM images read with pydicom, turned into display intensities in ``[0, 1]``.

The pipeline is the DICOM grayscale pipeline, with pydicom's own functions:

1. decode pixel data (:attr:`pydicom.dataset.Dataset.pixel_array`; compressed transfer syntaxes work
   when a pydicom pixel-data plugin for them is installed: RLE always, JPEG baseline and JPEG 2000 via
   Pillow, JPEG-LS / lossless JPEG need ``pylibjpeg`` or ``gdcm``), one frame of a multi-frame file;
2. modality LUT / rescale slope and intercept (:func:`pydicom.pixels.apply_modality_lut`), giving
   physical units (e.g. Hounsfield units for CT);
3. VOI LUT (:func:`pydicom.pixels.apply_voi`) or window centre/width
   (:func:`pydicom.pixels.apply_windowing`) when present, then scaled from that output range to
   ``[0, 1]``; without VOI information the image is min-max scaled; an explicit ``intensity_range``
   in modality units overrides both;
4. ``MONOCHROME1`` (minimum = white) is inverted so that 1 is always bright.

Colour images (``RGB``, ``YBR_*`` converted to RGB by pydicom, ``PALETTE COLOR`` via
:func:`pydicom.pixels.apply_color_lut`) are divided by their full scale.

MONAI's ``PydicomReader`` applies rescale only (no VOI, no MONOCHROME1, no frame choice), hence this
reader. Per-frame functional groups of enhanced multi-frame objects are not applied.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
from pydicom.dataset import Dataset

try:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
except ImportError:  # pydicom 2.4 (the MONAI Label environment pins pydicom<3): same functions, older home
    from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import ImageLoadError
from .formats import check_file, has_dicom_magic
from .intensity import minmax_to_unit, scale_to_unit

__all__ = ["read_dicom", "dicom_num_frames"]

_ENCODING_TO_SYNTAX = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def _read_dataset(path: str) -> Dataset:
    """Parse the file; files without the Part 10 header are parsed with ``force=True`` and their
    transfer syntax is taken from the encoding pydicom detected."""
    magic = has_dicom_magic(path)
    try:
        with warnings.catch_warnings():
            if not magic:  # a forced parse of a non-Part-10 file warns about guessed VRs; we report below
                warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not magic)
    except Exception as err:  # pydicom raises many types for garbage input
        raise ImageLoadError(path, f"not a readable DICOM file ({type(err).__name__}: {err})") from err
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        reason = "DICOM file has no image pixel data (PixelData/Rows/Columns missing)"
        if not magic:
            reason += "; it also lacks the 'DICM' header, so it may not be DICOM at all"
        raise ImageLoadError(path, reason)
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in _ENCODING_TO_SYNTAX:
        ds.file_meta.TransferSyntaxUID = _ENCODING_TO_SYNTAX[ds.original_encoding]
    return ds


def _syntax_name(ds: Dataset) -> str:
    uid = ds.file_meta.get("TransferSyntaxUID")
    return f"'{uid.name}' ({uid})" if uid is not None else "'unknown'"


def dicom_num_frames(ds: Dataset) -> int:
    """Number of frames (``NumberOfFrames``, 1 when absent)."""
    return int(ds.get("NumberOfFrames") or 1)


def _decode(ds: Dataset, path: str, frame: int | None) -> np.ndarray:
    """Decoded stored values of one frame: ``(H, W)`` or ``(H, W, 3)``."""
    n_frames = dicom_num_frames(ds)
    if n_frames > 1:
        if frame is None:
            raise ImageLoadError(
                path, f"multi-frame DICOM with {n_frames} frames; pass frame=<index in 0..{n_frames - 1}> to pick one"
            )
        if not -n_frames <= frame < n_frames:
            raise ImageLoadError(path, f"frame {frame} out of range for a DICOM with {n_frames} frames")
    elif frame not in (None, 0, -1):
        raise ImageLoadError(path, f"frame {frame} requested but the DICOM has a single frame")
    uid = ds.file_meta.get("TransferSyntaxUID")
    try:
        if n_frames == 1:
            return ds.pixel_array
        if hasattr(ds, "pixel_array_options"):  # pydicom 3 decodes only the frame asked for
            ds.pixel_array_options(index=frame % n_frames)
            return ds.pixel_array
        return ds.pixel_array[frame % n_frames]  # pydicom 2.4: every frame, then one
    except Exception as err:
        if uid is not None and uid.is_compressed:
            reason = (
                f"cannot decode compressed pixel data with transfer syntax {_syntax_name(ds)} "
                f"using the installed pydicom handlers ({err})"
            )
        else:
            reason = f"corrupt or truncated pixel data (transfer syntax {_syntax_name(ds)}): {err}"
        raise ImageLoadError(path, reason) from err


def _voi_to_unit(arr: np.ndarray, ds: Dataset, path: str, voi_index: int) -> np.ndarray | None:
    """Apply the VOI LUT or window and scale its output range to ``[0, 1]``; ``None`` if no VOI."""
    try:
        if ds.get("VOILUTSequence"):
            item = ds.VOILUTSequence[voi_index]
            n_entries = item.LUTDescriptor[0] or 2**16
            first = item.LUTDescriptor[1]
            lut = apply_voi(np.arange(first, first + n_entries), ds, voi_index)  # every LUT output
            out = apply_voi(np.rint(arr).astype(np.int64), ds, voi_index)
            return scale_to_unit(out, float(lut.min()), float(lut.max()))
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, voi_index)  # output range
            return scale_to_unit(apply_windowing(arr.astype(np.float64), ds, voi_index), low, high)
    except (IndexError, ValueError, NotImplementedError, AttributeError) as err:
        raise ImageLoadError(path, f"invalid VOI LUT / window (index {voi_index}): {err}") from err
    return None


def read_dicom(
    path: str | os.PathLike[str],
    frame: int | None = None,
    *,
    voi_index: int = 0,
    intensity_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Read one frame of a DICOM file as display intensities.

    Args:
        path: DICOM file (Part 10, or a bare dataset with a ``.dcm`` extension).
        frame: frame index for multi-frame files (required there; negative counts from the end).
        voi_index: which of several windows / VOI LUTs to use.
        intensity_range: ``(low, high)`` in modality units (after rescale, e.g. HU) mapped to
            ``[0, 1]``, overriding the file's VOI LUT / window. Grayscale only.

    Returns:
        float32 array ``(H, W, 1)`` (grayscale) or ``(H, W, 3)`` (colour) in ``[0, 1]``, 1 = bright.

    Raises:
        ImageLoadError: missing/empty/non-DICOM file, no pixel data, undecodable transfer syntax (the
            message names it), truncated pixel data, multi-frame without ``frame``, bad VOI.
    """
    path = check_file(path)
    ds = _read_dataset(path)
    stored = _decode(ds, path, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if stored.ndim == 3 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(stored, ds)
            full_scale = float(np.iinfo(rgb.dtype).max)
        else:
            rgb, full_scale = stored, float(2 ** int(ds.BitsStored) - 1)
        return np.clip(rgb.astype(np.float32) / full_scale, 0.0, 1.0).reshape(*rgb.shape[:2], -1)
    values = apply_modality_lut(stored, ds)
    if intensity_range is not None:
        unit = scale_to_unit(values, *intensity_range)
    else:
        unit = _voi_to_unit(values, ds, path, voi_index)
        if unit is None:
            unit = minmax_to_unit(values)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit[..., None]
