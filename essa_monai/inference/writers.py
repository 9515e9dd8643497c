"""Output files of inference, each written atomically (:func:`essa_monai.atomic.atomic_write`), so an
interrupted run never leaves a half-written mask behind."""

from __future__ import annotations

import json
import os
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations
from PIL import Image

from ..atomic import atomic_write

__all__ = ["write_mask_png", "write_overlay_png", "write_mask_nifti", "write_json", "nifti_mask_volume"]


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> str:
    """``(H, W)`` label map -> 8-bit PNG; a binary mask as 0/255 (ISIC convention), more labels as ids."""
    mask = np.asarray(mask)
    values = (mask > 0).astype(np.uint8) * 255 if mask.max(initial=0) <= 1 else mask.astype(np.uint8)
    return atomic_write(path, lambda tmp: Image.fromarray(values).save(tmp, format="PNG"))


def write_overlay_png(path: str | os.PathLike[str], image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> str:
    """Quick look: ``image`` (``(3, H, W)`` or ``(H, W, 3)`` in ``[0, 1]``) with the foreground of
    ``mask`` (``(H, W)``) tinted red and its outline drawn in yellow."""
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = rgb.transpose(1, 2, 0)
    rgb = np.clip(rgb, 0.0, 1.0).copy()
    fg = np.asarray(mask) > 0
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * np.array([1.0, 0.0, 0.0])
    inner = fg.copy()
    inner[1:, :] &= fg[:-1, :]
    inner[:-1, :] &= fg[1:, :]
    inner[:, 1:] &= fg[:, :-1]
    inner[:, :-1] &= fg[:, 1:]
    rgb[fg & ~inner] = (1.0, 1.0, 0.0)
    pixels = np.rint(rgb * 255).astype(np.uint8)
    return atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def nifti_mask_volume(reference: nib.spatialimages.SpatialImage, display_mask: np.ndarray,
                      slice_axis: int | str = "axial", slice_index: int | None = None) -> np.ndarray:
    """Map a mask computed on the slice :func:`essa_monai.data.read_nifti` shows (``slice_axis`` and
    ``slice_index`` as given to it: canonical RAS+ axis, default the middle slice; display orientation)
    back to the voxel grid of ``reference``, in its own stored orientation. Returns a uint8 array of
    ``reference``'s spatial shape (2D or 3D) with the mask on that slice and 0 elsewhere."""
    from ..data.nifti import SLICE_AXES

    spatial = tuple(reference.shape[:3])
    shape3 = spatial + (1,) * (3 - len(spatial))
    ornt = orientations.io_orientation(reference.affine)  # stored axes -> canonical (RAS+) axes
    canon_shape = [0, 0, 0]
    for axis, (target, _flip) in enumerate(ornt):
        canon_shape[int(target)] = shape3[axis]
    canonical = np.zeros(canon_shape, dtype=np.uint8)
    if canon_shape[2] == 1 and slice_index is None:  # a 2D image or one-slice slab: read_nifti shows it whole
        axis, index = 2, 0
    else:
        axis = SLICE_AXES.get(slice_axis, slice_axis) if isinstance(slice_axis, str) else int(slice_axis)
        n = canon_shape[axis]
        index = (n // 2 if slice_index is None else slice_index) % n
    where: list = [slice(None)] * 3
    where[axis] = index
    # read_nifti shows the canonical slice s as s.T[::-1, ::-1]; invert that
    canonical[tuple(where)] = (np.asarray(display_mask) > 0)[::-1, ::-1].T
    stored = orientations.apply_orientation(canonical, orientations.ornt_transform(
        orientations.axcodes2ornt(("R", "A", "S")), ornt))
    return stored.reshape(spatial)


def write_mask_nifti(path: str | os.PathLike[str], reference_path: str | os.PathLike[str], display_mask: np.ndarray,
                     slice_axis: int | str = "axial", slice_index: int | None = None) -> str:
    """Write the mask as NIfTI (uint8, 0/1) with the affine and header of the input ``reference_path``,
    on the slice the image was read from (see :func:`nifti_mask_volume`)."""
    reference = nib.load(os.fspath(reference_path))
    data = nifti_mask_volume(reference, display_mask, slice_axis, slice_index)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(data, reference.affine, header=header)
    sform, scode = reference.header.get_sform(coded=True)
    qform, qcode = reference.header.get_qform(coded=True)
    image.set_sform(reference.affine if sform is None else sform, code=int(scode) if sform is not None else 1)
    if qform is not None:
        image.set_qform(qform, code=int(qcode))
    return atomic_write(path, lambda tmp: nib.save(image, tmp))


def write_json(path: str | os.PathLike[str], content: Any) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(content, f, indent=1)
            f.write("\n")

    return atomic_write(path, write)
