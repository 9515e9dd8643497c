"""NIfTI volumes read with nibabel: reoriented to canonical RAS+, then one 2D slice taken.

Display convention of the returned slice (the usual radiological view): superior (or anterior, for
axial slices) at the top; patient right on the image's left for axial and coronal slices; anterior on
the image's left for sagittal slices. Because the volume is first reoriented with
:func:`nibabel.as_closest_canonical`, a volume stored LAS or LPS gives the same picture as its RAS copy.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from .errors import ImageLoadError
from .formats import check_file

__all__ = ["read_nifti", "SLICE_AXES"]

#: names for ``slice_axis`` (the axis held fixed, in canonical RAS+ voxel order).
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _load_canonical(path: str) -> np.ndarray:
    try:
        img = nib.load(path)
    except Exception as err:  # ImageFileError, struct/gzip errors for garbage
        raise ImageLoadError(path, f"not a readable NIfTI file ({type(err).__name__}: {err})") from err
    try:
        img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # EOFError / zlib.error / OSError for truncated data
        raise ImageLoadError(path, f"corrupt or truncated NIfTI data ({type(err).__name__}: {err})") from err
    if data.dtype.fields is not None or data.dtype.kind == "c":
        raise ImageLoadError(path, f"unsupported NIfTI data type {data.dtype} (RGB or complex)")
    return data


def read_nifti(
    path: str | os.PathLike[str],
    *,
    slice_axis: int | str = "axial",
    slice_index: int | None = None,
    frame: int | None = None,
) -> np.ndarray:
    """Read a 2D NIfTI image, or one slice of a 3D (or one volume of a 4D) NIfTI, in stored units.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        slice_axis: axis held fixed for 3D volumes, in canonical RAS+ order: ``0``/``"sagittal"``,
            ``1``/``"coronal"``, ``2``/``"axial"`` (default).
        slice_index: index along ``slice_axis`` (canonical order, i.e. from right/posterior/inferior);
            default the middle slice ``n // 2``.
        frame: volume index of a 4D file (required when the 4th dimension is > 1).

    Returns:
        float32 array ``(H, W)`` in the file's units (scaling slope/intercept applied), displayed as
        described in the module docstring.

    Raises:
        ImageLoadError: unreadable file, >4 dimensions, 4D without ``frame``, index out of range.
    """
    path = check_file(path)
    data = _load_canonical(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        n = data.shape[3]
        if frame is None:
            raise ImageLoadError(path, f"4D NIfTI with {n} volumes; pass frame=<index in 0..{n - 1}> to pick one")
        if not -n <= frame < n:
            raise ImageLoadError(path, f"frame {frame} out of range for a 4D NIfTI with {n} volumes")
        data = data[..., frame]
    if data.ndim not in (2, 3):
        raise ImageLoadError(path, f"expected a 2D, 3D or 4D NIfTI, got shape {data.shape}")
    if data.ndim == 3 and data.shape[2] == 1 and slice_index is None:
        data = data[..., 0]
    if data.ndim == 3:
        axis = SLICE_AXES.get(slice_axis, slice_axis) if isinstance(slice_axis, str) else slice_axis
        if axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(SLICE_AXES)}, got {slice_axis!r}")
        n = data.shape[axis]
        index = n // 2 if slice_index is None else slice_index
        if not -n <= index < n:
            raise ImageLoadError(path, f"slice_index {index} out of range for {n} slices along axis {axis}")
        data = np.take(data, index, axis=axis)
    # (first, second) canonical axes -> rows = second axis reversed, columns = first axis reversed
    return np.ascontiguousarray(data.T[::-1, ::-1], dtype=np.float32)
