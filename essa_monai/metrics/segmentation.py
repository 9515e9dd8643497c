"""Segmentation metrics on MONAI's metric classes, fed raw outputs (see :mod:`.inputs`).

* :class:`SegmentationDiceMetric` / :class:`SegmentationIoUMetric`: MONAI's ``DiceMetric`` / ``MeanIoU``
  (per image and class; nan where a class is absent from the ground truth and ``ignore_empty``; MONAI's
  ``do_metric_reduction`` ignores the nans).
* :class:`ThresholdedJaccardMetric`: ISIC 2018 Task 1's score, the one written here.
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric, DiceMetric, MeanIoU, compute_iou

from .inputs import segmentation_one_hot

__all__ = ["ISIC_JACCARD_THRESHOLD", "SegmentationDiceMetric", "SegmentationIoUMetric", "ThresholdedJaccardMetric"]

#: ISIC 2018 Task 1: per-image Jaccard indices below this value count as 0
ISIC_JACCARD_THRESHOLD = 0.65


class SegmentationDiceMetric(DiceMetric):
    """MONAI's ``DiceMetric`` on raw outputs: (B, K, *S) scores or a (B, 1, *S) foreground map
    (``> pred_threshold``) against a label map or one-hot ``y``. Other arguments: ``DiceMetric``'s."""

    def __init__(self, *args, pred_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pred_threshold = pred_threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super()._compute_tensor(*segmentation_one_hot(y_pred, y, self.pred_threshold))


class SegmentationIoUMetric(MeanIoU):
    """MONAI's ``MeanIoU`` on raw outputs, as :class:`SegmentationDiceMetric`."""

    def __init__(self, *args, pred_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pred_threshold = pred_threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super()._compute_tensor(*segmentation_one_hot(y_pred, y, self.pred_threshold))


class ThresholdedJaccardMetric(CumulativeIterationMetric):
    """ISIC 2018 Task 1's score: the per-image Jaccard index of the lesion (any class > 0) masks, values
    below ``threshold`` set to 0, averaged over images. Two empty masks score 1 (the official scorer's
    "perfect answer"); an empty ground truth with a predicted lesion scores 0.

    Example: two images with Jaccard 0.8 and 0.5 score ``(0.8 + 0) / 2 = 0.4``.

    Calling it on a batch returns the (B, 1) thresholded per-image values; :meth:`aggregate` returns their
    mean over everything seen (float; MONAI's buffers, gathered across processes).
    """

    def __init__(self, threshold: float = ISIC_JACCARD_THRESHOLD, pred_threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.pred_threshold = pred_threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pred, true = segmentation_one_hot(y_pred, y, self.pred_threshold)

        def lesion(one_hot: torch.Tensor) -> torch.Tensor:  # (B, 2, *S): background, lesion
            foreground = one_hot[:, 1:].amax(dim=1, keepdim=True)
            return torch.cat([1 - foreground, foreground], dim=1)

        jaccard = compute_iou(lesion(pred.double()), lesion(true.double()), include_background=False, ignore_empty=False)
        return torch.where(jaccard < self.threshold, torch.zeros_like(jaccard), jaccard)

    def aggregate(self) -> float:  # type: ignore[override]
        values = self.get_buffer()
        if not isinstance(values, torch.Tensor) or values.numel() == 0:
            raise ValueError("ThresholdedJaccardMetric: no images seen yet")
        return float(values.double().mean())
