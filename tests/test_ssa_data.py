"""SSA data: cached images keep random crops; the loader's order depends only on seed and epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from essa_monai.ssa import ssa_data_loader, ssa_transforms


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append({"image": str(path)})
    return paths


def test_cached_dataset_still_draws_new_crops_every_time(image_files):
    transform = ssa_transforms(global_crops_size=28, local_crops_size=14, local_crops_number=2)
    loader = ssa_data_loader(image_files, transform, batch_size=2, cache_rate=1.0, shuffle=False)
    first, second = next(iter(loader)), next(iter(loader))
    assert first["global_crops"].shape == (4, 3, 28, 28) and first["local_crops"].shape == (4, 3, 14, 14)
    assert first["masks"].shape == (4, 4) and first["masks"].dtype == torch.bool
    assert not torch.equal(first["global_crops"], second["global_crops"])  # crops are not cached


def test_loader_order_depends_on_seed_and_epoch_only(image_files):
    transform = ssa_transforms(global_crops_size=28, local_crops_size=14, local_crops_number=0)
    order = lambda loader: list(iter(loader.sampler))
    a, b = ssa_data_loader(image_files, transform, batch_size=2, seed=5), ssa_data_loader(image_files, transform, batch_size=2, seed=5)
    torch.manual_seed(123)  # the global generator must not matter
    assert order(a) == order(b)
    a.sampler.set_epoch(1)
    assert order(a) != order(b) and sorted(order(a)) == list(range(6))
    c = ssa_data_loader(image_files, transform, batch_size=2, seed=6)
    assert order(c) != order(b)


def test_too_few_images_for_a_batch_is_a_clear_error(image_files):
    with pytest.raises(ValueError, match="at least batch_size=8 images, got 6"):
        ssa_data_loader(image_files, ssa_transforms(28, 14, 2), batch_size=8)
