"""iBOT block masks: rectangle blocks, exact counts, and DINOv2's per-batch ratio sampling."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from essa_monai.ssl import MaskingGenerator, sample_ibot_masks

GRID = 16  # 224 px global crops / 14 px patches
N_PATCHES = GRID * GRID


def _n_components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a 2D bool mask."""
    height, width = mask.shape
    seen = torch.zeros_like(mask)
    count = 0
    for i in range(height):
        for j in range(width):
            if not mask[i, j] or seen[i, j]:
                continue
            count += 1
            stack = [(i, j)]
            seen[i, j] = True
            while stack:
                a, b = stack.pop()
                for x, y in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                    if 0 <= x < height and 0 <= y < width and mask[x, y] and not seen[x, y]:
                        seen[x, y] = True
                        stack.append((x, y))
    return count


def test_one_block_is_a_filled_rectangle_within_area_and_aspect_limits():
    generator = MaskingGenerator(GRID, max_num_patches=N_PATCHES // 2)
    rng = random.Random(0)
    for _ in range(200):
        mask = np.zeros((GRID, GRID), dtype=bool)
        added = generator.add_block(mask, max_new_patches=40, rng=rng)
        rows, cols = np.nonzero(mask)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert added == mask.sum() == h * w  # the masked set is exactly its bounding box
        assert 1 <= added <= 40
        # aspect ratio drawn in [0.3, 1/0.3] before rounding h and w to whole patches
        assert 0.3 * w - 1 <= h <= w / 0.3 + 1


def test_block_masks_have_few_connected_components_unlike_scattered_masks():
    generator = MaskingGenerator(GRID, max_num_patches=N_PATCHES // 2)
    rng = random.Random(1)
    gen = torch.Generator().manual_seed(1)
    block_ratio, scatter_ratio = [], []
    for _ in range(60):
        n = rng.randint(26, 128)
        block_ratio.append(_n_components(generator(n, rng=rng)) / n)
        scattered = torch.zeros(N_PATCHES, dtype=torch.bool)
        scattered[torch.randperm(N_PATCHES, generator=gen)[:n]] = True
        scatter_ratio.append(_n_components(scattered.view(GRID, GRID)) / n)
    # blocks hold >= 4 patches each, so components are few (~0.04 per patch); scattered patches ~0.45
    assert max(block_ratio) <= 0.25
    assert np.mean(block_ratio) < 0.1 < 0.3 < np.mean(scatter_ratio)


@pytest.mark.parametrize("grid", [4, 8, 16])
def test_masking_generator_masks_exactly_the_requested_count(grid):
    generator = MaskingGenerator(grid, max_num_patches=grid * grid / 2)
    rng = random.Random(2)
    for target in range(0, grid * grid // 2 + 1):
        mask = generator(target, rng=rng)
        assert mask.shape == (grid, grid) and mask.dtype == torch.bool
        assert int(mask.sum()) == target


def test_dinov2_mode_never_exceeds_the_requested_count():
    generator = MaskingGenerator(GRID, max_num_patches=N_PATCHES // 2, exact=False)
    rng = random.Random(3)
    counts = [(target, int(generator(target, rng=rng).sum())) for target in rng.choices(range(26, 129), k=300)]
    assert all(n <= target for target, n in counts)
    assert sum(n == target for target, n in counts) > 0.8 * len(counts)


def test_sample_ibot_masks_masks_half_the_batch_with_ratios_in_range():
    generator = MaskingGenerator(GRID, max_num_patches=N_PATCHES // 2)
    rng = random.Random(4)
    n_images = 16  # 2 global crops x 8 images
    for _ in range(30):
        out = sample_ibot_masks(n_images, generator, mask_ratio_min_max=(0.1, 0.5), mask_probability=0.5, rng=rng)
        masks = out["masks"]
        assert masks.shape == (n_images, N_PATCHES) and masks.dtype == torch.bool
        counts = masks.sum(dim=1)
        masked = counts[counts > 0]
        assert len(masked) == n_images // 2
        ratios = masked.float() / N_PATCHES
        assert ratios.min() >= 0.1 and ratios.max() <= 0.5
        # one masked image per sub-interval of [0.1, 0.5]: the k-th smallest ratio is in the k-th
        bounds = np.linspace(0.1, 0.5, len(masked) + 1)
        sorted_counts = masked.sort().values.tolist()
        for k, n in enumerate(sorted_counts):
            assert max(math.ceil(0.1 * N_PATCHES), int(N_PATCHES * bounds[k])) <= n <= int(N_PATCHES * bounds[k + 1])


def test_sample_ibot_masks_returns_flat_indices_and_inverse_count_weights():
    generator = MaskingGenerator(4, max_num_patches=8)
    out = sample_ibot_masks(6, generator, mask_ratio_min_max=(0.25, 0.5), mask_probability=0.5, rng=random.Random(5))
    masks = out["masks"]
    torch.testing.assert_close(out["mask_indices"], masks.flatten().nonzero().flatten())
    n_masked = int(masks.sum())
    assert out["n_masked_patches"].tolist() == [n_masked]
    assert out["upperbound"] >= n_masked
    image_of_patch = out["mask_indices"] // 16
    expected_weights = 1.0 / masks.sum(dim=1)[image_of_patch].float()
    torch.testing.assert_close(out["masks_weight"], expected_weights)
    # every masked image's weights sum to 1
    assert out["masks_weight"].sum().item() == pytest.approx(3.0)


def test_sample_ibot_masks_validates_ratios():
    generator = MaskingGenerator(4)
    with pytest.raises(ValueError, match="mask_ratio_min_max"):
        sample_ibot_masks(4, generator, mask_ratio_min_max=(0.5, 0.1))
    with pytest.raises(ValueError, match="mask_probability"):
        sample_ibot_masks(4, generator, mask_probability=1.5)


def test_masked_images_are_shuffled_over_the_batch():
    generator = MaskingGenerator(8, max_num_patches=32)
    rng = random.Random(6)
    masked_positions = torch.stack(
        [sample_ibot_masks(8, generator, rng=rng)["masks"].any(dim=1) for _ in range(40)]
    )  # (40 batches, 8 images)
    assert torch.all(masked_positions.sum(dim=1) == 4)
    # every position is sometimes masked and sometimes not (not always the first half)
    assert torch.all((masked_positions.sum(dim=0) > 0) & (masked_positions.sum(dim=0) < 40))
