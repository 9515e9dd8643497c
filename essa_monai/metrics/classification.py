"""Classification metrics as plain functions on tensors.

Input formats (N samples, C classes; batched tensors or lists of N per-sample tensors):

* ``y_pred`` (multi-class): (N, C) scores: logits or probabilities (the class is the argmax), or (N,)
  integer class indices (e.g. rounded grades for the kappa). AUROC needs the (N, C) scores.
* ``y`` (multi-class): (N,) or (N, 1) integer class indices, or (N, C) one-hot (argmax is taken).
* ``y_pred`` (multi-label): (N, C) logits or probabilities (AUROC is rank-based, and the sigmoid is
  monotone, so both give the same value). ``y``: (N, C) multi-hot {0, 1}.

Accuracy, balanced accuracy and kappa are computed from a confusion matrix (rows: true class,
columns: predicted class), so the Ignite metrics accumulate only that. AUROC uses MONAI's
``compute_roc_auc`` per class (ties count one half, as scikit-learn's ``roc_auc_score``).

Scalars are returned as Python floats, per-class values as float64 tensors.
"""

from __future__ import annotations

import warnings
from typing import Literal, Sequence

import torch
from monai.metrics import compute_roc_auc

from ._inputs import TensorOrList, as_batch, class_indices, class_scores

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
]

Average = Literal["macro", "none"]


def confusion_matrix(y_pred: TensorOrList, y: TensorOrList, num_classes: int | None = None) -> torch.Tensor:
    """Multi-class confusion matrix: entry [i, j] counts samples of true class i predicted as class j.

    Args:
        y_pred: (N, C) scores (argmax is taken) or (N,) predicted class indices.
        y: (N,)/(N, 1) true class indices or (N, C) one-hot.
        num_classes: C; default: ``y_pred.shape[1]`` for scores, else ``max(label) + 1`` over both.

    Returns:
        (C, C) ``long`` tensor (on ``y``'s device).
    """
    scores = as_batch(y_pred, "y_pred")
    pred = class_indices(scores, "y_pred")
    true = class_indices(y, "y").to(pred.device)
    if pred.shape != true.shape:
        raise ValueError(f"y_pred gives {pred.shape[0]} samples, y gives {true.shape[0]}")
    if num_classes is None:
        if scores.ndim == 2 and scores.shape[1] > 1:
            num_classes = scores.shape[1]
        else:
            num_classes = int(torch.cat([pred, true]).max()) + 1 if pred.numel() else 1
    if pred.numel() and int(torch.cat([pred, true]).max()) >= num_classes:
        raise ValueError(f"class index {int(torch.cat([pred, true]).max())} out of range for {num_classes} classes")
    counts = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy_from_confusion(confusion: torch.Tensor) -> float:
    """Fraction of correct predictions, ``trace / sum`` of a (C, C) confusion matrix; nan if empty."""
    total = confusion.sum()
    return float(confusion.diagonal().sum() / total) if total > 0 else float("nan")


def balanced_accuracy_from_confusion(confusion: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in the ground truth (rows with samples).

    This is ISIC 2018 task 3's official score and scikit-learn's ``balanced_accuracy_score`` (which also
    drops classes absent from ``y``). nan if the matrix is empty.
    """
    confusion = confusion.to(torch.float64)
    support = confusion.sum(dim=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((confusion.diagonal()[present] / support[present]).mean())


def quadratic_weighted_kappa_from_confusion(confusion: torch.Tensor) -> float:
    """Cohen's kappa with quadratic weights ``w_ij = (i - j)^2 / (C - 1)^2`` from a (C, C) confusion matrix.

    ``kappa = 1 - sum(w * O) / sum(w * E)`` with O the observed counts and ``E = outer(rows, cols) / N``
    the counts expected by chance. Weights use the class indices 0..C-1 (scikit-learn's
    ``cohen_kappa_score(weights="quadratic")`` agrees when given ``labels=range(C)``). nan when the
    expected disagreement is 0 (e.g. every sample and prediction in one class).
    """
    observed = confusion.to(torch.float64)
    n = observed.sum()
    if n == 0:
        return float("nan")
    index = torch.arange(observed.shape[0], dtype=torch.float64, device=observed.device)
    weights = (index[:, None] - index[None, :]) ** 2
    expected = torch.outer(observed.sum(dim=1), observed.sum(dim=0)) / n
    disagreement = (weights * expected).sum()
    if disagreement == 0:
        return float("nan")
    return float(1.0 - (weights * observed).sum() / disagreement)


def accuracy(y_pred: TensorOrList, y: TensorOrList, num_classes: int | None = None) -> float:
    """Top-1 accuracy in [0, 1]. Shapes as :func:`confusion_matrix`."""
    return accuracy_from_confusion(confusion_matrix(y_pred, y, num_classes))


def balanced_accuracy(y_pred: TensorOrList, y: TensorOrList, num_classes: int | None = None) -> float:
    """Balanced accuracy in [0, 1]: mean recall over the classes present in ``y`` (ISIC 2018 task 3).
    Shapes as :func:`confusion_matrix`."""
    return balanced_accuracy_from_confusion(confusion_matrix(y_pred, y, num_classes))


def quadratic_weighted_kappa(y_pred: TensorOrList, y: TensorOrList, num_classes: int | None = None) -> float:
    """Quadratic weighted kappa in [-1, 1] for ordinal classes (e.g. retinopathy grades).

    Args:
        y_pred: (N, C) scores (argmax) or (N,) predicted grades (integers).
        y: (N,) true grades or (N, C) one-hot.
        num_classes: C (default as :func:`confusion_matrix`); only the class distances matter.
    """
    return quadratic_weighted_kappa_from_confusion(confusion_matrix(y_pred, y, num_classes))


def per_class_auroc(
    scores: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str] | None = None
) -> torch.Tensor:
    """One-vs-rest ROC AUC of every column.

    Args:
        scores: (N, C) scores (higher = more likely positive); a (N,) tensor is one column.
        targets: (N, C) binary {0, 1} labels, same shape.
        class_names: C names used in the warning (default: ``class 0``, ``class 1``, ...).

    Returns:
        (C,) float64 AUROC values in [0, 1]. A class whose targets hold a single value (no positive or
        no negative sample) has no AUROC: it is skipped (nan) and a ``UserWarning`` names it.
    """
    scores = scores.detach().to(torch.float64)
    targets = targets.detach().to(device=scores.device)
    if scores.ndim == 1:
        scores, targets = scores[:, None], targets.reshape(-1, 1)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be (N, C)")
    if targets.numel() and not torch.all((targets == 0) | (targets == 1)):
        raise ValueError(f"AUROC targets must be 0 or 1, got values {targets.unique()[:6].tolist()}")
    num_classes = scores.shape[1]
    names = [f"class {c}" for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    targets = targets.to(torch.float64)
    values = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    skipped = []
    for c in range(num_classes):
        column = targets[:, c]
        positives = int(column.sum())
        if positives == 0 or positives == column.numel():
            skipped.append(f"{names[c]} (all {int(positives > 0)})" if column.numel() else f"{names[c]} (no samples)")
            continue
        values[c] = float(compute_roc_auc(scores[:, c], column))
    if skipped:
        warnings.warn(
            f"AUROC undefined and skipped for {len(skipped)} of {num_classes} classes with a single label value: "
            + ", ".join(skipped),
            UserWarning,
            stacklevel=2,
        )
    return values


def _average(values: torch.Tensor, average: Average) -> float | torch.Tensor:
    if average == "none":
        return values
    if average == "macro":
        valid = values[~torch.isnan(values)]
        return float(valid.mean()) if valid.numel() else float("nan")
    raise ValueError(f"unknown average {average!r}; choose 'macro' or 'none'")


def multilabel_auroc(
    y_pred: TensorOrList,
    y: TensorOrList,
    average: Average = "macro",
    class_names: Sequence[str] | None = None,
) -> float | torch.Tensor:
    """Multi-label AUROC (e.g. ChestX-ray14's mean AUROC over 14 findings).

    Args:
        y_pred: (N, C) logits or probabilities.
        y: (N, C) multi-hot {0, 1} labels.
        average: ``"macro"``: mean over the classes that have both label values (float);
            ``"none"``: the (C,) per-class values, nan for skipped classes.
        class_names: names used in the warning about skipped classes.
    """
    scores = class_scores(y_pred, "y_pred")
    targets = as_batch(y, "y")
    if targets.ndim == 1:
        targets = targets[:, None]
    return _average(per_class_auroc(scores, targets, class_names), average)


def multiclass_auroc(
    y_pred: TensorOrList,
    y: TensorOrList,
    average: Average = "macro",
    softmax: bool = True,
    class_names: Sequence[str] | None = None,
) -> float | torch.Tensor:
    """Multi-class one-vs-rest AUROC (scikit-learn's ``roc_auc_score(multi_class="ovr")``).

    Args:
        y_pred: (N, C) logits (``softmax=True``, the default: softmax over C is applied first) or
            probabilities (``softmax=False``). One-vs-rest AUROC on logits differs from AUROC on
            probabilities, so say which you pass.
        y: (N,) class indices or (N, C) one-hot.
        average: ``"macro"`` (float) or ``"none"`` ((C,) tensor, nan for classes absent from ``y``).
        class_names: names used in the warning about skipped classes.
    """
    scores = class_scores(y_pred, "y_pred")
    if scores.shape[1] < 2:
        raise ValueError(f"multi-class AUROC needs (N, C >= 2) scores, got {tuple(scores.shape)}")
    if softmax:
        scores = scores.softmax(dim=1)
    labels = class_indices(y, "y").to(scores.device)
    if labels.numel() and int(labels.max()) >= scores.shape[1]:
        raise ValueError(f"class index {int(labels.max())} out of range for {scores.shape[1]} classes")
    targets = torch.nn.functional.one_hot(labels, scores.shape[1])
    return _average(per_class_auroc(scores, targets, class_names), average)
