"""Block masking for iBOT (BEiT/DINOv2 style) and the per-batch mask sampling of DINOv2's collate.

A mask lives on the patch grid of a global crop (``G // 14`` patches a side). It is built from
random rectangles of ``>= min_num_patches`` patches with aspect ratio in ``[min_aspect,
1 / min_aspect]`` (log-uniform), added until the requested number of patches is reached.

:func:`sample_ibot_masks` masks a fraction ``mask_probability`` of the images of a batch, with
masking ratios spread evenly over ``mask_ratio_min_max`` (one stratum per masked image), the rest
unmasked, in random order.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["MaskingGenerator", "sample_ibot_masks"]


class MaskingGenerator:
    """Random block masks on an ``(H, W)`` patch grid.

    Args:
        input_size: patch grid ``(H, W)``, or ``n`` for ``(n, n)``.
        num_masking_patches: default number of patches to mask when called without one.
        min_num_patches: smallest block area (patches).
        max_num_patches: largest block area (patches); default ``num_masking_patches``. DINOv2 uses
            half the grid, which :func:`sample_ibot_masks` callers usually want as well.
        min_aspect: smallest block aspect ratio ``h / w``.
        max_aspect: largest aspect ratio; default ``1 / min_aspect``.
        exact: top masks up to the requested count when no block fits any more (see
            :meth:`__call__`); ``False`` reproduces DINOv2, which may leave them a few patches short.
    """

    def __init__(
        self,
        input_size: int | Sequence[int],
        num_masking_patches: int | None = None,
        min_num_patches: int = 4,
        max_num_patches: float | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        exact: bool = True,
    ) -> None:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.height, self.width = (int(s) for s in input_size)
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches or 0
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        if self.max_num_patches is None:
            self.max_num_patches = self.num_patches
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.exact = exact

    def __repr__(self) -> str:
        lo, hi = (math.exp(a) for a in self.log_aspect_ratio)
        return (
            f"{type(self).__name__}(grid=({self.height}, {self.width}), blocks of {self.min_num_patches}"
            f"-{self.max_num_patches} patches, aspect {lo:.3f}-{hi:.3f})"
        )

    def get_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def add_block(self, mask: np.ndarray, max_new_patches: float, rng: random.Random | None = None) -> int:
        """Try (up to 10 times) to mask one more rectangle adding ``1..max_new_patches`` new patches.

        Args:
            mask: ``(H, W)`` bool array, modified in place.
            max_new_patches: upper bound on newly masked patches.
            rng: random source (default: the :mod:`random` module).

        Returns:
            Number of newly masked patches (0 if every attempt failed).
        """
        rng = rng or random
        for _ in range(10):
            target_area = rng.uniform(self.min_num_patches, max_new_patches)
            aspect_ratio = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                block = mask[top : top + h, left : left + w]
                new_patches = h * w - int(block.sum())
                if 0 < new_patches <= max_new_patches:
                    block[...] = True
                    return new_patches
        return 0

    def __call__(self, num_masking_patches: int | None = None, rng: random.Random | None = None) -> Tensor:
        """A block mask with ``num_masking_patches`` patches (at most that many if not ``exact``).

        Blocks are added until the count is reached or a block cannot be placed. In DINOv2 the mask
        is then left short (by a few patches, in about 8% of masks on a 16 x 16 grid); with
        ``exact`` (the default) the remaining patches are grown one by one next to the mask.

        Returns:
            ``(H, W)`` bool tensor, ``True`` = masked.
        """
        if num_masking_patches is None:
            num_masking_patches = self.num_masking_patches
        num_masking_patches = min(int(num_masking_patches), self.num_patches)
        mask = np.zeros(self.get_shape(), dtype=bool)
        count = 0
        while count < num_masking_patches:
            added = self.add_block(mask, min(num_masking_patches - count, self.max_num_patches), rng)
            if added == 0:
                break
            count += added
        if self.exact:
            self._grow(mask, num_masking_patches - count, rng or random)
        return torch.from_numpy(mask)

    @staticmethod
    def _grow(mask: np.ndarray, n_patches: int, rng: random.Random) -> None:
        """Mask ``n_patches`` more patches, each 4-adjacent to the mask (anywhere if it is empty)."""
        for _ in range(n_patches):
            border = np.zeros_like(mask)
            border[1:] |= mask[:-1]
            border[:-1] |= mask[1:]
            border[:, 1:] |= mask[:, :-1]
            border[:, :-1] |= mask[:, 1:]
            candidates = np.flatnonzero(border & ~mask) if mask.any() else np.flatnonzero(~mask)
            mask.flat[candidates[rng.randrange(len(candidates))]] = True


def sample_ibot_masks(
    n_images: int,
    mask_generator: MaskingGenerator,
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
    mask_probability: float = 0.5,
    rng: random.Random | None = None,
) -> dict[str, Tensor | int]:
    """iBOT masks for the global crops of a batch, as DINOv2's collate builds them.

    ``int(n_images * mask_probability)`` images are masked; the ``i``-th of ``n`` masked images gets a
    ratio drawn uniformly in the ``i``-th of ``n`` equal sub-intervals of ``mask_ratio_min_max``, and
    ``int(N * ratio)`` patches (``N`` patches per image), kept within
    ``[ceil(N * min), floor(N * max)]``. Masks are then shuffled over the batch.

    Args:
        n_images: number of global crops in the batch (``n_global_crops * B``).
        mask_generator: block mask generator on the crops' patch grid.
        mask_ratio_min_max: range of masked fractions of the ``N`` patches.
        mask_probability: fraction of images that are masked.
        rng: random source (default: the :mod:`random` module).

    Returns:
        dict with

        * ``masks``: ``(n_images, N)`` bool, ``True`` = masked patch (row-major patch order);
        * ``mask_indices``: ``(M,)`` int64 indices of the masked patches in ``masks.flatten()``;
        * ``masks_weight``: ``(M,)`` float32, ``1 / n_masked`` of each patch's image;
        * ``n_masked_patches``: ``(1,)`` int64 tensor holding ``M``;
        * ``upperbound``: int, an upper bound of ``M`` for this sampling (for fixed-size buffers).
    """
    rng = rng or random
    ratio_min, ratio_max = mask_ratio_min_max
    if not 0.0 <= ratio_min <= ratio_max <= 1.0:
        raise ValueError(f"mask_ratio_min_max must satisfy 0 <= min <= max <= 1, got {mask_ratio_min_max}")
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"mask_probability must be in [0, 1], got {mask_probability}")
    n_patches = mask_generator.num_patches
    n_masked_images = int(n_images * mask_probability)
    bounds = np.linspace(ratio_min, ratio_max, n_masked_images + 1)
    masks: list[Tensor] = []
    upperbound = 0
    # DINOv2 floors N * ratio, which can fall one patch below the range; clamp into it
    fewest, most = math.ceil(n_patches * ratio_min - 1e-9), math.floor(n_patches * ratio_max + 1e-9)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        target = min(max(int(n_patches * rng.uniform(lo, hi)), fewest), most)
        masks.append(mask_generator(target, rng=rng))
        upperbound += max(int(n_patches * hi), target)
    masks += [mask_generator(0, rng=rng) for _ in range(n_images - n_masked_images)]
    rng.shuffle(masks)

    flat_masks = torch.stack(masks).flatten(1) if masks else torch.zeros(0, n_patches, dtype=torch.bool)
    mask_indices = flat_masks.flatten().nonzero().flatten()
    n_per_image = flat_masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    masks_weight = (1.0 / n_per_image).expand(flat_masks.shape)[flat_masks]
    return {
        "masks": flat_masks,
        "mask_indices": mask_indices,
        "masks_weight": masks_weight,
        "n_masked_patches": torch.tensor([mask_indices.numel()], dtype=torch.long),
        "upperbound": upperbound,
    }
