"""One entry point for 2D images and masks of any supported type, as MONAI transforms.

:class:`LoadImage2D` / :class:`LoadImage2Dd` dispatch on the file type (:func:`detect_format`: DICOM
magic, then extension) to :func:`read_photo`, :func:`read_dicom` or :func:`read_nifti`, and return what
a ViT backbone expects before normalisation: a float32 :class:`monai.data.MetaTensor` of shape
``(3, H, W)``, channel-first, display intensities in ``[0, 1]`` (grayscale replicated to 3 channels).
:class:`LoadMask2D` / :class:`LoadMask2Dd` return ``(1, H, W)`` float32 masks (``{0, 1}`` by default).

The metadata (``tensor.meta``) holds ``filename_or_obj`` (the path), ``format`` (``photo``/``dicom``/
``nifti``) and ``spatial_shape`` (``(H, W)`` as loaded), so later checks can name the file.

A typical chain (also in bundle configs)::

    LoadImage2Dd(keys="image") -> LoadMask2Dd(keys="label") -> CheckSameSpatialShaped(keys=("image", "label"))
    -> ResizeToPatchMultipled(keys=("image", "label"), spatial_size=224, mode=("bilinear", "nearest"))
    -> NormalizeForBackboned(keys="image")
"""

from __future__ import annotations

import os
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from .dicom import read_dicom
from .errors import ImageLoadError
from .formats import detect_format
from .intensity import minmax_to_unit, scale_to_unit
from .nifti import read_nifti
from .photo import read_photo, read_photo_mask

__all__ = [
    "read_image_2d",
    "load_image_2d",
    "load_mask_2d",
    "LoadImage2D",
    "LoadImage2Dd",
    "LoadMask2D",
    "LoadMask2Dd",
]


def read_image_2d(
    path: str | os.PathLike[str],
    *,
    frame: int | None = None,
    slice_axis: int | str = "axial",
    slice_index: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    voi_index: int = 0,
) -> np.ndarray:
    """Read any supported file as display intensities.

    Args:
        path: photo (JPEG/PNG/...), DICOM or NIfTI file.
        frame: frame of a multi-frame DICOM / volume of a 4D NIfTI.
        slice_axis, slice_index: which slice of a 3D NIfTI (see :func:`read_nifti`).
        intensity_range: ``(low, high)`` in the file's physical units mapped to ``[0, 1]`` (DICOM after
            rescale, e.g. HU; NIfTI stored values). Default: DICOM VOI/window, else min-max.
        voi_index: which DICOM window / VOI LUT to use.

    Returns:
        float32 array ``(H, W, C)``, ``C`` in ``{1, 3}``, values in ``[0, 1]``.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom(path, frame, voi_index=voi_index, intensity_range=intensity_range)
    if fmt == "nifti":
        values = read_nifti(path, slice_axis=slice_axis, slice_index=slice_index, frame=frame)
        unit = minmax_to_unit(values) if intensity_range is None else scale_to_unit(values, *intensity_range)
        return unit[..., None]
    if frame not in (None, 0):
        raise ImageLoadError(path, f"frame {frame} requested but a photo has a single frame")
    return read_photo(path)


def _to_meta_tensor(hwc: np.ndarray, path: str, fmt: str, channels: int | None) -> MetaTensor:
    chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1), dtype=np.float32))
    if channels is not None and chw.shape[0] != channels:
        chw = chw.expand(channels, -1, -1).contiguous()
    meta = {
        "filename_or_obj": path,
        "format": fmt,
        "spatial_shape": np.asarray(chw.shape[1:]),
    }
    return MetaTensor(chw, affine=torch.eye(3, dtype=torch.float64), meta=meta)


def load_image_2d(path: str | os.PathLike[str], **kwargs: Any) -> MetaTensor:
    """:func:`read_image_2d` as a float32 ``MetaTensor`` of shape ``(3, H, W)`` in ``[0, 1]``
    (grayscale replicated to 3 channels). Keyword arguments are those of :func:`read_image_2d`."""
    path = os.fspath(path)
    return _to_meta_tensor(read_image_2d(path, **kwargs), path, detect_format(path), channels=3)


def load_mask_2d(
    path: str | os.PathLike[str],
    *,
    binary: bool = True,
    frame: int | None = None,
    slice_axis: int | str = "axial",
    slice_index: int | None = None,
) -> MetaTensor:
    """Load a segmentation mask as a float32 ``MetaTensor`` of shape ``(1, H, W)``.

    PNG and other image files go through :func:`read_photo_mask` (ISIC 0/255 -> ``{0, 1}``); NIfTI
    label maps through :func:`read_nifti` (same slice choice as the image), values rounded to
    integers. ``binary=True`` maps every label > 0 to 1 (for NIfTI) / thresholds at half scale (for
    photos); ``binary=False`` keeps label ids. DICOM masks (DICOM-SEG) are not supported.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "photo":
        mask = read_photo_mask(path, binary=binary)
    elif fmt == "nifti":
        mask = np.rint(read_nifti(path, slice_axis=slice_axis, slice_index=slice_index, frame=frame))
        mask = (mask > 0).astype(np.float32) if binary else mask.astype(np.float32)
    else:
        raise ImageLoadError(path, "DICOM masks (DICOM-SEG) are not supported; convert the mask to PNG or NIfTI")
    return _to_meta_tensor(mask[..., None], path, fmt, channels=None)


class LoadImage2D(Transform):
    """Load a 2D image from a path: ``str`` -> float32 ``MetaTensor`` ``(3, H, W)`` in ``[0, 1]``.

    Args: the keyword arguments of :func:`read_image_2d` (``frame``, ``slice_axis``, ``slice_index``,
    ``intensity_range``, ``voi_index``), fixed for every call.
    """

    def __init__(
        self,
        frame: int | None = None,
        slice_axis: int | str = "axial",
        slice_index: int | None = None,
        intensity_range: tuple[float, float] | None = None,
        voi_index: int = 0,
    ) -> None:
        self.kwargs = dict(
            frame=frame, slice_axis=slice_axis, slice_index=slice_index,
            intensity_range=None if intensity_range is None else tuple(intensity_range), voi_index=voi_index,
        )

    def __call__(self, path: str | os.PathLike[str]) -> MetaTensor:
        return load_image_2d(path, **self.kwargs)


class LoadMask2D(Transform):
    """Load a 2D mask from a path: ``str`` -> float32 ``MetaTensor`` ``(1, H, W)``.

    Args: those of :func:`load_mask_2d` (``binary``, ``frame``, ``slice_axis``, ``slice_index``).
    """

    def __init__(
        self,
        binary: bool = True,
        frame: int | None = None,
        slice_axis: int | str = "axial",
        slice_index: int | None = None,
    ) -> None:
        self.kwargs = dict(binary=binary, frame=frame, slice_axis=slice_axis, slice_index=slice_index)

    def __call__(self, path: str | os.PathLike[str]) -> MetaTensor:
        return load_mask_2d(path, **self.kwargs)


class _LoadFromKeys(MapTransform):
    """Replace ``data[key]`` (a path) by ``loader(path)`` for each key."""

    loader: Transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadImage2Dd(_LoadFromKeys):
    """Dictionary version of :class:`LoadImage2D`: each ``data[key]`` path becomes a ``(3, H, W)``
    float32 ``MetaTensor`` in ``[0, 1]``."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage2D(**kwargs)


class LoadMask2Dd(_LoadFromKeys):
    """Dictionary version of :class:`LoadMask2D`: each ``data[key]`` path becomes a ``(1, H, W)``
    float32 ``MetaTensor`` mask."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMask2D(**kwargs)


