"""Segmentation metrics as plain functions on tensors: Dice, IoU, and ISIC 2018 task 1's thresholded Jaccard.

Input formats (B images, K classes including background, any number of spatial dims ``*S``; batched
tensors or lists of B per-sample tensors, which may differ in spatial size):

* ``y_pred``: (B, K, *S) with K >= 2: logits, probabilities or one-hot (the class is the argmax over
  K); or (B, 1, *S): a foreground map, foreground where ``y_pred > pred_threshold`` (0.5 suits
  probabilities and binary masks; pass 0.0 for logits). Per-sample: (K, *S).
* ``y``: (B, 1, *S) or (B, *S) label map, or (B, K, *S) one-hot. Per-sample: (1, *S) or (K, *S).
  For a binary problem (K = 2 or a one-channel ``y_pred``) a label map is foreground where
  ``y > 0.5``, so 0/1 and 0/255 masks both work; otherwise labels must be integers in [0, K).

Dice and IoU are MONAI's ``compute_dice`` / ``compute_iou`` on one-hot maps (per image and class; nan
where the ground truth of a class is empty and ``ignore_empty``). Reductions ignore nan, as MONAI's
``do_metric_reduction``, except that nothing valid gives nan rather than 0:

* ``"mean"``: mean over classes per image, then over the images that have a value (MONAI's
  ``"mean"``), a float;
* ``"mean_batch"``: per class, mean over images, a (K',) tensor (K' = K - 1 without background);
* ``"none"``: the (B, K') scores.
"""

from __future__ import annotations

from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice, compute_iou

from ._inputs import TensorOrList, integer_labels, is_sample_list, plain

__all__ = [
    "ISIC_JACCARD_THRESHOLD",
    "dice",
    "iou",
    "jaccard_index",
    "reduce_scores",
    "segmentation_labels",
    "target_labels",
    "thresholded_jaccard",
]

#: ISIC 2018 task 1: per-image Jaccard indices below this value count as 0.
ISIC_JACCARD_THRESHOLD = 0.65

Reduction = Literal["mean", "mean_batch", "none"]


def sample_pairs(y_pred: TensorOrList, y: TensorOrList) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batched (y_pred, y) pairs: the tensors themselves, or one batch of 1 per list element."""
    if is_sample_list(y_pred) or is_sample_list(y):
        if not (is_sample_list(y_pred) and is_sample_list(y)) or len(y_pred) != len(y):
            raise ValueError("y_pred and y must both be tensors or both be lists of the same length")
        for p, t in zip(y_pred, y):
            yield plain(p)[None], plain(t)[None]
    else:
        yield plain(y_pred), plain(y)


def segmentation_labels(y_pred: torch.Tensor, pred_threshold: float = 0.5) -> torch.Tensor:
    """(B, K, *S) scores/one-hot -> (B, *S) ``long`` argmax labels; (B, 1, *S) -> foreground {0, 1}."""
    if y_pred.ndim < 3:
        raise ValueError(f"y_pred must be (B, K, *spatial), got shape {tuple(y_pred.shape)}")
    if y_pred.shape[1] == 1:
        return (y_pred[:, 0] > pred_threshold).long()
    return y_pred.argmax(dim=1)


def target_labels(y: torch.Tensor, spatial_shape: torch.Size | tuple[int, ...], num_classes: int) -> torch.Tensor:
    """(B, *S) ``long`` labels from a (B, 1, *S) / (B, *S) label map or a (B, K, *S) one-hot ``y``.

    With ``num_classes == 2`` a label map is binarised as ``y > 0.5``.
    """
    spatial_shape = tuple(spatial_shape)
    n = len(spatial_shape)
    if y.ndim == n + 2:
        if y.shape[1] == 1:
            y = y[:, 0]
        elif num_classes == 2:
            return (y.argmax(dim=1) > 0).long()  # one-hot; any class > 0 is foreground
        elif y.shape[1] == num_classes:
            return y.argmax(dim=1)  # one-hot
        else:
            raise ValueError(f"y has {y.shape[1]} channels: expected 1 (label map) or {num_classes} (one-hot)")
    if y.ndim != n + 1:
        raise ValueError(f"y must be (B, 1, *S), (B, *S) or (B, K, *S) with S = {spatial_shape}, got {tuple(y.shape)}")
    if tuple(y.shape[1:]) != spatial_shape:
        raise ValueError(f"y spatial size {tuple(y.shape[1:])} differs from y_pred's {spatial_shape}")
    if num_classes == 2:
        return (y > 0.5).long()
    labels = integer_labels(y, "y")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} in y is out of range for {num_classes} classes")
    return labels


def _one_hot_pair(y_pred: torch.Tensor, y: torch.Tensor, pred_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = max(int(y_pred.shape[1]), 2)
    pred = segmentation_labels(y_pred, pred_threshold)
    true = target_labels(y.to(pred.device), pred.shape[1:], num_classes)

    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, num_classes).movedim(-1, 1).float()

    return one_hot(pred), one_hot(true)


def _class_scores(fn: Callable[..., torch.Tensor], y_pred, y, include_background, ignore_empty, pred_threshold):
    scores = []
    for p, t in sample_pairs(y_pred, y):
        onehot_pred, onehot_true = _one_hot_pair(p, t, pred_threshold)
        scores.append(fn(onehot_pred, onehot_true, include_background=include_background, ignore_empty=ignore_empty))
    return torch.cat(scores).to(torch.float64)


def reduce_scores(scores: torch.Tensor, reduction: Reduction = "mean") -> float | torch.Tensor:
    """Reduce (B, K') per-image, per-class scores ignoring nan (see the module docstring)."""
    if reduction == "none":
        return scores
    valid = ~torch.isnan(scores)
    filled = torch.where(valid, scores, torch.zeros_like(scores))
    if reduction == "mean_batch":
        count = valid.sum(dim=0)
        return torch.where(count > 0, filled.sum(dim=0) / count.clamp(min=1), torch.full_like(filled[0], float("nan")))
    if reduction == "mean":
        per_class_count = valid.sum(dim=1)
        has_value = per_class_count > 0
        if not has_value.any():
            return float("nan")
        per_image = filled.sum(dim=1)[has_value] / per_class_count[has_value]
        return float(per_image.mean())
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean', 'mean_batch' or 'none'")


def dice(
    y_pred: TensorOrList,
    y: TensorOrList,
    include_background: bool = False,
    ignore_empty: bool = True,
    reduction: Reduction = "mean",
    pred_threshold: float = 0.5,
) -> float | torch.Tensor:
    """Dice score ``2 |P & G| / (|P| + |G|)`` per image and class (MONAI's ``compute_dice``), reduced.

    Args:
        y_pred, y: see the module docstring.
        include_background: also score class 0 (default: foreground classes only).
        ignore_empty: nan (ignored) where a class is absent from the ground truth; else 1 if also absent
            from the prediction, 0 otherwise.
        reduction: ``"mean"`` (float), ``"mean_batch"`` ((K',) per class) or ``"none"`` ((B, K')).
        pred_threshold: foreground threshold of a one-channel ``y_pred``.
    """
    return reduce_scores(
        _class_scores(compute_dice, y_pred, y, include_background, ignore_empty, pred_threshold), reduction
    )


def iou(
    y_pred: TensorOrList,
    y: TensorOrList,
    include_background: bool = False,
    ignore_empty: bool = True,
    reduction: Reduction = "mean",
    pred_threshold: float = 0.5,
) -> float | torch.Tensor:
    """Intersection over union (Jaccard index) ``|P & G| / |P | G|`` per image and class (MONAI's
    ``compute_iou``), reduced. Arguments as :func:`dice`."""
    return reduce_scores(
        _class_scores(compute_iou, y_pred, y, include_background, ignore_empty, pred_threshold), reduction
    )


def jaccard_index(
    y_pred: TensorOrList, y: TensorOrList, pred_threshold: float = 0.5, empty_score: float = 1.0
) -> torch.Tensor:
    """Per-image Jaccard index of the binary foreground masks (any class > 0 is foreground).

    Args:
        y_pred, y: see the module docstring.
        pred_threshold: foreground threshold of a one-channel ``y_pred``.
        empty_score: value when both masks are empty (union 0); 1.0 = perfect agreement.

    Returns:
        (B,) float64 values in [0, 1].
    """
    values = []
    for p, t in sample_pairs(y_pred, y):
        pred = segmentation_labels(p, pred_threshold) > 0
        true = target_labels(t.to(pred.device), pred.shape[1:], 2) > 0
        dims = tuple(range(1, pred.ndim))
        intersection = (pred & true).sum(dim=dims).to(torch.float64)
        union = (pred | true).sum(dim=dims).to(torch.float64)
        values.append(torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, empty_score)))
    return torch.cat(values)


def thresholded_jaccard(
    y_pred: TensorOrList,
    y: TensorOrList,
    threshold: float = ISIC_JACCARD_THRESHOLD,
    pred_threshold: float = 0.5,
    reduction: Literal["mean", "none"] = "mean",
) -> float | torch.Tensor:
    """ISIC 2018 task 1's score: per-image Jaccard index, values below ``threshold`` (0.65) set to 0,
    averaged over images.

    Example: two images with Jaccard 0.8 and 0.5 score ``(0.8 + 0) / 2 = 0.4``.

    Args:
        y_pred, y: see the module docstring (binary: a (B, 2, H, W) or (B, 1, H, W) ``y_pred``).
        threshold: per-image values ``< threshold`` count as 0.
        pred_threshold: foreground threshold of a one-channel ``y_pred``.
        reduction: ``"mean"`` (float) or ``"none"`` ((B,) thresholded per-image values).
    """
    values = jaccard_index(y_pred, y, pred_threshold)
    values = torch.where(values < threshold, torch.zeros_like(values), values)
    if reduction == "none":
        return values
    if reduction == "mean":
        return float(values.mean())
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
