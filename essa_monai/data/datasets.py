"""Thin wrappers that turn a datalist and a transform into a MONAI dataset."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from monai.data import CacheDataset, Dataset

__all__ = ["build_dataset"]


def build_dataset(
    datalist: Sequence[dict[str, Any]],
    transform: Callable | None = None,
    *,
    cache_rate: float = 0.0,
    num_workers: int = 0,
) -> Dataset:
    """``monai.data.Dataset`` over ``datalist``, or a ``CacheDataset`` (deterministic transforms
    cached in memory, e.g. loading and resizing) when ``cache_rate > 0``."""
    if cache_rate > 0:
        return CacheDataset(list(datalist), transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    return Dataset(list(datalist), transform)
