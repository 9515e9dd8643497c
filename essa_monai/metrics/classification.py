"""Classification metrics on MONAI's metric classes, fed raw outputs (see :mod:`.inputs`).

* :class:`TopOneAccuracyMetric`: MONAI's ``ConfusionMatrixMetric``, sensitivity TP / (TP + FN) over all
  samples and classes, i.e. the fraction of samples whose decision is their class.
* :class:`BalancedAccuracyMetric`: ISIC 2018 Task 3's score, the one written here: the mean per-class
  recall over the classes present in the ground truth, tied rows undecided (wrong).
* :class:`ClassAUROCMetric`: MONAI's ``ROCAUCMetric`` per class (ties count one half, as scikit-learn's
  ``roc_auc_score``); the macro average skips classes with a single label value.
"""

from __future__ import annotations

import torch
from monai.metrics import ConfusionMatrixMetric, ROCAUCMetric
from monai.utils import convert_to_tensor

from .inputs import class_decisions, class_targets

__all__ = ["TopOneAccuracyMetric", "BalancedAccuracyMetric", "ClassAUROCMetric"]


class _DecisionConfusion(ConfusionMatrixMetric):
    """MONAI's per-sample, per-class (TP, FP, TN, FN) of the decisions; ``aggregate`` gives the
    sensitivity TP / (TP + FN) under ``reduction``."""

    def __init__(self, num_classes: int | None, reduction: str) -> None:
        super().__init__(include_background=True, metric_name="sensitivity", reduction=reduction)
        self.num_classes = num_classes

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        decisions = class_decisions(y_pred, self.num_classes)
        return super()._compute_tensor(decisions, class_targets(y, decisions.shape[1]).to(decisions.device))


class TopOneAccuracyMetric(_DecisionConfusion):
    """Fraction of samples whose top-scoring class is their label (a tied row is wrong), in [0, 1].

    Args:
        num_classes: C; needed only when ``y_pred`` holds class indices rather than (N, C) scores.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__(num_classes, reduction="sum")  # TP and FN summed over samples and classes

    def aggregate(self) -> float:  # type: ignore[override]
        return float(super().aggregate()[0])


class BalancedAccuracyMetric(_DecisionConfusion):
    """ISIC 2018 Task 3's balanced multi-class accuracy, in [0, 1]: per-class recall TP / (TP + FN),
    averaged over the classes present in the ground truth (scikit-learn's ``balanced_accuracy_score``
    where no row is tied). A row whose top score is tied is undecided: a false negative of its class and
    nobody's true positive, as the official ``isic-challenge-scoring`` counts it.

    Args:
        num_classes: C; needed only when ``y_pred`` holds class indices rather than (N, C) scores.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__(num_classes, reduction="sum_batch")  # (C, 4) counts per class

    def aggregate(self) -> float:  # type: ignore[override]
        recall = super().aggregate()[0]  # (C,), nan for classes absent from the ground truth
        present = recall[~torch.isnan(recall)]
        return float(present.double().mean()) if present.numel() else float("nan")


class ClassAUROCMetric(ROCAUCMetric):
    """One-vs-rest ROC AUC per class (MONAI's ``ROCAUCMetric(average="none")``).

    ``y_pred``: (N, C) logits or probabilities; ``softmax=True`` applies a softmax over C first (multi-class
    logits: one-vs-rest AUROC on probabilities, scikit-learn's ``multi_class="ovr"``); multi-label scores
    need none (AUROC is rank-based and the sigmoid monotone). ``y``: (N,) class indices or (N, C) one-hot /
    multi-hot. :meth:`aggregate` returns the mean over the classes whose labels hold both values (MONAI warns
    about and returns nan for the others) and keeps the (C,) per-class values in ``self.per_class``.
    """

    def __init__(self, softmax: bool = False) -> None:
        super().__init__(average="none")
        self.softmax = softmax
        self.per_class: torch.Tensor | None = None

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor):  # type: ignore[override]
        scores = convert_to_tensor(y_pred, track_meta=False).float()
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise ValueError(f"AUROC needs (N, C >= 2) scores, got shape {tuple(scores.shape)}")
        if self.softmax:
            scores = scores.softmax(dim=1)
        return super()._compute_tensor(scores, class_targets(y, scores.shape[1]).to(scores.device))

    def aggregate(self) -> float:  # type: ignore[override]
        self.per_class = torch.tensor(super().aggregate(), dtype=torch.float64).reshape(-1)
        valid = self.per_class[~torch.isnan(self.per_class)]
        return float(valid.mean()) if valid.numel() else float("nan")
