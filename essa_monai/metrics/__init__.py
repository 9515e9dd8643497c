"""Metrics for supervised adaptation, on MONAI's metric classes and Ignite handlers.

MONAI computes Dice (``DiceMetric``), IoU (``MeanIoU``), accuracy (``ConfusionMatrixMetric``) and AUROC
(``ROCAUCMetric``); only ISIC 2018's two scores are written here: :class:`ThresholdedJaccardMetric`
(Task 1) and :class:`BalancedAccuracyMetric` (Task 3, tied rows undecided as the official scorer).
Every metric takes raw network outputs (:mod:`.inputs`). The handlers (:mod:`.handlers`) are what the
bundles use: :class:`ThresholdedJaccard`, :class:`Dice`, :class:`IoU`, :class:`BalancedAccuracy`,
:class:`Accuracy`, :class:`MultiClassAUROC`, :class:`MultiLabelAUROC`.

Outside an engine, use a metric class as any MONAI metric: ``m = BalancedAccuracyMetric(); m(logits, y);
m.aggregate()``.
"""

from __future__ import annotations

from .classification import BalancedAccuracyMetric, ClassAUROCMetric, TopOneAccuracyMetric
from .handlers import Accuracy, BalancedAccuracy, Dice, IoU, MultiClassAUROC, MultiLabelAUROC, ThresholdedJaccard
from .inputs import class_decisions, class_targets, segmentation_one_hot
from .segmentation import ISIC_JACCARD_THRESHOLD, SegmentationDiceMetric, SegmentationIoUMetric, ThresholdedJaccardMetric

__all__ = [
    "Accuracy", "BalancedAccuracy", "Dice", "IoU", "MultiClassAUROC", "MultiLabelAUROC", "ThresholdedJaccard",
    "BalancedAccuracyMetric", "ClassAUROCMetric", "TopOneAccuracyMetric",
    "ISIC_JACCARD_THRESHOLD", "SegmentationDiceMetric", "SegmentationIoUMetric", "ThresholdedJaccardMetric",
    "class_decisions", "class_targets", "segmentation_one_hot",
]
