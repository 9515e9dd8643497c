"""The metrics as Ignite handlers for MONAI's engines: MONAI's ``IgniteMetricHandler`` around each metric
class (as ``monai.handlers.MeanDice`` wraps ``DiceMetric``), usable as ``key_val_metric`` /
``additional_metrics`` of ``SupervisedEvaluator``::

    key_val_metric={"val_bacc": BalancedAccuracy(num_classes=7, output_transform=from_engine(["pred", "label"]))}

``pred`` is the raw network output (logits or probabilities) and ``label`` the dataset's label, batched or
decollated (see :mod:`essa_monai.metrics.inputs`). The value is a float in ``engine.state.metrics[name]``;
the AUROC handlers with ``per_class_names`` also write ``engine.state.metrics[f"{name}_{class_name}"]``
(nan for a class whose labels hold one value). MONAI's buffers are gathered across processes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from monai.handlers import IgniteMetricHandler

from .classification import BalancedAccuracyMetric, ClassAUROCMetric, TopOneAccuracyMetric
from .segmentation import ISIC_JACCARD_THRESHOLD, SegmentationDiceMetric, SegmentationIoUMetric, ThresholdedJaccardMetric

__all__ = ["Accuracy", "BalancedAccuracy", "MultiClassAUROC", "MultiLabelAUROC", "Dice", "IoU", "ThresholdedJaccard"]


def _identity(x: Any) -> Any:
    return x


class Dice(IgniteMetricHandler):
    """Mean Dice over images and foreground classes (:class:`~.segmentation.SegmentationDiceMetric`,
    MONAI's ``"mean"`` reduction).

    Args:
        include_background: also score class 0. ignore_empty: skip a class absent from an image's ground truth.
        pred_threshold: foreground threshold of a one-channel ``y_pred``.
        output_transform, save_details: as ``monai.handlers.MeanDice``.
    """

    def __init__(self, include_background: bool = False, ignore_empty: bool = True, pred_threshold: float = 0.5,
                 output_transform: Callable = _identity, save_details: bool = True) -> None:
        metric = SegmentationDiceMetric(include_background=include_background, ignore_empty=ignore_empty,
                                        pred_threshold=pred_threshold)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class IoU(IgniteMetricHandler):
    """Mean intersection over union (:class:`~.segmentation.SegmentationIoUMetric`). Arguments as :class:`Dice`."""

    def __init__(self, include_background: bool = False, ignore_empty: bool = True, pred_threshold: float = 0.5,
                 output_transform: Callable = _identity, save_details: bool = True) -> None:
        metric = SegmentationIoUMetric(include_background=include_background, ignore_empty=ignore_empty,
                                       pred_threshold=pred_threshold)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class ThresholdedJaccard(IgniteMetricHandler):
    """ISIC 2018 Task 1's thresholded Jaccard (:class:`~.segmentation.ThresholdedJaccardMetric`).

    Args:
        threshold: per-image cut-off (0.65 in ISIC 2018). pred_threshold: as :class:`Dice`.
        output_transform, save_details: as ``monai.handlers.MeanDice`` (details: the per-image values).
    """

    def __init__(self, threshold: float = ISIC_JACCARD_THRESHOLD, pred_threshold: float = 0.5,
                 output_transform: Callable = _identity, save_details: bool = True) -> None:
        metric = ThresholdedJaccardMetric(threshold=threshold, pred_threshold=pred_threshold)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class Accuracy(IgniteMetricHandler):
    """Top-1 accuracy (:class:`~.classification.TopOneAccuracyMetric`; a tied row is wrong).

    Args:
        num_classes: C, needed only when predictions are class indices. output_transform: as ``MeanDice``.
    """

    def __init__(self, num_classes: int | None = None, output_transform: Callable = _identity) -> None:
        super().__init__(metric_fn=TopOneAccuracyMetric(num_classes), output_transform=output_transform,
                         save_details=False)


class BalancedAccuracy(IgniteMetricHandler):
    """ISIC 2018 Task 3's balanced accuracy (:class:`~.classification.BalancedAccuracyMetric`). Arguments as
    :class:`Accuracy`."""

    def __init__(self, num_classes: int | None = None, output_transform: Callable = _identity) -> None:
        super().__init__(metric_fn=BalancedAccuracyMetric(num_classes), output_transform=output_transform,
                         save_details=False)


class _AUROC(IgniteMetricHandler):
    softmax = False

    def __init__(self, per_class_names: Sequence[str] | None = None, output_transform: Callable = _identity) -> None:
        self.per_class_names = None if per_class_names is None else [str(n) for n in per_class_names]
        super().__init__(metric_fn=ClassAUROCMetric(softmax=self.softmax), output_transform=output_transform,
                         save_details=False)

    def completed(self, engine, name: str) -> None:  # noqa: ANN001 (ignite Engine)
        super().completed(engine, name)
        if self.per_class_names is None:
            return
        per_class = self.metric_fn.per_class.tolist()
        if len(per_class) != len(self.per_class_names):
            raise ValueError(f"{name}: {len(self.per_class_names)} per_class_names for {len(per_class)} classes")
        for class_name, value in zip(self.per_class_names, per_class):
            engine.state.metrics[f"{name}_{class_name}"] = float(value)


class MultiLabelAUROC(_AUROC):
    """Mean AUROC over labels (e.g. ChestX-ray14's 14 findings): ``y_pred`` (N, C) logits or probabilities,
    ``y`` (N, C) multi-hot. Args: ``per_class_names`` (C names for the per-class entries),
    ``output_transform``."""


class MultiClassAUROC(_AUROC):
    """Mean one-vs-rest AUROC over classes: ``y_pred`` (N, C) logits (softmax applied), ``y`` class indices or
    one-hot. Arguments as :class:`MultiLabelAUROC`."""

    softmax = True
