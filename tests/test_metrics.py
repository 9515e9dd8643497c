"""Metrics: hand-computed ISIC thresholded Jaccard, agreement with scikit-learn (AUROC, balanced accuracy,
quadratic kappa) and MONAI (Dice), and Ignite metrics that accumulate to the functions' values over
batches, per-sample lists, a plain Ignite engine and MONAI's SupervisedEvaluator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.metrics import DiceMetric
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score
from torch import nn

from essa_monai.metrics import (
    Accuracy,
    BalancedAccuracy,
    Dice,
    IoU,
    MultiClassAUROC,
    MultiLabelAUROC,
    QuadraticKappa,
    ThresholdedJaccard,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    dice,
    iou,
    jaccard_index,
    multiclass_auroc,
    multilabel_auroc,
    quadratic_weighted_kappa,
    thresholded_jaccard,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def multiclass_data(n: int = 120, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, c) logits correlated with (n,) labels, every class present."""
    g = generator(seed)
    y = torch.arange(n) % c
    y = y[torch.randperm(n, generator=g)]
    logits = torch.randn(n, c, generator=g) + 1.5 * nn.functional.one_hot(y, c)
    return logits, y


def multilabel_data(n: int = 150, c: int = 14, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    y = (torch.rand(n, c, generator=g) < torch.linspace(0.05, 0.5, c)).float()
    logits = torch.randn(n, c, generator=g) + y
    return logits, y


def square_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 8x8 images: image 0 has J = 8/10 = 0.8, image 1 has J = 4/8 = 0.5 (foreground = 1)."""
    pred = torch.zeros(2, 1, 8, 8)
    true = torch.zeros(2, 1, 8, 8)
    true[0, 0, 0:2, 0:5] = 1  # 10 pixels
    pred[0, 0, 0, 0:5] = pred[0, 0, 1, 0:3] = 1  # 8 of them
    true[1, 0, 4, :4] = 1  # 4 pixels
    pred[1, 0, 4, :8] = 1  # those 4 and 4 more: union 8
    return pred, true


# ---------------------------------------------------------------- ISIC 2018 task 1: thresholded Jaccard


def test_thresholded_jaccard_follows_the_isic_definition_on_hand_made_masks():
    pred, true = square_masks()
    assert jaccard_index(pred, true).tolist() == [0.8, 0.5]
    assert thresholded_jaccard(pred, true) == pytest.approx((0.8 + 0.0) / 2)  # 0.5 < 0.65 counts as 0
    assert thresholded_jaccard(pred, true, reduction="none").tolist() == [0.8, 0.0]
    assert thresholded_jaccard(pred, true, threshold=0.5) == pytest.approx((0.8 + 0.5) / 2)  # 0.5 is not below


def test_thresholded_jaccard_keeps_a_value_equal_to_the_threshold_and_scores_two_empty_masks_1():
    true = torch.zeros(2, 1, 4, 5)
    true[0, 0] = 1  # 20 pixels
    pred = true.clone()
    pred[0, 0, 0, 0:5] = pred[0, 0, 1, 0:2] = 0  # 13 of 20: J = 0.65 exactly
    assert jaccard_index(pred, true).tolist() == [0.65, 1.0]
    assert thresholded_jaccard(pred, true) == pytest.approx((0.65 + 1.0) / 2)


def test_thresholded_jaccard_accepts_two_channel_logits_255_masks_and_sample_lists():
    pred, true = square_masks()
    logits = torch.cat([-3 * pred + 1, 3 * pred - 1], dim=1)  # (2, 2, 8, 8): argmax = pred
    assert thresholded_jaccard(logits, 255 * true) == pytest.approx(0.4)
    assert thresholded_jaccard(list(logits), list(true)) == pytest.approx(0.4)
    assert thresholded_jaccard(2 * pred - 1, true, pred_threshold=0.0) == pytest.approx(0.4)  # 1-channel logits
    one_hot = torch.cat([1 - true, true], dim=1)
    assert thresholded_jaccard(logits, one_hot) == pytest.approx(0.4)


# ---------------------------------------------------------------- Dice and IoU


def test_dice_and_iou_on_hand_made_masks():
    pred, true = square_masks()
    # image 0: |P|=8, |G|=10, |P&G|=8 -> Dice 16/18; image 1: |P|=8, |G|=4, |P&G|=4 -> Dice 8/12
    assert dice(pred, true) == pytest.approx((16 / 18 + 8 / 12) / 2)
    assert iou(pred, true) == pytest.approx((0.8 + 0.5) / 2)
    torch.testing.assert_close(
        dice(pred, true, reduction="none"), torch.tensor([[16 / 18], [8 / 12]], dtype=torch.float64)
    )


def test_dice_matches_monai_dice_metric_on_multiclass_logits():
    g = generator(3)
    logits = torch.randn(4, 4, 12, 10, generator=g)
    labels = torch.randint(0, 4, (4, 1, 12, 10), generator=g)
    labels[0][labels[0] == 2] = 0  # class 2 absent from image 0: ignored (nan), as MONAI does
    one_hot_pred = nn.functional.one_hot(logits.argmax(1), 4).movedim(-1, 1)
    one_hot_true = nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1)
    for reduction in ("mean", "mean_batch"):
        reference = DiceMetric(include_background=False, reduction=reduction)
        reference(one_hot_pred, one_hot_true)
        expected = reference.aggregate().double()
        torch.testing.assert_close(
            torch.as_tensor(dice(logits, labels, reduction=reduction), dtype=torch.float64), expected.squeeze()
        )
    scores = dice(logits, labels, reduction="none")
    assert scores.shape == (4, 3) and torch.isnan(scores[0, 1]) and torch.isnan(scores).sum() == 1


# ---------------------------------------------------------------- classification vs scikit-learn


def test_multilabel_auroc_matches_sklearn_macro_and_per_class():
    logits, y = multilabel_data()
    expected = roc_auc_score(y.numpy(), logits.numpy(), average=None)
    np.testing.assert_allclose(multilabel_auroc(logits, y, average="none").numpy(), expected, rtol=0, atol=1e-12)
    assert multilabel_auroc(logits, y) == pytest.approx(
        roc_auc_score(y.numpy(), logits.numpy(), average="macro"), abs=1e-12
    )
    assert multilabel_auroc(logits.sigmoid(), y) == pytest.approx(
        expected.mean(), abs=1e-12
    )  # probabilities: same ranks


def test_auroc_counts_tied_scores_as_one_half_like_sklearn():
    logits, y = multilabel_data(c=4)
    coarse = (logits * 2).round() / 2  # many ties
    expected = roc_auc_score(y.numpy(), coarse.numpy(), average=None)
    np.testing.assert_allclose(multilabel_auroc(coarse, y, average="none").numpy(), expected, atol=1e-12)


def test_multiclass_auroc_matches_sklearn_one_vs_rest():
    logits, y = multiclass_data()
    probs = logits.softmax(dim=1).double()
    probs = probs / probs.sum(dim=1, keepdim=True)
    expected = roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert multiclass_auroc(logits, y) == pytest.approx(expected, abs=1e-12)
    assert multiclass_auroc(probs, y, softmax=False) == pytest.approx(expected, abs=1e-12)
    per_class = [roc_auc_score((y == c).numpy(), probs[:, c].numpy()) for c in range(5)]
    np.testing.assert_allclose(multiclass_auroc(logits, y, average="none").numpy(), per_class, atol=1e-12)
    one_hot = nn.functional.one_hot(y, 5)
    assert multiclass_auroc(logits, one_hot) == pytest.approx(expected, abs=1e-12)


def test_auroc_skips_a_class_with_one_label_value_and_names_it():
    logits, y = multilabel_data(c=4)
    y[:, 2] = 0  # no positive: AUROC undefined
    y[:, 3] = 1  # no negative
    with pytest.warns(UserWarning, match=r"skipped for 2 of 4 classes.*Effusion \(all 0\), Infiltration \(all 1\)"):
        per_class = multilabel_auroc(
            logits, y, average="none", class_names=["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration"]
        )
    assert torch.isnan(per_class[2:]).all()
    expected = roc_auc_score(y[:, :2].numpy(), logits[:, :2].numpy(), average=None)
    np.testing.assert_allclose(per_class[:2].numpy(), expected, atol=1e-12)
    with pytest.warns(UserWarning, match="class 2 \\(all 0\\), class 3 \\(all 1\\)"):
        assert multilabel_auroc(logits, y) == pytest.approx(expected.mean(), abs=1e-12)


def test_balanced_accuracy_matches_sklearn_including_a_class_absent_from_labels():
    logits, y = multiclass_data(n=90, c=6)
    pred = logits.argmax(1)
    assert balanced_accuracy(logits, y) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    keep = y != 4  # class 4 never in the ground truth, still predicted sometimes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class missing from y_true
        expected = balanced_accuracy_score(y[keep], pred[keep])
    assert (pred[keep] == 4).any()
    assert balanced_accuracy(logits[keep], y[keep]) == pytest.approx(expected, abs=1e-12)
    assert accuracy(logits, y) == pytest.approx(float((pred == y).double().mean()))


def test_balanced_accuracy_is_the_mean_per_class_recall_by_hand():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    assert confusion_matrix(pred, y, num_classes=3).tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert balanced_accuracy(pred, y) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert accuracy(pred, y) == pytest.approx(5 / 7)


def test_quadratic_kappa_matches_sklearn_for_scores_grades_and_one_hot_labels():
    logits, y = multiclass_data(n=100, c=5, seed=4)
    pred = logits.argmax(1)
    expected = cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(5)))
    assert quadratic_weighted_kappa(logits, y) == pytest.approx(expected, abs=1e-12)
    assert quadratic_weighted_kappa(pred.float(), nn.functional.one_hot(y, 5)) == pytest.approx(expected, abs=1e-12)
    # a grade never used (4): sklearn needs labels=range(5) to weigh distances by grade, as we do
    shifted = pred.clamp(max=3)
    expected = cohen_kappa_score(y.clamp(max=3), shifted, weights="quadratic", labels=list(range(5)))
    assert quadratic_weighted_kappa(shifted, y.clamp(max=3), num_classes=5) == pytest.approx(expected, abs=1e-12)
    assert quadratic_weighted_kappa(y, y) == 1.0


# ---------------------------------------------------------------- Ignite metrics accumulate like the functions


def _classification(kind: str):
    if kind == "multilabel":
        return multilabel_data(n=60, c=6)
    return multiclass_data(n=60, c=4)


METRIC_CASES = {
    "accuracy": (Accuracy, {}, "multiclass", lambda p, y: accuracy(p, y)),
    "balanced_accuracy": (BalancedAccuracy, {}, "multiclass", lambda p, y: balanced_accuracy(p, y)),
    "kappa": (QuadraticKappa, {}, "multiclass", lambda p, y: quadratic_weighted_kappa(p, y)),
    "multiclass_auroc": (MultiClassAUROC, {}, "multiclass", lambda p, y: multiclass_auroc(p, y)),
    "multilabel_auroc": (MultiLabelAUROC, {}, "multilabel", lambda p, y: multilabel_auroc(p, y)),
}


def _feed(metric, y_pred, y, splits, as_lists: bool) -> float:
    metric.reset()
    for chunk_pred, chunk_y in zip(torch.split(y_pred, splits), torch.split(y, splits)):
        metric.update((list(chunk_pred), list(chunk_y)) if as_lists else (chunk_pred, chunk_y))
    return metric.compute()


@pytest.mark.parametrize("as_lists", [False, True], ids=["batched", "lists"])
@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_classification_ignite_metric_accumulates_to_the_function_value(case, as_lists):
    cls, kwargs, kind, fn = METRIC_CASES[case]
    y_pred, y = _classification(kind)
    expected = fn(y_pred, y)
    assert 0.0 < abs(expected) < 1.0
    assert _feed(cls(**kwargs), y_pred, y, [7, 20, 1, 32], as_lists) == pytest.approx(expected, abs=1e-12)


SEGMENTATION_CASES = {
    "dice": (Dice, lambda p, y: dice(p, y)),
    "iou": (IoU, lambda p, y: iou(p, y)),
    "thresholded_jaccard": (ThresholdedJaccard, lambda p, y: thresholded_jaccard(p, y)),
}


def _segmentation_data(num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (10, K, 16, 12) that agree less and less with the labels (10, 1, 16, 12) (noise grows with
    the image index, so per-image Jaccard values fall on both sides of 0.65)."""
    g = generator(7)
    labels = torch.zeros(10, 1, 16, 12, dtype=torch.long)
    for i in range(10):
        r, c = int(torch.randint(0, 8, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
        labels[i, 0, r : r + 6, c : c + 5] = 1 + i % (num_classes - 1)
    logits = 4.0 * nn.functional.one_hot(labels[:, 0], num_classes).movedim(-1, 1).float()
    noise = torch.linspace(0.5, 3.0, 10).reshape(10, 1, 1, 1)
    logits = logits + noise * torch.randn(logits.shape, generator=g)
    return logits, labels


@pytest.mark.parametrize("as_lists", [False, True], ids=["batched", "lists"])
@pytest.mark.parametrize("case", list(SEGMENTATION_CASES))
def test_segmentation_ignite_metric_accumulates_to_the_function_value(case, as_lists):
    cls, fn = SEGMENTATION_CASES[case]
    logits, labels = _segmentation_data(num_classes=2 if case == "thresholded_jaccard" else 3)
    expected = fn(logits, labels)
    assert 0.0 < expected < 1.0
    assert _feed(cls(), logits, labels, [3, 1, 6], as_lists) == pytest.approx(expected, abs=1e-12)


def test_dice_metric_reports_per_class_values_matching_mean_batch():
    logits, labels = _segmentation_data(num_classes=3)
    metric = Dice(per_class_names=["lesion", "organ"])
    _feed(metric, logits, labels, [4, 6], as_lists=True)
    torch.testing.assert_close(metric.per_class, dice(logits, labels, reduction="mean_batch"))


def test_metric_without_samples_is_not_computable():
    with pytest.raises(NotComputableError):
        BalancedAccuracy().compute()
    with pytest.raises(NotComputableError):
        ThresholdedJaccard().compute()


def test_ignite_engine_unrolls_decollated_lists_into_the_same_value():
    logits, y = multilabel_data(n=40, c=5)
    batches = [(list(logits[i : i + 8]), list(y[i : i + 8])) for i in range(0, 40, 8)]
    engine = Engine(lambda engine, batch: batch)  # output = ([pred_i], [label_i]), as decollated
    MultiLabelAUROC(per_class_names=list("abcde")).attach(engine, "auc")
    state = engine.run(batches)
    assert state.metrics["auc"] == pytest.approx(multilabel_auroc(logits, y), abs=1e-12)
    per_class = multilabel_auroc(logits, y, average="none")
    assert [state.metrics[f"auc_{c}"] for c in "abcde"] == pytest.approx(per_class.tolist(), abs=1e-12)


@pytest.mark.parametrize("decollate", [True, False])
def test_metrics_work_in_monai_supervised_evaluator(decollate):
    logits, y = multiclass_data(n=30, c=4)
    data = [{"image": logits[i], "label": int(y[i])} for i in range(30)]
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    transform = from_engine(["pred", "label"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=nn.Identity(),  # the "image" is the logits
        key_val_metric={"val_bacc": BalancedAccuracy(output_transform=transform)},
        additional_metrics={
            "val_kappa": QuadraticKappa(output_transform=transform),
            "val_auc": MultiClassAUROC(output_transform=transform, per_class_names=["MEL", "NV", "BCC", "AKIEC"]),
        },
        decollate=decollate,
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["val_bacc"] == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)), abs=1e-12)
    assert metrics["val_kappa"] == pytest.approx(quadratic_weighted_kappa(logits, y), abs=1e-12)
    assert metrics["val_auc"] == pytest.approx(multiclass_auroc(logits, y), abs=1e-12)
    assert metrics["val_auc_BCC"] == pytest.approx(float(multiclass_auroc(logits, y, average="none")[2]), abs=1e-12)
    assert evaluator.state.best_metric == pytest.approx(metrics["val_bacc"])


def test_segmentation_metric_in_supervised_evaluator_with_decollated_masks():
    logits, labels = _segmentation_data(num_classes=2)
    data = [{"image": logits[i], "label": labels[i]} for i in range(10)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=torch.utils.data.DataLoader(data, batch_size=4),
        network=nn.Identity(),
        key_val_metric={"val_jaccard": ThresholdedJaccard(output_transform=from_engine(["pred", "label"]))},
        additional_metrics={"val_dice": Dice(output_transform=from_engine(["pred", "label"]))},
        decollate=True,
    )
    evaluator.run()
    assert evaluator.state.metrics["val_jaccard"] == pytest.approx(thresholded_jaccard(logits, labels), abs=1e-12)
    assert evaluator.state.metrics["val_dice"] == pytest.approx(dice(logits, labels), abs=1e-12)
