"""Unlabeled images -> multi-crop batches for SSA, reproducible across resumes and DDP ranks."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist
from monai.data import CacheDataset, DataLoader, Dataset, DistributedSampler
from monai.transforms import Compose

from ..data import LoadImage2Dd
from ..ssl import MultiCropCollator, MultiCropd

__all__ = ["ssa_transforms", "ssa_data_loader"]


def ssa_transforms(
    global_crops_size: int = 224,
    local_crops_size: int = 98,
    local_crops_number: int = 8,
    global_crops_scale: Sequence[float] = (0.32, 1.0),
    local_crops_scale: Sequence[float] = (0.05, 0.32),
    image_key: str = "image",
) -> Compose:
    """``LoadImage2Dd`` (any photo/DICOM/NIfTI -> (3, H, W) in [0, 1]) then DINOv2 multi-crop
    (``global_crops``: 2 x (3, G, G), ``local_crops``: N x (3, L, L), normalised)."""
    return Compose(
        [
            LoadImage2Dd(keys=image_key),
            MultiCropd(
                keys=image_key,
                global_crops_size=global_crops_size,
                local_crops_size=local_crops_size,
                local_crops_number=local_crops_number,
                global_crops_scale=tuple(global_crops_scale),
                local_crops_scale=tuple(local_crops_scale),
            ),
        ]
    )


def ssa_data_loader(
    datalist: Sequence[dict[str, Any]],
    transform: Compose,
    batch_size: int = 8,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    cache_rate: float = 0.0,
    mask_ratio_min_max: Sequence[float] = (0.1, 0.5),
    mask_probability: float = 0.5,
) -> DataLoader:
    """A ``DataLoader`` of :class:`~essa_monai.ssl.MultiCropCollator` batches (with iBOT masks).

    Shuffling uses a :class:`monai.data.DistributedSampler` (one replica when not distributed), whose
    order depends only on ``seed`` and the epoch (MONAI's workflows call ``set_epoch``), and the loader
    owns its generator, so creating an iterator draws nothing from torch's global generator. Together
    with :class:`~essa_monai.ssa.BatchSeedHandler` this makes a resumed run repeat the uninterrupted one.
    ``cache_rate > 0`` caches decoded images (the crops stay random). Incomplete last batches are dropped.
    """
    if len(datalist) < batch_size:
        raise ValueError(f"SSA needs at least batch_size={batch_size} images, got {len(datalist)}")
    dataset = (
        CacheDataset(datalist, transform, cache_rate=cache_rate, progress=False)
        if cache_rate > 0
        else Dataset(datalist, transform)
    )
    distributed = dist.is_available() and dist.is_initialized()
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist.get_world_size() if distributed else 1,
        rank=dist.get_rank() if distributed else 0,
        shuffle=shuffle,
        seed=seed,
        even_divisible=True,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=MultiCropCollator(
            with_masks=True, mask_ratio_min_max=tuple(mask_ratio_min_max), mask_probability=mask_probability
        ),
    )
