"""The metrics as Ignite ``Metric`` objects, for MONAI's ``SupervisedEvaluator`` (or any Ignite engine).

Each accumulates over an epoch what its function in :mod:`.classification` / :mod:`.segmentation`
needs (a confusion matrix, running sums, or all scores for AUROC), so the value after several batches
equals the function on all samples at once. Inputs are those of the functions: batched tensors, or
lists of per-sample tensors (``SupervisedEvaluator(decollate=True)``; Ignite then feeds each sample
as a batch of one)::

    from monai.engines import SupervisedEvaluator
    from monai.handlers import from_engine

    evaluator = SupervisedEvaluator(
        device, val_loader, model,
        key_val_metric={"val_bacc": BalancedAccuracy(output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "val_kappa": QuadraticKappa(output_transform=from_engine(["pred", "label"])),
            "val_auc": MultiClassAUROC(per_class_names=ISIC2018_TASK3_CLASSES,
                                       output_transform=from_engine(["pred", "label"])),
        },
    )

``pred`` is the raw network output (logits; no post-transform needed) and ``label`` the dataset's
label (class index, one-hot, multi-hot, or a mask). The value is a float in
``engine.state.metrics[name]``. Metrics with ``per_class_names`` also write one float per class as
``engine.state.metrics[f"{name}_{class_name}"]`` (nan for a skipped class).

Distributed runs: all states are all-reduced (AUROC gathers its scores). Give ``num_classes`` to the
confusion-matrix metrics when predictions are class indices, so every process has the same matrix size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import ignite.distributed as idist
import torch.nn.functional as F
from ignite.exceptions import NotComputableError
from ignite.metrics import EpochMetric, Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.metrics import compute_dice, compute_iou

from ._inputs import as_batch, class_indices, class_scores
from .classification import (
    accuracy_from_confusion,
    balanced_accuracy_from_confusion,
    confusion_matrix,
    per_class_auroc,
    quadratic_weighted_kappa_from_confusion,
)
from .segmentation import ISIC_JACCARD_THRESHOLD, _class_scores, thresholded_jaccard

__all__ = [
    "Accuracy",
    "BalancedAccuracy",
    "Dice",
    "IoU",
    "MultiClassAUROC",
    "MultiLabelAUROC",
    "QuadraticKappa",
    "ThresholdedJaccard",
]


def _identity(x: Any) -> Any:
    return x


class _PerClassValues:
    """Mixin: after ``compute``, ``self.per_class`` holds a (C,) tensor; ``completed`` also writes
    ``{name}_{class_name}`` entries when ``per_class_names`` is set."""

    per_class_names: Sequence[str] | None
    per_class: torch.Tensor | None

    def completed(self, engine, name: str) -> None:  # noqa: ANN001 (ignite Engine)
        super().completed(engine, name)  # type: ignore[misc]
        if self.per_class_names is None or self.per_class is None:
            return
        if len(self.per_class_names) != len(self.per_class):
            raise ValueError(f"{len(self.per_class_names)} per_class_names for {len(self.per_class)} classes")
        for class_name, value in zip(self.per_class_names, self.per_class.tolist()):
            engine.state.metrics[f"{name}_{class_name}"] = float(value)


# ---------------------------------------------------------------- confusion-matrix metrics


class _ConfusionMatrixMetric(Metric):
    """Accumulates a (C, C) confusion matrix (rows: true class, columns: predicted class).

    ``y_pred``: (B, C) logits/probabilities or (B,) class indices; ``y``: (B,) class indices or (B, C)
    one-hot; or lists of per-sample tensors. C comes from ``num_classes``, else from the scores' width,
    else from the largest label seen (the matrix grows).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        output_transform: Callable = _identity,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ):
        self.num_classes = num_classes
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=skip_unrolling)

    @staticmethod
    def _from_confusion(confusion: torch.Tensor) -> float:
        raise NotImplementedError

    @reinit__is_reduced
    def reset(self) -> None:
        n = self.num_classes or 0
        self._confusion = torch.zeros(n, n, dtype=torch.long, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        y_pred, y = output[0], output[1]
        batch = confusion_matrix(y_pred, y, self.num_classes).to(self._device)
        n = max(batch.shape[0], self._confusion.shape[0])
        self._confusion = F.pad(self._confusion, (0, n - self._confusion.shape[0]) * 2) + F.pad(
            batch, (0, n - batch.shape[0]) * 2
        )

    @property
    def confusion(self) -> torch.Tensor:
        """The (C, C) confusion matrix accumulated on this process so far."""
        return self._confusion

    @sync_all_reduce("_confusion")
    def compute(self) -> float:
        if self._confusion.sum() == 0:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed")
        return self._from_confusion(self._confusion)


class Accuracy(_ConfusionMatrixMetric):
    """Top-1 accuracy in [0, 1] (:func:`~essa_monai.metrics.accuracy`). Unlike ``ignite.metrics.Accuracy``
    it takes one-hot labels and per-sample lists. Args: ``num_classes`` (optional), ``output_transform``,
    ``device``, ``skip_unrolling``."""

    _from_confusion = staticmethod(accuracy_from_confusion)


class BalancedAccuracy(_ConfusionMatrixMetric):
    """Mean per-class recall over classes present in the labels (ISIC 2018 task 3's score;
    :func:`~essa_monai.metrics.balanced_accuracy`). Arguments as :class:`Accuracy`."""

    _from_confusion = staticmethod(balanced_accuracy_from_confusion)


class QuadraticKappa(_ConfusionMatrixMetric):
    """Quadratic weighted Cohen's kappa (:func:`~essa_monai.metrics.quadratic_weighted_kappa`).
    ``y_pred`` may be (B, C) scores or (B,) integer grades. Arguments as :class:`Accuracy`."""

    _from_confusion = staticmethod(quadratic_weighted_kappa_from_confusion)


# ---------------------------------------------------------------- AUROC


class _AUROCMetric(_PerClassValues, EpochMetric):
    """Stores all (N, C) float64 scores and binary targets (Ignite's ``EpochMetric``, which gathers
    them across processes) and computes per-class AUROC at the end."""

    def __init__(
        self,
        average: str = "macro",
        per_class_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ):
        if average not in ("macro", "none"):
            raise ValueError(f"unknown average {average!r}; choose 'macro' or 'none'")
        self.average = average
        self.per_class_names = None if per_class_names is None else [str(n) for n in per_class_names]
        self.per_class = None
        self.skipped_classes: list[str] = []
        super().__init__(
            self._per_class_auroc,
            output_transform,
            check_compute_fn=False,
            device=device,
            skip_unrolling=skip_unrolling,
        )

    def _per_class_auroc(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_class_auroc(scores, targets, self.per_class_names)

    def _prepare(self, y_pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @reinit__is_reduced
    def reset(self) -> None:
        super().reset()
        self.per_class = None
        self.skipped_classes = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        super().update(self._prepare(output[0], output[1]))

    def compute(self) -> float | torch.Tensor:  # type: ignore[override]
        # Not EpochMetric.compute: it evaluates on rank 0 and broadcasts a scalar, which breaks (a
        # collective size mismatch) for per-class vectors. Every rank gathers and computes instead.
        if not self._predictions:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before compute")
        scores, targets = torch.cat(self._predictions, dim=0), torch.cat(self._targets, dim=0)
        if idist.get_world_size() > 1:
            scores, targets = idist.all_gather(scores), idist.all_gather(targets)
        values = self._per_class_auroc(scores, targets).to(torch.float64).reshape(-1).cpu()
        self.per_class = values
        names = self.per_class_names or [f"class {c}" for c in range(len(values))]
        self.skipped_classes = [name for name, v in zip(names, values.tolist()) if v != v]
        if self.average == "none":
            return values
        valid = values[~torch.isnan(values)]
        return float(valid.mean()) if valid.numel() else float("nan")


class MultiLabelAUROC(_AUROCMetric):
    """Macro (or per-class) AUROC of multi-label predictions, e.g. ChestX-ray14's mean over 14 findings
    (:func:`~essa_monai.metrics.multilabel_auroc`).

    ``y_pred``: (B, C) logits or probabilities; ``y``: (B, C) multi-hot {0, 1}; or per-sample lists.
    Classes with a single label value over the epoch are skipped with a warning and listed in
    ``skipped_classes``; ``per_class`` holds the (C,) values after ``compute``.

    Args:
        average: ``"macro"`` (float, mean over non-skipped classes) or ``"none"`` ((C,) tensor).
        per_class_names: C class names; also writes ``{name}_{class_name}`` to ``engine.state.metrics``.
        output_transform, device, skip_unrolling: as Ignite's ``Metric``.
    """

    def _prepare(self, y_pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores = class_scores(y_pred, "y_pred")
        targets = as_batch(y, "y").to(torch.float64).reshape(scores.shape[0], -1)
        return scores, targets.to(scores.device)


class MultiClassAUROC(_AUROCMetric):
    """Macro (or per-class) one-vs-rest AUROC of multi-class predictions
    (:func:`~essa_monai.metrics.multiclass_auroc`).

    ``y_pred``: (B, C) logits (``softmax=True``, default) or probabilities (``softmax=False``);
    ``y``: (B,) class indices or (B, C) one-hot; or per-sample lists. Other arguments as
    :class:`MultiLabelAUROC`.
    """

    def __init__(
        self, average: str = "macro", softmax: bool = True, per_class_names: Sequence[str] | None = None, **kwargs: Any
    ):
        self.softmax = softmax
        super().__init__(average=average, per_class_names=per_class_names, **kwargs)

    def _prepare(self, y_pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores = class_scores(y_pred, "y_pred")
        if scores.shape[1] < 2:
            raise ValueError(f"multi-class AUROC needs (B, C >= 2) scores, got {tuple(scores.shape)}")
        if self.softmax:
            scores = scores.softmax(dim=1)
        labels = class_indices(y, "y").to(scores.device)
        if labels.numel() and int(labels.max()) >= scores.shape[1]:
            raise ValueError(f"class index {int(labels.max())} out of range for {scores.shape[1]} classes")
        return scores, F.one_hot(labels, scores.shape[1]).to(torch.float64)


# ---------------------------------------------------------------- segmentation


class _SegmentationScoreMetric(_PerClassValues, Metric):
    """Accumulates per-image, per-class scores as sums, reproducing the ``"mean"`` and ``"mean_batch"``
    reductions of :func:`~essa_monai.metrics.segmentation.reduce_scores` over the epoch."""

    _score_fn: Callable[..., torch.Tensor]

    def __init__(
        self,
        include_background: bool = False,
        ignore_empty: bool = True,
        pred_threshold: float = 0.5,
        per_class_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ):
        self.include_background = include_background
        self.ignore_empty = ignore_empty
        self.pred_threshold = pred_threshold
        self.per_class_names = None if per_class_names is None else [str(n) for n in per_class_names]
        self.per_class = None
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=skip_unrolling)

    @reinit__is_reduced
    def reset(self) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=self._device)
        self._image_sum, self._image_count = zero.clone(), zero.clone()
        self._class_sum, self._class_count = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        self.per_class = None

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        scores = _class_scores(
            type(self)._score_fn, output[0], output[1], self.include_background, self.ignore_empty, self.pred_threshold
        ).to(self._device)
        valid = ~torch.isnan(scores)
        filled = torch.where(valid, scores, torch.zeros_like(scores))
        per_image_count = valid.sum(dim=1)
        has_value = per_image_count > 0
        self._image_sum += (filled.sum(dim=1)[has_value] / per_image_count[has_value]).sum()
        self._image_count += has_value.sum()
        if self._class_sum.numel() == 0:
            self._class_sum = torch.zeros(scores.shape[1], dtype=torch.float64, device=self._device)
            self._class_count = torch.zeros(scores.shape[1], dtype=torch.float64, device=self._device)
        if self._class_sum.shape[0] != scores.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: {scores.shape[1]} classes in this batch, {self._class_sum.shape[0]} before"
            )
        self._class_sum += filled.sum(dim=0)
        self._class_count += valid.sum(dim=0)

    @sync_all_reduce("_image_sum", "_image_count", "_class_sum", "_class_count")
    def compute(self) -> float:
        if self._class_sum.numel() == 0:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed")
        nan = torch.full_like(self._class_sum, float("nan"))
        self.per_class = torch.where(self._class_count > 0, self._class_sum / self._class_count.clamp(min=1), nan).cpu()
        return float(self._image_sum / self._image_count) if self._image_count > 0 else float("nan")


class Dice(_SegmentationScoreMetric):
    """Mean Dice over an epoch (:func:`~essa_monai.metrics.dice` with ``reduction="mean"``; ``per_class``
    after ``compute`` is its ``"mean_batch"``), from MONAI's ``compute_dice``.

    ``y_pred``: (B, K, *S) logits/probabilities/one-hot or (B, 1, *S) foreground map; ``y``: (B, 1, *S)
    label map or (B, K, *S) one-hot; or per-sample lists (sizes may differ between samples).

    Args:
        include_background: also score class 0. ignore_empty: skip classes absent from the ground truth.
        pred_threshold: foreground threshold of a one-channel ``y_pred``.
        per_class_names: K' names (K - 1 without background) for ``{name}_{class_name}`` entries.
        output_transform, device, skip_unrolling: as Ignite's ``Metric``.
    """

    _score_fn = staticmethod(compute_dice)


class IoU(_SegmentationScoreMetric):
    """Mean intersection over union over an epoch (:func:`~essa_monai.metrics.iou`), from MONAI's
    ``compute_iou``. Inputs and arguments as :class:`Dice`."""

    _score_fn = staticmethod(compute_iou)


class ThresholdedJaccard(Metric):
    """ISIC 2018 task 1's thresholded Jaccard over an epoch (:func:`~essa_monai.metrics.thresholded_jaccard`):
    per-image Jaccard of the binary masks, values below ``threshold`` set to 0, mean over images.

    ``y_pred``: (B, 2, H, W) logits/probabilities or (B, 1, H, W) foreground map (``> pred_threshold``);
    ``y``: (B, 1, H, W) mask (foreground ``> 0.5``: 0/1 or 0/255) or (B, 2, H, W) one-hot; or per-sample
    lists.

    Args:
        threshold: per-image cut-off (0.65 in ISIC 2018).
        pred_threshold: foreground threshold of a one-channel ``y_pred`` (0.5; 0.0 for logits).
        output_transform, device, skip_unrolling: as Ignite's ``Metric``.
    """

    def __init__(
        self,
        threshold: float = ISIC_JACCARD_THRESHOLD,
        pred_threshold: float = 0.5,
        output_transform: Callable = _identity,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ):
        self.threshold = threshold
        self.pred_threshold = pred_threshold
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=skip_unrolling)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        values = thresholded_jaccard(output[0], output[1], self.threshold, self.pred_threshold, reduction="none")
        self._sum += values.sum().to(self._device)
        self._count += values.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise NotComputableError("ThresholdedJaccard must have at least one example before it can be computed")
        return float(self._sum / self._count)
