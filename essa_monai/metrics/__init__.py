"""Metrics for supervised adaptation: plain functions on tensors and Ignite metrics for MONAI engines.

Classification (:mod:`.classification`): :func:`accuracy`, :func:`balanced_accuracy` (ISIC 2018
task 3), :func:`quadratic_weighted_kappa`, :func:`multilabel_auroc` (ChestX-ray14),
:func:`multiclass_auroc` (one-vs-rest). Segmentation (:mod:`.segmentation`): :func:`dice`,
:func:`iou`, :func:`thresholded_jaccard` (ISIC 2018 task 1). Each has an Ignite ``Metric`` twin in
:mod:`.handlers` (:class:`Accuracy`, :class:`BalancedAccuracy`, :class:`QuadraticKappa`,
:class:`MultiLabelAUROC`, :class:`MultiClassAUROC`, :class:`Dice`, :class:`IoU`,
:class:`ThresholdedJaccard`) usable as ``key_val_metric`` / ``additional_metrics`` of MONAI's
``SupervisedEvaluator`` with ``output_transform=from_engine(["pred", "label"])``, batched or decollated.
"""

from __future__ import annotations

from .classification import (
    accuracy,
    accuracy_from_confusion,
    balanced_accuracy,
    balanced_accuracy_from_confusion,
    confusion_matrix,
    multiclass_auroc,
    multilabel_auroc,
    per_class_auroc,
    quadratic_weighted_kappa,
    quadratic_weighted_kappa_from_confusion,
)
from .handlers import (
    Accuracy,
    BalancedAccuracy,
    Dice,
    IoU,
    MultiClassAUROC,
    MultiLabelAUROC,
    QuadraticKappa,
    ThresholdedJaccard,
)
from .segmentation import (
    ISIC_JACCARD_THRESHOLD,
    dice,
    iou,
    jaccard_index,
    reduce_scores,
    segmentation_labels,
    target_labels,
    thresholded_jaccard,
)

__all__ = [
    "accuracy",
    "accuracy_from_confusion",
    "balanced_accuracy",
    "balanced_accuracy_from_confusion",
    "confusion_matrix",
    "multiclass_auroc",
    "multilabel_auroc",
    "per_class_auroc",
    "quadratic_weighted_kappa",
    "quadratic_weighted_kappa_from_confusion",
    "Accuracy",
    "BalancedAccuracy",
    "Dice",
    "IoU",
    "MultiClassAUROC",
    "MultiLabelAUROC",
    "QuadraticKappa",
    "ThresholdedJaccard",
    "ISIC_JACCARD_THRESHOLD",
    "dice",
    "iou",
    "jaccard_index",
    "reduce_scores",
    "segmentation_labels",
    "target_labels",
    "thresholded_jaccard",
]
