"""Raw network outputs -> the binarised one-hot tensors MONAI's metrics compute on.

MONAI's metric classes expect ``AsDiscrete``-d one-hot maps; ours take what the network and the dataset
give (no post-transform needed) and convert them, batch first, inside ``_compute_tensor``, so batched
tensors and decollated per-sample lists (``SupervisedEvaluator(decollate=True)``) work alike.

Segmentation (B images, K classes including background, spatial dims ``*S``):

* ``y_pred``: (B, K >= 2, *S) logits, probabilities or one-hot (the class is the argmax over K); or
  (B, 1, *S) a foreground map, foreground where ``y_pred > pred_threshold``.
* ``y``: (B, 1, *S) or (B, *S) label map, or (B, K, *S) one-hot. In a binary problem (K = 2, or a
  one-channel ``y_pred``) a label map is foreground where ``y > 0.5``, so 0/1 and 0/255 masks both work;
  otherwise it must hold integer labels in [0, K).

Classification (N samples, C classes):

* ``y_pred``: (N, C) scores (logits or probabilities). The decision is the top-scoring class; a row whose
  top score is tied between classes is *undecided* and counts as wrong (no class predicted), as in the
  official ISIC 2018 Task 3 scorer (``isic-challenge-scoring``: tied rows get the label ``undecided``).
  Or (N,) / (N, 1) class indices, with ``num_classes``.
* ``y``: (N,) / (N, 1) class indices, or (N, C) one-hot / multi-hot {0, 1}.
"""

from __future__ import annotations

import torch
from monai.networks.utils import one_hot
from monai.utils import convert_to_tensor

__all__ = ["segmentation_one_hot", "class_decisions", "class_targets"]


def _plain(x: torch.Tensor) -> torch.Tensor:
    return convert_to_tensor(x, track_meta=False)


def _integer_labels(t: torch.Tensor, what: str, num_classes: int) -> torch.Tensor:
    if t.is_floating_point() and not torch.all(t == t.round()):
        raise ValueError(f"{what} must hold integer class indices, got e.g. {t[t != t.round()].flatten()[:3].tolist()}")
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"{what} holds class indices {int(t.min())}..{int(t.max())}, outside 0..{num_classes - 1}")
    return t


def segmentation_one_hot(
    y_pred: torch.Tensor, y: torch.Tensor, pred_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, *S) one-hot prediction and ground truth (float {0, 1}) from the formats in the module docstring."""
    y_pred, y = _plain(y_pred), _plain(y).to(y_pred.device)
    if y_pred.ndim < 3:
        raise ValueError(f"segmentation y_pred must be (B, K, *spatial), got shape {tuple(y_pred.shape)}")
    num_classes = max(int(y_pred.shape[1]), 2)
    pred = (y_pred > pred_threshold).long() if y_pred.shape[1] == 1 else y_pred.argmax(dim=1, keepdim=True)
    if y.ndim == y_pred.ndim - 1:
        y = y.unsqueeze(1)
    if y.ndim != y_pred.ndim or y.shape[2:] != y_pred.shape[2:]:
        raise ValueError(f"y {tuple(y.shape)} does not match y_pred {tuple(y_pred.shape)}: expected (B, 1 or K, *spatial)")
    if y.shape[1] == num_classes:
        true_one_hot = (y > 0.5).float()
    elif y.shape[1] == 1:
        true = (y > 0.5).long() if num_classes == 2 else _integer_labels(y, "y", num_classes)
        true_one_hot = one_hot(true, num_classes, dim=1)
    else:
        raise ValueError(f"y has {y.shape[1]} channels: expected 1 (label map) or {num_classes} (one-hot)")
    return one_hot(pred, num_classes, dim=1), true_one_hot


def class_decisions(y_pred: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(N, C) float one-hot decisions; a row whose top score is tied is all zeros (undecided)."""
    y_pred = _plain(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1:
        if num_classes is not None and y_pred.shape[1] != num_classes:
            raise ValueError(f"y_pred has {y_pred.shape[1]} class scores, num_classes is {num_classes}")
        top = y_pred == y_pred.max(dim=1, keepdim=True).values
        return (top & (top.sum(dim=1, keepdim=True) == 1)).float()
    if num_classes is None:
        raise ValueError(f"y_pred of shape {tuple(y_pred.shape)} holds class indices: give num_classes")
    if y_pred.ndim > 2 or (y_pred.ndim == 2 and y_pred.shape[1] != 1):
        raise ValueError(f"y_pred must be (N, C) scores or (N,) class indices, got shape {tuple(y_pred.shape)}")
    return one_hot(_integer_labels(y_pred.reshape(-1, 1), "y_pred", num_classes), num_classes, dim=1)


def class_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C) float {0, 1} targets from (N,) / (N, 1) class indices or (N, C) one-hot / multi-hot labels."""
    y = _plain(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        if not torch.all((y == 0) | (y == 1)):
            raise ValueError(f"(N, C) labels must be 0 or 1, got values {y.unique()[:6].tolist()}")
        return y.float()
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(f"y must be (N,) class indices or (N, {num_classes}) one-hot, got shape {tuple(y.shape)}")
    return one_hot(_integer_labels(y.reshape(-1, 1), "y", num_classes), num_classes, dim=1)
