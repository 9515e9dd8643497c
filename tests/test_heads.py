"""Task heads on tiny ViTs: classification pooling (VPT prompts excluded), UperNet shapes, neck sizes,
auxiliary head, gradients, and which parameters train under PEFT."""

from __future__ import annotations

import math
import re

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn

from essa_monai.heads import (
    ClassificationHead,
    UperNetHead,
    ViTClassifier,
    ViTFeaturePyramid,
    ViTUperNet,
    make_norm,
    pool_tokens,
    resolve_feature_indices,
)
from essa_monai.peft import apply_peft, count_parameters, trainable_parameters

DIM, DEPTH, NUM_CLASSES, CHANNELS = 32, 4, 3, 16
HEAD_PREFIXES = ("neck.", "decode_head.", "aux_head.", "head.")


def upernet(tiny_backbone, aux_head: bool = False, **kwargs) -> ViTUperNet:
    """UperNet on a 4-block tiny ViT (one block per pyramid level), 16 channels."""
    return ViTUperNet(
        tiny_backbone(depth=DEPTH), NUM_CLASSES, channels=CHANNELS, aux_head=aux_head, aux_channels=8, **kwargs
    )


# ---------------------------------------------------------------- classification


def test_pool_tokens_takes_cls_and_mean_of_patch_tokens_after_all_prefix_tokens():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # 3 prefix + 4 patch tokens
    cls, mean = tokens[:, 0], tokens[:, 3:].mean(dim=1)
    torch.testing.assert_close(pool_tokens(tokens, 3, "cls"), cls)
    torch.testing.assert_close(pool_tokens(tokens, 3, "mean"), mean)
    torch.testing.assert_close(pool_tokens(tokens, 3, "cls+mean"), torch.cat([cls, mean], dim=1))
    assert pool_tokens(tokens, 3, "mean")[0].tolist() == [13.5, 14.5, 15.5]  # tokens 3..6 of sample 0


@pytest.mark.parametrize("pooling, features", [("cls", DIM), ("mean", DIM), ("cls+mean", 2 * DIM)])
def test_classifier_head_width_and_logit_shape_for_each_pooling(tiny_backbone, pooling, features):
    model = ViTClassifier(tiny_backbone(), num_classes=5, pooling=pooling, dropout=0.1).eval()
    x = torch.randn(3, 3, 42, 28)
    assert model.head.in_features == features
    assert model.head.fc.weight.shape == (5, features)
    assert model.features(x).shape == (3, features)
    assert model(x).shape == (3, 5)


def test_classifier_head_is_layernorm_then_linear_on_pooled_tokens(tiny_backbone):
    model = ViTClassifier(tiny_backbone(), num_classes=4, pooling="cls+mean").eval()
    x = torch.randn(2, 3, 28, 28)
    tokens = model.backbone.forward_features(x)  # (2, 1 + 4, 32)
    pooled = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1)
    expected = model.head.fc(nn.functional.layer_norm(pooled, (2 * DIM,), model.head.norm.weight, model.head.norm.bias))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(
    "name, prefix", [("vit_small_patch14_dinov2", 1 + 2), ("vit_small_patch14_reg4_dinov2", 1 + 4 + 2)]
)
def test_vpt_prompts_are_excluded_from_the_patch_mean(tiny_backbone, name, prefix):
    model = ViTClassifier(tiny_backbone(name), num_classes=4, pooling="mean").eval()
    apply_peft(model, "vpt", backbone="backbone", num_tokens=2)
    with torch.no_grad():
        model.backbone.vpt.tokens.normal_(std=5.0)  # prompts far from patch tokens: including them would show
    x = torch.randn(2, 3, 28, 42)
    tokens = model.backbone.forward_features(x)
    assert model.backbone.num_prefix_tokens == prefix
    assert tokens.shape == (2, prefix + 2 * 3, DIM)
    patch_mean = tokens[:, prefix:].mean(dim=1)
    expected = model.head.fc(model.head.norm(patch_mean))
    torch.testing.assert_close(model(x), expected)
    with_prompts = model.head.fc(model.head.norm(tokens[:, 1:].mean(dim=1)))
    assert (model(x) - with_prompts).abs().max() > 1e-3


def test_classifier_with_apla_trains_only_wo_and_the_head(tiny_backbone):
    model = apply_peft(ViTClassifier(tiny_backbone(), num_classes=5), "apla", backbone="backbone")
    trainable = trainable_parameters(model)
    backbone_names = sorted(n for n in trainable if n.startswith("backbone."))
    assert all(re.fullmatch(r"backbone\.blocks\.\d\.attn\.proj\.(weight|bias)", n) for n in backbone_names)
    assert len(backbone_names) == 2 * 3
    head = sum(p.numel() for n, p in trainable.items() if n.startswith("head."))
    assert head == 2 * (2 * DIM) + (2 * DIM * 5 + 5)  # LayerNorm(64) + Linear(64 -> 5)
    assert count_parameters(model)[0] == 3 * (DIM * DIM + DIM) + head


def test_classification_head_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        ClassificationHead(DIM, 3, pooling="max")


# ---------------------------------------------------------------- UperNet


SIZES = [(28, 28), (42, 42), (56, 56), (70, 70), (98, 98), (112, 112), (224, 224), (42, 70), (98, 56)]


def size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("aux", [False, True], ids=["main", "main+aux"])
def test_upernet_logits_have_the_input_size(tiny_backbone, size, aux):
    model = upernet(tiny_backbone, aux_head=aux)
    x = torch.randn(2, 3, *size)
    model.train()
    out = model(x)
    outs = out if aux else (out,)
    assert [tuple(o.shape) for o in outs] == [(2, NUM_CLASSES, *size)] * (2 if aux else 1)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES, *size)  # eval: main output only


@pytest.mark.parametrize("size", [(28, 28), (42, 70), (112, 98), (224, 224)], ids=size_id)
def test_neck_levels_have_strides_4_8_16_32_of_the_input(tiny_backbone, size):
    model = upernet(tiny_backbone).eval()
    with torch.no_grad():
        levels = model.pyramid(torch.randn(1, 3, *size))
    expected = [(1, DIM, math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in (4, 8, 16, 32)]
    assert [tuple(level.shape) for level in levels] == expected
    assert ViTFeaturePyramid.output_sizes((42, 70)) == [(11, 18), (6, 9), (3, 5), (2, 3)]


def test_decode_head_output_is_at_stride_4(tiny_backbone):
    head = UperNetHead([DIM] * 4, NUM_CLASSES, channels=CHANNELS).eval()
    levels = [torch.randn(2, DIM, math.ceil(28 / s), math.ceil(56 / s)) for s in (4, 8, 16, 32)]  # 7x14 ... 1x2
    with torch.no_grad():
        assert head(levels).shape == (2, NUM_CLASSES, 7, 14)


def test_upernet_features_follow_the_block_indices(tiny_backbone):
    model = upernet(tiny_backbone, indices=[3, 1, 1, -1]).eval()
    assert model.indices == [3, 1, 1, 3]
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        features = model.features(x)
        reference = model.backbone.forward_intermediates(x, indices=[1, 3], norm=True, intermediates_only=True)
    assert [tuple(f.shape) for f in features] == [(1, DIM, 2, 3)] * 4
    for got, want in zip(features, [reference[1], reference[0], reference[0], reference[1]]):
        torch.testing.assert_close(got, want)


def test_feature_indices_defaults_and_validation():
    assert resolve_feature_indices(12) == [2, 5, 8, 11]
    assert resolve_feature_indices(24) == [4, 11, 17, 23]
    assert resolve_feature_indices(40) == [9, 19, 29, 39]
    assert resolve_feature_indices(3) == [0, 1, 2, 2]  # fewer than 4 blocks: the last one repeats
    assert resolve_feature_indices(6, [-1, 0, 2, -3]) == [5, 0, 2, 3]
    with pytest.raises(ValueError, match="exactly 4 block indices"):
        resolve_feature_indices(12, [2, 5, 8])
    with pytest.raises(ValueError, match=r"\[12\] out of range for a backbone of depth 12"):
        resolve_feature_indices(12, [2, 5, 8, 12])


def test_upernet_rejects_inputs_that_are_not_patch_multiples(tiny_backbone):
    model = upernet(tiny_backbone).eval()
    with pytest.raises(ValueError, match="multiple of the ViT patch size 14.*nearest valid sizes: 28 or 42"):
        model(torch.randn(1, 3, 28, 32))


def test_upernet_gradients_reach_backbone_neck_and_both_heads(tiny_backbone):
    model = upernet(tiny_backbone, aux_head=True).train()
    main, aux = model(torch.randn(2, 3, 42, 56))
    (main.square().mean() + 0.4 * aux.square().mean()).backward()
    for prefix in ("backbone.", "neck.", "decode_head.", "aux_head."):
        params = {n: p for n, p in model.named_parameters() if n.startswith(prefix)}
        assert params, prefix
        no_grad = [n for n, p in params.items() if p.grad is None or p.grad.abs().sum() == 0]
        assert no_grad == [], no_grad


def test_upernet_with_apla_trains_only_wo_and_the_heads(tiny_backbone):
    model = apply_peft(upernet(tiny_backbone, aux_head=True), "apla", backbone="backbone").train()
    trainable = trainable_parameters(model)
    backbone_names = sorted(n for n in trainable if n.startswith("backbone."))
    assert backbone_names == sorted(
        f"backbone.blocks.{i}.attn.proj.{k}" for i in range(DEPTH) for k in ("weight", "bias")
    )
    assert all(n.startswith(("backbone.", *HEAD_PREFIXES)) for n in trainable)
    heads = {n for n, _ in model.named_parameters() if n.startswith(HEAD_PREFIXES)}
    assert heads <= set(trainable)  # every head parameter trains
    assert count_parameters(model)[0] == DEPTH * (DIM * DIM + DIM) + sum(
        p.numel() for n, p in model.named_parameters() if n in heads
    )
    main, aux = model(torch.randn(2, 3, 28, 28))
    (main.mean() + aux.mean()).backward()
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in backbone_names)


def test_upernet_trains_on_a_single_image_with_group_norm(tiny_backbone):
    model = upernet(tiny_backbone, aux_head=True, norm="group").train()
    assert isinstance(model.decode_head.fuse[1], nn.GroupNorm)
    assert model.decode_head.fuse[1].num_groups == 8  # gcd(32, 16 // 2): 2 channels per group
    main, aux = model(torch.randn(1, 3, 28, 42))
    assert main.shape == aux.shape == (1, NUM_CLASSES, 28, 42)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_make_norm_variants_and_callable():
    assert isinstance(make_norm("batch", 16), nn.BatchNorm2d)
    assert make_norm("group", 512).num_groups == 32
    assert isinstance(make_norm(lambda c: nn.GroupNorm(1, c), 16), nn.GroupNorm)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        make_norm("layer", 16)


def test_aux_output_feeds_monai_deep_supervision_loss_with_mmseg_weights(tiny_backbone):
    model = upernet(tiny_backbone, aux_head=True).train()
    label = torch.randint(0, NUM_CLASSES, (2, 1, 28, 28))
    main, aux = model(torch.randn(2, 3, 28, 28))
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = DeepSupervisionLoss(base, weights=[1.0, 0.4])((main, aux), label)
    torch.testing.assert_close(loss, base(main, label) + 0.4 * base(aux, label))
