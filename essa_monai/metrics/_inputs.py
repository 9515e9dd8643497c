"""Input conventions shared by the metric functions and the Ignite metrics.

Every metric accepts ``y_pred`` and ``y`` either as batched tensors (batch first) or as lists of
per-sample tensors (what MONAI's ``SupervisedEvaluator(decollate=True)`` and
``from_engine(["pred", "label"])`` give). MONAI ``MetaTensor`` inputs are treated as plain tensors.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch

TensorOrList = Union[torch.Tensor, Sequence[Any]]


def plain(x: Any) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MONAI ``MetaTensor`` metadata dropped; numbers/arrays converted)."""
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(x)


def is_sample_list(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def as_batch(x: TensorOrList, what: str = "input") -> torch.Tensor:
    """A batched tensor, or a list of per-sample tensors/numbers stacked along a new dim 0."""
    if not is_sample_list(x):
        return plain(x)
    if len(x) == 0:
        raise ValueError(f"{what} is an empty list")
    items = [plain(v) for v in x]
    try:
        return torch.stack(items)
    except RuntimeError as err:
        shapes = sorted({tuple(v.shape) for v in items})
        raise ValueError(f"per-sample {what} tensors have different shapes {shapes[:4]}: cannot batch them") from err


def integer_labels(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` as ``long`` class indices; raises if it holds non-integer or negative values."""
    if t.is_floating_point():
        if not torch.all(t == t.round()):
            raise ValueError(
                f"{what} must hold integer class indices here, got non-integer values (e.g. "
                f"{t[t != t.round()].flatten()[:3].tolist()}); pass (N, C) scores instead"
            )
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{what} holds negative class indices (min {int(t.min())})")
    return t


def class_indices(x: TensorOrList, what: str) -> torch.Tensor:
    """(N,) ``long`` class indices from (N, C) scores/one-hot (argmax over C > 1) or (N,)/(N, 1) indices."""
    x = as_batch(x, what)
    if x.ndim == 2 and x.shape[1] > 1:
        return x.argmax(dim=1)
    if x.ndim == 2:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{what} must be (N, C) scores/one-hot or (N,) class indices, got shape {tuple(x.shape)}")
    return integer_labels(x, what)


def class_scores(x: TensorOrList, what: str = "y_pred") -> torch.Tensor:
    """(N, C) float64 scores; a (N,) tensor becomes (N, 1)."""
    x = as_batch(x, what)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{what} must be (N, C) scores, got shape {tuple(x.shape)}")
    return x.to(torch.float64)
