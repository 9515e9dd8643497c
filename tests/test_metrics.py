"""Metrics on MONAI's metric classes: agreement with scikit-learn (Dice, IoU, accuracy, balanced accuracy,
AUROC), ISIC 2018's own rules (thresholded Jaccard by hand, tied Task 3 rows undecided as the official
scorer), and the Ignite handlers accumulating to the same values over batches, decollated lists, a plain
Ignite engine and MONAI's SupervisedEvaluator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, jaccard_score, roc_auc_score
from torch import nn

from essa_monai.metrics import (
    Accuracy,
    BalancedAccuracy,
    BalancedAccuracyMetric,
    ClassAUROCMetric,
    Dice,
    IoU,
    MultiClassAUROC,
    MultiLabelAUROC,
    SegmentationDiceMetric,
    SegmentationIoUMetric,
    ThresholdedJaccard,
    ThresholdedJaccardMetric,
    TopOneAccuracyMetric,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def value(metric, y_pred, y):
    """MONAI's metric protocol: call on the data, then aggregate."""
    metric.reset()
    metric(y_pred, y)
    return metric.aggregate()


def multiclass_data(n: int = 120, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, c) logits correlated with (n,) labels, every class present, no tied rows."""
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


# ---------------------------------------------------------------- ISIC 2018 Task 1: thresholded Jaccard


def test_thresholded_jaccard_follows_the_isic_definition_on_hand_made_masks():
    pred, true = square_masks()
    metric = ThresholdedJaccardMetric()
    assert metric(pred, true).flatten().tolist() == pytest.approx([0.8, 0.0])  # 0.5 < 0.65 counts as 0
    assert metric.aggregate() == pytest.approx((0.8 + 0.0) / 2)
    assert value(ThresholdedJaccardMetric(threshold=0.5), pred, true) == pytest.approx((0.8 + 0.5) / 2)


def test_thresholded_jaccard_keeps_a_value_equal_to_the_threshold_and_scores_two_empty_masks_1():
    true = torch.zeros(3, 1, 4, 5)
    true[0, 0] = 1  # 20 pixels
    pred = true.clone()
    pred[0, 0, 0, 0:5] = pred[0, 0, 1, 0:2] = 0  # 13 of 20: J = 0.65 exactly
    pred[2, 0, 0, 0] = 1  # image 2: empty ground truth, one predicted pixel
    assert ThresholdedJaccardMetric()(pred, true).flatten().tolist() == pytest.approx([0.65, 1.0, 0.0])


def test_thresholded_jaccard_accepts_two_channel_logits_255_masks_one_hot_and_sample_lists():
    pred, true = square_masks()
    logits = torch.cat([-3 * pred + 1, 3 * pred - 1], dim=1)  # (2, 2, 8, 8): argmax = pred
    assert value(ThresholdedJaccardMetric(), logits, 255 * true) == pytest.approx(0.4)
    assert value(ThresholdedJaccardMetric(), list(logits), list(true)) == pytest.approx(0.4)
    assert value(ThresholdedJaccardMetric(pred_threshold=0.0), 2 * pred - 1, true) == pytest.approx(0.4)
    assert value(ThresholdedJaccardMetric(), logits, torch.cat([1 - true, true], dim=1)) == pytest.approx(0.4)


# ---------------------------------------------------------------- Dice and IoU against scikit-learn


def _segmentation_data(num_classes: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, K, 16, 12) that agree less and less with the labels (n, 1, 16, 12) (noise grows with the
    image index, so per-image Jaccard values fall on both sides of 0.65)."""
    g = generator(7)
    labels = torch.zeros(n, 1, 16, 12, dtype=torch.long)
    for i in range(n):
        r, c = int(torch.randint(0, 8, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
        labels[i, 0, r : r + 6, c : c + 5] = 1 + i % (num_classes - 1)
    logits = 4.0 * nn.functional.one_hot(labels[:, 0], num_classes).movedim(-1, 1).float()
    noise = torch.linspace(0.5, 3.0, n).reshape(n, 1, 1, 1)
    return logits + noise * torch.randn(logits.shape, generator=g), labels


def test_dice_and_iou_match_sklearn_per_image_and_class_means():
    logits, labels = _segmentation_data(num_classes=3)
    pred = logits.argmax(1)
    dice, iou = [], []
    for i in range(len(pred)):
        per_class_dice, per_class_iou = [], []
        for c in (1, 2):
            if (labels[i, 0] == c).any():  # a class absent from the ground truth is ignored (ignore_empty)
                p, t = (pred[i] == c).flatten().numpy(), (labels[i, 0] == c).flatten().numpy()
                per_class_dice.append(f1_score(t, p, zero_division=0.0))
                per_class_iou.append(jaccard_score(t, p, zero_division=0.0))
        dice.append(np.mean(per_class_dice))
        iou.append(np.mean(per_class_iou))
    assert value(SegmentationDiceMetric(include_background=False), logits, labels) == pytest.approx(np.mean(dice), abs=1e-6)
    assert value(SegmentationIoUMetric(include_background=False), logits, labels) == pytest.approx(np.mean(iou), abs=1e-6)


def test_dice_on_hand_made_masks():
    pred, true = square_masks()
    # image 0: |P|=8, |G|=10, |P&G|=8 -> Dice 16/18; image 1: |P|=8, |G|=4, |P&G|=4 -> Dice 8/12
    assert value(SegmentationDiceMetric(include_background=False), pred, true) == pytest.approx((16 / 18 + 8 / 12) / 2)


# ---------------------------------------------------------------- classification against scikit-learn


def test_balanced_accuracy_and_accuracy_match_sklearn_including_a_class_absent_from_labels():
    logits, y = multiclass_data(n=90, c=6)
    pred = logits.argmax(1)
    assert value(BalancedAccuracyMetric(), logits, y) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert value(TopOneAccuracyMetric(), logits, y) == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    keep = y != 4  # class 4 never in the ground truth, still predicted sometimes: it is not averaged
    assert (pred[keep] == 4).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class missing from y_true
        expected = balanced_accuracy_score(y[keep], pred[keep])
    assert value(BalancedAccuracyMetric(), logits[keep], y[keep]) == pytest.approx(expected, abs=1e-6)
    one_hot = nn.functional.one_hot(y, 6)
    assert value(BalancedAccuracyMetric(), logits, one_hot) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert value(BalancedAccuracyMetric(num_classes=6), pred, y) == pytest.approx(balanced_accuracy_score(y, pred))


def test_a_tied_top_score_is_undecided_and_wrong_as_the_isic_scorer_counts_it():
    y = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[0.5, 0.5, 0.0],  # tied: undecided (argmax would pick class 0, the right one)
                           [0.9, 0.1, 0.0],  # class 0, right
                           [0.2, 0.8, 0.0],  # class 1, right
                           [0.1, 0.45, 0.45]])  # tied between 1 and 2: undecided
    assert value(BalancedAccuracyMetric(), scores, y) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert value(TopOneAccuracyMetric(), scores, y) == pytest.approx(2 / 4)
    # the official rule on random scores with many ties: tied rows get the label "undecided" (-1 here), and
    # scikit-learn then drops that label's (undefined) recall, as the official pandas mean skips it
    g = generator(5)
    y = torch.arange(200) % 7
    scores = torch.randint(0, 4, (200, 7), generator=g).float() + 2 * nn.functional.one_hot(y, 7)
    top = scores == scores.max(1, keepdim=True).values
    official = torch.where(top.sum(1) == 1, scores.argmax(1), torch.tensor(-1))
    assert 20 < int((official == -1).sum()) < 150
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": the undecided label
        expected = balanced_accuracy_score(y, official)
    assert value(BalancedAccuracyMetric(), scores, y) == pytest.approx(expected, abs=1e-6)
    assert value(BalancedAccuracyMetric(), scores, y) < balanced_accuracy_score(y, scores.argmax(1))
    assert value(TopOneAccuracyMetric(), scores, y) == pytest.approx(accuracy_score(y, official), abs=1e-6)


def test_multilabel_auroc_matches_sklearn_macro_and_per_class_with_ties_counting_one_half():
    logits, y = multilabel_data()
    metric = ClassAUROCMetric()
    assert value(metric, logits, y) == pytest.approx(roc_auc_score(y.numpy(), logits.numpy(), average="macro"), abs=1e-6)
    np.testing.assert_allclose(metric.per_class.numpy(), roc_auc_score(y.numpy(), logits.numpy(), average=None), atol=1e-6)
    coarse = (logits * 2).round() / 2  # many ties
    value(metric, coarse, y)
    np.testing.assert_allclose(metric.per_class.numpy(), roc_auc_score(y.numpy(), coarse.numpy(), average=None), atol=1e-6)


def test_multiclass_auroc_matches_sklearn_one_vs_rest_on_softmax_probabilities():
    logits, y = multiclass_data()
    probs = logits.softmax(dim=1).double()
    probs = probs / probs.sum(dim=1, keepdim=True)
    expected = roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert value(ClassAUROCMetric(softmax=True), logits, y) == pytest.approx(expected, abs=1e-6)
    assert value(ClassAUROCMetric(), probs, nn.functional.one_hot(y, 5)) == pytest.approx(expected, abs=1e-6)


def test_auroc_skips_a_class_with_one_label_value():
    logits, y = multilabel_data(c=4)
    y[:, 2] = 0  # no positive: AUROC undefined
    y[:, 3] = 1  # no negative
    metric = ClassAUROCMetric()
    with pytest.warns(UserWarning, match="skip AUC computation"):
        macro = value(metric, logits, y)
    assert torch.isnan(metric.per_class[2:]).all()
    expected = roc_auc_score(y[:, :2].numpy(), logits[:, :2].numpy(), average=None)
    np.testing.assert_allclose(metric.per_class[:2].numpy(), expected, atol=1e-6)
    assert macro == pytest.approx(expected.mean(), abs=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="holds class indices: give num_classes"):
        BalancedAccuracyMetric()(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class indices 0\.\.7, outside 0\.\.2"):
        BalancedAccuracyMetric()(torch.randn(2, 3), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="y has 3 channels"):
        SegmentationDiceMetric()(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


# ---------------------------------------------------------------- the handlers accumulate like the metrics


HANDLER_CASES = {
    "accuracy": (Accuracy, TopOneAccuracyMetric, "multiclass"),
    "balanced_accuracy": (BalancedAccuracy, BalancedAccuracyMetric, "multiclass"),
    "multiclass_auroc": (MultiClassAUROC, lambda: ClassAUROCMetric(softmax=True), "multiclass"),
    "multilabel_auroc": (MultiLabelAUROC, ClassAUROCMetric, "multilabel"),
    "dice": (Dice, lambda: SegmentationDiceMetric(include_background=False), "segmentation"),
    "iou": (IoU, lambda: SegmentationIoUMetric(include_background=False), "segmentation"),
    "thresholded_jaccard": (ThresholdedJaccard, ThresholdedJaccardMetric, "binary_segmentation"),
}


def _data(kind: str):
    return {"multiclass": lambda: multiclass_data(n=60, c=4), "multilabel": lambda: multilabel_data(n=60, c=6),
            "segmentation": lambda: _segmentation_data(3), "binary_segmentation": lambda: _segmentation_data(2)}[kind]()


@pytest.mark.parametrize("as_lists", [False, True], ids=["batched", "decollated"])
@pytest.mark.parametrize("case", list(HANDLER_CASES))
def test_handler_in_an_ignite_engine_accumulates_to_the_metric_value(case, as_lists):
    handler_cls, metric_cls, kind = HANDLER_CASES[case]
    y_pred, y = _data(kind)
    expected = value(metric_cls(), y_pred, y)
    assert 0.0 < expected < 1.0
    splits = [3, 1, 6] if kind.endswith("segmentation") else [7, 20, 1, 32]
    batches = [(list(p), list(t)) if as_lists else (p, t) for p, t in zip(torch.split(y_pred, splits), torch.split(y, splits))]
    engine = Engine(lambda engine, batch: batch)
    handler_cls().attach(engine, "m")
    assert engine.run(batches).metrics["m"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("decollate", [True, False])
def test_handlers_work_in_monai_supervised_evaluator_with_per_class_auroc(decollate):
    logits, y = multiclass_data(n=30, c=4)
    data = [{"image": logits[i], "label": int(y[i])} for i in range(30)]
    transform = from_engine(["pred", "label"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=torch.utils.data.DataLoader(data, batch_size=7),
        network=nn.Identity(),  # the "image" is the logits
        key_val_metric={"val_bacc": BalancedAccuracy(num_classes=4, output_transform=transform)},
        additional_metrics={
            "val_acc": Accuracy(num_classes=4, output_transform=transform),
            "val_auc": MultiClassAUROC(output_transform=transform, per_class_names=["MEL", "NV", "BCC", "AKIEC"]),
        },
        decollate=decollate,
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["val_bacc"] == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)), abs=1e-6)
    assert metrics["val_acc"] == pytest.approx(accuracy_score(y, logits.argmax(1)), abs=1e-6)
    probs = logits.softmax(1).double()
    assert metrics["val_auc"] == pytest.approx(roc_auc_score(y, probs / probs.sum(1, keepdim=True), multi_class="ovr"), abs=1e-6)
    assert metrics["val_auc_BCC"] == pytest.approx(roc_auc_score(y == 2, probs[:, 2]), abs=1e-6)
    assert evaluator.state.best_metric == pytest.approx(metrics["val_bacc"])


def test_segmentation_handlers_in_supervised_evaluator_with_decollated_masks():
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
    assert evaluator.state.metrics["val_jaccard"] == pytest.approx(value(ThresholdedJaccardMetric(), logits, labels), abs=1e-6)
    assert evaluator.state.metrics["val_dice"] == pytest.approx(value(SegmentationDiceMetric(include_background=False), logits, labels), abs=1e-6)
    assert evaluator.state.metric_details["val_jaccard"].shape == (10, 1)  # per-image values, MONAI's details
