"""Mapping raw intensities (HU, MR signal, stored values) to display intensities in ``[0, 1]``."""

from __future__ import annotations

import numpy as np

__all__ = ["scale_to_unit", "minmax_to_unit"]


def scale_to_unit(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip ``arr`` to ``[low, high]`` and map it linearly to ``[0, 1]`` (float32, same shape).

    ``low`` maps to 0 and ``high`` to 1; if ``high <= low`` the result is all zeros. NaNs become 0.
    """
    out = np.asarray(arr, dtype=np.float64)
    if not high > low:
        return np.zeros(out.shape, dtype=np.float32)
    out = (np.clip(out, low, high) - low) / (high - low)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def minmax_to_unit(arr: np.ndarray) -> np.ndarray:
    """Map the finite minimum of ``arr`` to 0 and its maximum to 1 (float32, same shape).

    A constant image becomes all zeros; NaNs become 0.
    """
    arr = np.asarray(arr)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    return scale_to_unit(arr, float(finite.min()), float(finite.max()))
