"""Post-processing transforms for inference on images of any size."""

from __future__ import annotations

from typing import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize

__all__ = ["ResizeToOriginald"]


class ResizeToOriginald(MapTransform):
    """Resize ``d[key]`` (C, h, w), e.g. a prediction made at the model's input size, back to the size of
    the image as loaded: ``(C, H, W)`` with ``(H, W) = d[key].meta["spatial_shape"]`` (set by
    :class:`essa_monai.data.LoadImage2Dd` and carried to the network output by MONAI's MetaTensor).

    Args:
        keys: keys to resize. mode: interpolation (``"bilinear"`` for probabilities, ``"nearest"`` for labels).
    """

    def __init__(self, keys: KeysCollection, mode: str = "bilinear", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            if "spatial_shape" not in meta:
                raise ValueError(f"'{key}' has no meta['spatial_shape'] (original size) to resize back to")
            size = [int(s) for s in meta["spatial_shape"]][-2:]
            d[key] = Resize(spatial_size=size, mode=self.mode)(d[key])
        return d
