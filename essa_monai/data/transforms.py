"""Tensor transforms between the loader and a DINOv2 ViT: normalise to the backbone's statistics and
resize to a multiple of the patch size (14 for DINOv2), plus a shape check for image/mask pairs.

Each transform has a dictionary twin (suffix ``d``) for MONAI ``Compose`` chains and bundle configs.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, NormalizeIntensity, Resize, Transform
from monai.utils import ensure_tuple_rep
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .errors import MaskMismatchError
from .image_io import LoadImage2Dd, LoadMask2Dd

__all__ = [
    "DINOV2_PATCH_SIZE",
    "backbone_mean_std",
    "patch_multiple_size",
    "NormalizeForBackbone",
    "NormalizeForBackboned",
    "ResizeToPatchMultiple",
    "ResizeToPatchMultipled",
    "CheckSameSpatialShaped",
    "make_backbone_transforms",
]

DINOV2_PATCH_SIZE = 14


def backbone_mean_std(model_name: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` the backbone was trained with, from timm's pretrained config of
    ``model_name`` (e.g. ``"vit_small_patch14_dinov2.lvd142m"``); ImageNet's when ``None`` (DINOv2)."""
    if model_name is None:
        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config named {model_name!r}")
    return tuple(cfg.mean), tuple(cfg.std)


class NormalizeForBackbone(Transform):
    """``(C, H, W)`` in ``[0, 1]`` -> ``(C, H, W)`` float32 ``(x - mean[c]) / std[c]``.

    Defaults are ImageNet's mean/std (``timm.data.IMAGENET_DEFAULT_MEAN/STD``), used by DINOv2.
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        self.mean, self.std = tuple(mean), tuple(std)
        self._normalize = NormalizeIntensity(subtrahend=self.mean, divisor=self.std, channel_wise=True)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[0] != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} channels, got shape {tuple(img.shape)}")
        return self._normalize(img)


class NormalizeForBackboned(MapTransform):
    """Dictionary version of :class:`NormalizeForBackbone`."""

    def __init__(
        self,
        keys: KeysCollection,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = NormalizeForBackbone(mean, std)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


def patch_multiple_size(
    spatial_shape: Sequence[int],
    patch_size: int = DINOV2_PATCH_SIZE,
    spatial_size: int | Sequence[int] | None = None,
) -> tuple[int, int]:
    """Target ``(H, W)`` in pixels, each a multiple of ``patch_size``.

    ``spatial_size=None``: each side of ``spatial_shape`` rounded to the nearest multiple (at least one
    patch), e.g. ``(100, 150) -> (98, 154)``. An ``int`` ``s`` means ``(s, s)``; a pair is used as is.
    Explicit sizes must already be multiples of ``patch_size`` (``ValueError`` otherwise).
    """
    if spatial_size is None:
        return tuple(max(patch_size, round(s / patch_size) * patch_size) for s in spatial_shape[-2:])
    size = tuple(ensure_tuple_rep(spatial_size, 2))
    if len(size) != 2 or any(s <= 0 or s % patch_size for s in size):
        raise ValueError(f"spatial_size {spatial_size} must be 2 positive multiples of patch_size={patch_size}")
    return size


class ResizeToPatchMultiple(Transform):
    """``(C, H, W)`` -> ``(C, H', W')`` with ``H'``, ``W'`` multiples of ``patch_size`` (see
    :func:`patch_multiple_size`), via :class:`monai.transforms.Resize`.

    Args:
        spatial_size: ``None`` (round each side), ``int`` (square) or ``(H', W')``.
        patch_size: ViT patch size in pixels (14 for DINOv2).
        mode: interpolation, ``"bilinear"`` for images, ``"nearest"`` for masks (keeps label values).
        anti_aliasing: Gaussian pre-smoothing when downsampling; never applied with ``"nearest*"`` modes.
    """

    def __init__(
        self,
        spatial_size: int | Sequence[int] | None = None,
        patch_size: int = DINOV2_PATCH_SIZE,
        mode: str = "bilinear",
        anti_aliasing: bool = True,
    ) -> None:
        if spatial_size is not None:
            patch_multiple_size((patch_size, patch_size), patch_size, spatial_size)  # validate early
        self.spatial_size, self.patch_size, self.mode = spatial_size, patch_size, mode
        self.anti_aliasing = anti_aliasing and not mode.startswith("nearest")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        size = patch_multiple_size(img.shape[1:], self.patch_size, self.spatial_size)
        if tuple(img.shape[1:]) == size:
            return img
        align = None if self.mode.startswith("nearest") or self.mode == "area" else False
        resize = Resize(size, mode=self.mode, align_corners=align, anti_aliasing=self.anti_aliasing)
        return resize(img)


class ResizeToPatchMultipled(MapTransform):
    """Dictionary version of :class:`ResizeToPatchMultiple`; ``mode`` may be one per key, e.g.
    ``keys=("image", "label"), mode=("bilinear", "nearest")``."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int] | None = None,
        patch_size: int = DINOV2_PATCH_SIZE,
        mode: str | Sequence[str] = "bilinear",
        anti_aliasing: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        modes = ensure_tuple_rep(mode, len(self.keys))
        self.resizers = {
            key: ResizeToPatchMultiple(spatial_size, patch_size, m, anti_aliasing) for key, m in zip(self.keys, modes)
        }

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizers[key](d[key])
        return d


def _filename(value: object, key: Hashable) -> str:
    meta = getattr(value, "meta", {}) or {}
    return str(meta.get("filename_or_obj", f"<{key}>"))


class CheckSameSpatialShaped(MapTransform):
    """Raise :class:`MaskMismatchError` unless all ``keys`` have the same ``(H, W)``; data unchanged.

    Put it after loading and before resizing, so that a mask of the wrong size is reported (naming both
    files) instead of being silently stretched onto its image.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        present = list(self.key_iterator(dict(data)))
        if not present:
            return data
        ref = present[0]
        ref_shape = tuple(data[ref].shape[1:])
        for key in present[1:]:
            shape = tuple(data[key].shape[1:])
            if shape != ref_shape:
                raise MaskMismatchError(
                    _filename(data[key], key),
                    f"{key!s} size (H, W)={shape} differs from {ref!s} size {ref_shape} of {_filename(data[ref], ref)}",
                )
        return data


def make_backbone_transforms(
    image_key: str = "image",
    mask_key: str | None = None,
    spatial_size: int | Sequence[int] | None = 224,
    patch_size: int = DINOV2_PATCH_SIZE,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    **load_kwargs: Any,
) -> Compose:
    """Path(s) -> model input: load, check mask size, resize to a patch multiple, normalise.

    Output: ``data[image_key]`` float32 ``(3, H', W')`` normalised; ``data[mask_key]`` (if given) float32
    ``(1, H', W')`` resized with nearest neighbour. ``load_kwargs`` go to :class:`LoadImage2Dd`.
    """
    keys = (image_key,) if mask_key is None else (image_key, mask_key)
    steps: list = [LoadImage2Dd(keys=image_key, **load_kwargs)]
    if mask_key is not None:
        slicing = {k: v for k, v in load_kwargs.items() if k in ("frame", "slice_axis", "slice_index")}
        steps += [LoadMask2Dd(keys=mask_key, **slicing), CheckSameSpatialShaped(keys=keys)]
    steps += [
        ResizeToPatchMultipled(keys=keys, spatial_size=spatial_size, patch_size=patch_size,
                               mode=("bilinear", "nearest")[: len(keys)]),
        NormalizeForBackboned(keys=image_key, mean=mean, std=std),
    ]
    return Compose(steps)
