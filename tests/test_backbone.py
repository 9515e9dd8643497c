"""DINOv2 backbone factory: offline weights in official and timm formats, errors, multi-scale features."""

from __future__ import annotations

import warnings

import pytest
import torch

from essa_monai.backbone import (
    DINOV2_BACKBONES,
    BackboneWeightsError,
    check_patch_multiple,
    create_backbone,
    default_feature_indices,
)

TINY = dict(embed_dim=32, depth=3, num_heads=2)


def to_official_format(state: dict[str, torch.Tensor], giant: bool, registers: bool) -> dict[str, torch.Tensor]:
    """Rename a timm DINOv2 state dict to the facebookresearch/dinov2 release's keys."""
    official = {}
    for key, value in state.items():
        if giant:
            key = key.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")
        official[key] = value.clone()
    official["mask_token"] = torch.randn(1, state["cls_token"].shape[-1])
    if registers:
        # official: pos_embed has a CLS slot and register_tokens; timm folds the CLS slot into cls_token
        official["register_tokens"] = official.pop("reg_token")
        cls_slot = torch.randn(1, 1, state["cls_token"].shape[-1])
        official["pos_embed"] = torch.cat([cls_slot, state["pos_embed"]], dim=1)
        official["cls_token"] = state["cls_token"] - cls_slot
    return official


@pytest.mark.parametrize(
    "name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2", "vit_giant_patch14_dinov2"]
)
def test_official_format_state_dict_loads_with_matching_outputs(tiny_backbone, tmp_path, name):
    reference = tiny_backbone(name).eval()
    official = to_official_format(reference.state_dict(), giant="giant" in name, registers="reg4" in name)
    assert "mask_token" in official and ("register_tokens" in official) == ("reg4" in name)
    assert any(".mlp.w12." in k for k in official) == ("giant" in name)
    if "reg4" in name:  # timm computes cls_token + CLS pos slot; make the reference hold exactly that sum
        with torch.no_grad():
            reference.cls_token.copy_(official["cls_token"] + official["pos_embed"][:, :1])
    path = tmp_path / "dinov2_tiny_pretrain.pth"
    torch.save(official, path)

    loaded = create_backbone(name, weights=path, img_size=28, **TINY).eval()
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        diff = (reference(x) - loaded(x)).abs().max().item()
    assert diff < 1e-6


def test_timm_format_state_dict_loads_with_matching_outputs(tiny_backbone, tmp_path):
    reference = tiny_backbone().eval()
    path = tmp_path / "timm_backbone.pth"
    torch.save(reference.state_dict(), path)
    loaded = create_backbone("vit_small_patch14_dinov2", weights=str(path), img_size=28, **TINY).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(reference(x), loaded(x))


def test_official_weights_at_518_are_resampled_to_the_requested_grid(tiny_backbone, tmp_path):
    # The official release stores a 37x37 grid (518 px); here a 4x4 grid (56 px) loaded at 28 px (2x2).
    big = tiny_backbone(img_size=56)
    path = tmp_path / "official.pth"
    torch.save(to_official_format(big.state_dict(), giant=False, registers=False), path)
    model = create_backbone("vit_small_patch14_dinov2", weights=path, img_size=28, **TINY)
    assert model.pos_embed.shape == (1, 1 + 2 * 2, 32)
    assert model(torch.randn(1, 3, 70, 98)).shape == (1, 32)


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "dinov2_vits14_pretrain.pth"
    with pytest.raises(FileNotFoundError, match="dinov2_vits14_pretrain.pth"):
        create_backbone("vit_small_patch14_dinov2", weights=missing, img_size=28, **TINY)


def test_weights_of_another_architecture_give_a_clear_error(tiny_backbone, tmp_path):
    wider = tiny_backbone(embed_dim=64, num_heads=2)
    path = tmp_path / "vitb.pth"
    torch.save(wider.state_dict(), path)
    with pytest.raises(BackboneWeightsError, match=r"vitb\.pth.*do not match the architecture vit_small_patch14_dinov2"):
        create_backbone("vit_small_patch14_dinov2", weights=path, img_size=28, **TINY)


def test_registers_checkpoint_into_plain_model_is_rejected(tiny_backbone, tmp_path):
    reg = tiny_backbone("vit_small_patch14_reg4_dinov2")
    path = tmp_path / "reg4.pth"
    torch.save(to_official_format(reg.state_dict(), giant=False, registers=True), path)
    with pytest.raises(BackboneWeightsError, match="reg4.pth"):
        create_backbone("vit_small_patch14_dinov2", weights=path, img_size=28, **TINY)


def test_corrupt_weights_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="corrupt.pth.*cannot be read"):
        create_backbone("vit_small_patch14_dinov2", weights=path, img_size=28, **TINY)


def test_no_weights_warns_loudly():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        create_backbone("vit_small_patch14_dinov2", img_size=28, **TINY)


def test_bad_size_and_name_are_rejected():
    with pytest.raises(ValueError, match="multiple of the ViT patch size 14 px.*nearest valid sizes: 224 or 238"):
        create_backbone("vit_small_patch14_dinov2", img_size=225)
    with pytest.raises(ValueError, match="unknown DINOv2 backbone 'vit_tiny'.*vit_small_patch14_dinov2"):
        create_backbone("vit_tiny")
    with pytest.raises(ValueError, match=r"crop sizes .* got \[224, 100\]; nearest valid sizes: 98 or 112"):
        check_patch_multiple([224, 100], "crop sizes")
    with pytest.raises(ValueError, match="got 224.0"):
        check_patch_multiple(224.0)


def test_every_listed_backbone_builds_with_its_depth():
    for name, depth in DINOV2_BACKBONES.items():
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = create_backbone(name)
        assert len(model.blocks) == depth
        assert model.num_prefix_tokens == (5 if "reg4" in name else 1)


def test_forward_intermediates_gives_patch_grids_for_any_multiple_of_14(tiny_backbone):
    model = tiny_backbone("vit_small_patch14_reg4_dinov2").eval()
    for h, w in [(28, 28), (42, 70), (98, 56)]:
        feats = model.forward_intermediates(
            torch.randn(2, 3, h, w), indices=default_feature_indices(3), intermediates_only=True
        )
        assert [f.shape for f in feats] == [(2, 32, h // 14, w // 14)] * 3


def test_default_feature_indices_match_the_usual_choices():
    assert default_feature_indices(12) == [2, 5, 8, 11]
    assert default_feature_indices(24) == [4, 11, 17, 23]
    assert default_feature_indices(40) == [9, 19, 29, 39]
    assert default_feature_indices(8) == [1, 3, 5, 7]
    assert default_feature_indices(3) == [0, 1, 2]
