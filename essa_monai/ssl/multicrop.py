"""DINOv2 multi-crop augmentation and its collate function.

Each image gives 2 global crops (default 224 px, 32-100% of the image area) and ``n`` local crops
(default 8 x 98 px, 5-32%), with DINOv2's photometric augmentations:

==================  ==============  ===============  ===========
transform           global crop 1   global crop 2    local crops
==================  ==============  ===============  ===========
resized crop+flip   yes (p=0.5)     yes (p=0.5)      yes (p=0.5)
colour jitter       p=0.8           p=0.8            p=0.8
grayscale           p=0.2           p=0.2            p=0.2
Gaussian blur       p=1.0           p=0.1            p=0.5
solarize            --              p=0.2            --
normalise           ImageNet        ImageNet         ImageNet
==================  ==============  ===============  ===========

Colour jitter is (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1); blur has a 9 px kernel
and sigma in [0.1, 2.0] px. The blur probabilities are the ones the DINOv2 code asks for (and
BYOL/DINO use); the released DINOv2 code inverts them by mistake (``RandomApply(p=1 - p)``, so
effectively 0.0 / 0.9 / 0.5): pass ``blur_probabilities=(0.0, 0.9, 0.5)`` to reproduce that.

Single-channel (grayscale medical) images are replicated to 3 channels before the colour
transforms, so every crop is ``(3, S, S)`` float32. Crop sizes must be multiples of the ViT patch
size (14) so that crops tile into whole patches.
"""

from __future__ import annotations

import random
from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, RandomizableTrait
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from ..backbone import PATCH_SIZE, check_patch_multiple
from .masking import MaskingGenerator, sample_ibot_masks

__all__ = ["MultiCropAugmentation", "MultiCropd", "MultiCropCollator", "collate_multicrop"]


def _check_scale(scale: Sequence[float], what: str) -> tuple[float, float]:
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"{what} must satisfy 0 < min <= max <= 1 (fractions of the image area), got {tuple(scale)}")
    return lo, hi


def _to_float_image(image: Tensor | Image.Image) -> Tensor:
    """``(C, H, W)`` float tensor in ``[0, 1]`` (C in {1, 3}) from a tensor or a PIL image."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = TF.pil_to_tensor(image)
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a (C, H, W) tensor or a PIL image, got {type(image).__name__}")
    image = image.as_subclass(Tensor)  # drop MetaTensor / tv_tensors wrappers
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) image with C = 1 or 3, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return TF.to_dtype(image, torch.float32, scale=True)
    if not image.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1] or uint8, got {image.dtype}")
    return image.float()


class MultiCropAugmentation:
    """DINOv2 multi-crop: 2 global and ``local_crops_number`` local crops of one image.

    Args:
        global_crops_size: side of the global crops (px, multiple of ``patch_size``).
        local_crops_size: side of the local crops (px, multiple of ``patch_size``).
        local_crops_number: number of local crops (``>= 0``).
        global_crops_scale: range of the global crop area as a fraction of the image area.
        local_crops_scale: range of the local crop area as a fraction of the image area.
        blur_probabilities: Gaussian blur probability for (global crop 1, global crop 2, locals).
        solarize_probability: solarization probability of global crop 2 (threshold 0.5).
        mean: normalisation mean per RGB channel (default ImageNet, as timm).
        std: normalisation std per RGB channel.
        patch_size: ViT patch size (px) the crop sizes must be multiples of.

    Call:
        ``image``: ``(C, H, W)`` float tensor in ``[0, 1]`` (or uint8), ``C`` 1 or 3, or a PIL image.
        Returns ``{"global_crops": [g1, g2], "local_crops": [l1, ...]}``, each crop a float32
        ``(3, S, S)`` normalised tensor.
    """

    def __init__(
        self,
        global_crops_size: int = 224,
        local_crops_size: int = 98,
        local_crops_number: int = 8,
        global_crops_scale: Sequence[float] = (0.32, 1.0),
        local_crops_scale: Sequence[float] = (0.05, 0.32),
        blur_probabilities: Sequence[float] = (1.0, 0.1, 0.5),
        solarize_probability: float = 0.2,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        patch_size: int = PATCH_SIZE,
    ) -> None:
        check_patch_multiple(global_crops_size, "global_crops_size", patch_size)
        check_patch_multiple(local_crops_size, "local_crops_size", patch_size)
        if local_crops_number < 0:
            raise ValueError(f"local_crops_number must be >= 0, got {local_crops_number}")
        self.global_crops_size = global_crops_size
        self.local_crops_size = local_crops_size
        self.local_crops_number = local_crops_number
        self.global_crops_scale = _check_scale(global_crops_scale, "global_crops_scale")
        self.local_crops_scale = _check_scale(local_crops_scale, "local_crops_scale")
        self.patch_size = patch_size
        blur_global1, blur_global2, blur_local = blur_probabilities

        def geometric(size: int, scale: tuple[float, float]) -> v2.Compose:
            return v2.Compose(
                [
                    v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
                    v2.RandomHorizontalFlip(p=0.5),
                ]
            )

        def blur(p: float) -> v2.RandomApply:
            return v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=p)

        self.geometric_global = geometric(global_crops_size, self.global_crops_scale)
        self.geometric_local = geometric(local_crops_size, self.local_crops_scale)
        colour = [
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        normalize = v2.Normalize(mean=list(mean), std=list(std))
        self.global_transform1 = v2.Compose([*colour, blur(blur_global1), normalize])
        self.global_transform2 = v2.Compose(
            [*colour, blur(blur_global2), v2.RandomSolarize(threshold=0.5, p=solarize_probability), normalize]
        )
        self.local_transform = v2.Compose([*colour, blur(blur_local), normalize])

    @staticmethod
    def _prepare(crop: Tensor) -> Tensor:
        # Bicubic resampling overshoots [0, 1], which the colour transforms expect. Gray images are
        # replicated to RGB after cropping (cheaper than before).
        crop = crop.clamp(0.0, 1.0)
        return crop.expand(3, -1, -1).contiguous() if crop.shape[0] == 1 else crop

    def __call__(self, image: Tensor | Image.Image) -> dict[str, list[Tensor]]:
        image = _to_float_image(image)
        global_crops = [
            self.global_transform1(self._prepare(self.geometric_global(image))),
            self.global_transform2(self._prepare(self.geometric_global(image))),
        ]
        local_crops = [
            self.local_transform(self._prepare(self.geometric_local(image))) for _ in range(self.local_crops_number)
        ]
        return {"global_crops": global_crops, "local_crops": local_crops}


class MultiCropd(MapTransform, RandomizableTrait):
    """Dictionary twin of :class:`MultiCropAugmentation`.

    Replaces ``data[key]`` (a ``(C, H, W)`` image in ``[0, 1]``, e.g. after ``LoadImaged``,
    ``EnsureChannelFirstd`` and ``ScaleIntensityd``) by ``data["global_crops"]`` and
    ``data["local_crops"]`` (lists of ``(3, S, S)`` float32 tensors); other entries are kept.

    Args:
        keys: the one image key.
        allow_missing_keys: do nothing when the key is absent.
        **kwargs: :class:`MultiCropAugmentation` arguments.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable] = "image", allow_missing_keys: bool = False, **kwargs: Any):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MultiCropd takes exactly one image key, got {self.keys}")
        self.multicrop = MultiCropAugmentation(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d.update(self.multicrop(d.pop(key)))
        return d


def collate_multicrop(
    samples: Sequence[Any],
    with_masks: bool = False,
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
    mask_probability: float = 0.5,
    patch_size: int = PATCH_SIZE,
    dtype: torch.dtype | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Stack multi-crop samples into crop-major batches, optionally with iBOT masks.

    Args:
        samples: ``B`` outputs of :class:`MultiCropAugmentation` (dicts with ``global_crops`` and
            ``local_crops``), or tuples whose first item is such a dict (e.g. ``(crops, label)``).
        with_masks: also sample iBOT block masks for the global crops (see
            :func:`essa_monai.ssl.masking.sample_ibot_masks`), on a ``G // patch_size`` grid, with
            blocks of at most half the grid as in DINOv2.
        mask_ratio_min_max: range of masked patch fractions.
        mask_probability: fraction of global crops that are masked.
        patch_size: ViT patch size (px).
        dtype: cast the crops to this dtype (default: keep float32).
        rng: random source for the masks (default: the :mod:`random` module).

    Returns:
        dict with ``global_crops``: ``(n_global * B, 3, G, G)``; ``local_crops``:
        ``(n_local * B, 3, L, L)`` or ``None`` without local crops (rows ``[v * B:(v + 1) * B]``
        are view ``v`` of every image); with masks also ``masks`` ``(n_global * B, (G // p)^2)`` bool,
        ``mask_indices``, ``masks_weight``, ``n_masked_patches`` and ``upperbound``.
    """
    crops = [s if isinstance(s, Mapping) else s[0] for s in samples]
    n_global = len(crops[0]["global_crops"])
    n_local = len(crops[0]["local_crops"])
    global_crops = torch.stack([c["global_crops"][v] for v in range(n_global) for c in crops])
    local_crops = torch.stack([c["local_crops"][v] for v in range(n_local) for c in crops]) if n_local else None
    if dtype is not None:
        global_crops = global_crops.to(dtype)
        local_crops = local_crops.to(dtype) if local_crops is not None else None
    batch: dict[str, Any] = {"global_crops": global_crops, "local_crops": local_crops}
    if with_masks:
        height, width = global_crops.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(f"global crops of {height} x {width} px do not tile into {patch_size} px patches")
        grid = (height // patch_size, width // patch_size)
        generator = MaskingGenerator(grid, max_num_patches=0.5 * grid[0] * grid[1])
        batch.update(sample_ibot_masks(len(global_crops), generator, mask_ratio_min_max, mask_probability, rng=rng))
    return batch


class MultiCropCollator:
    """Picklable ``collate_fn`` for a ``DataLoader``: :func:`collate_multicrop` with fixed arguments."""

    def __init__(
        self,
        with_masks: bool = True,
        mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
        patch_size: int = PATCH_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.with_masks = with_masks
        self.mask_ratio_min_max = tuple(mask_ratio_min_max)
        self.mask_probability = mask_probability
        self.patch_size = patch_size
        self.dtype = dtype

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate_multicrop(
            samples,
            with_masks=self.with_masks,
            mask_ratio_min_max=self.mask_ratio_min_max,  # type: ignore[arg-type]
            mask_probability=self.mask_probability,
            patch_size=self.patch_size,
            dtype=self.dtype,
        )
