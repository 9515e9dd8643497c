"""Normalisation, patch-multiple resizing, the image/mask shape check and the full chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import Compose
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from essa_monai.data import (
    LoadImage2Dd,
    NormalizeForBackbone,
    NormalizeForBackboned,
    ResizeToPatchMultiple,
    ResizeToPatchMultipled,
    backbone_mean_std,
    build_dataset,
    isic2018_task1_datalist,
    make_backbone_transforms,
    make_demo_data,
    patch_multiple_size,
)


@pytest.fixture(scope="module")
def isic_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, seed=0, parts=("isic2018",), isic_task1=(4, 1, 1), isic_task3_per_class=(1, 1))
    return out / "isic2018"


def test_normalize_uses_imagenet_mean_and_std_per_channel():
    image = torch.full((3, 4, 5), 0.5)
    out = NormalizeForBackbone()(image)
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-6)
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, 4, 5)


def test_normalize_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expected 3 channels"):
        NormalizeForBackbone()(torch.zeros(1, 4, 4))


def test_backbone_mean_std_reads_timm_dinov2_config():
    mean, std = backbone_mean_std("vit_small_patch14_dinov2.lvd142m")
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    assert backbone_mean_std() == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))


@pytest.mark.parametrize(
    "shape, size, expected",
    [((100, 150), None, (98, 154)), ((5, 300), None, (14, 294)), ((100, 150), 224, (224, 224)),
     ((100, 150), (112, 168), (112, 168))],
)
def test_patch_multiple_size(shape, size, expected):
    assert patch_multiple_size(shape, 14, size) == expected


def test_patch_multiple_size_rejects_non_multiples():
    with pytest.raises(ValueError, match="multiples of patch_size=14"):
        ResizeToPatchMultiple(spatial_size=225)


def test_resize_rounds_each_side_to_a_multiple_of_14():
    out = ResizeToPatchMultiple()(torch.rand(3, 100, 150))
    assert tuple(out.shape) == (3, 98, 154)


@pytest.mark.parametrize("height, width", [(90, 120), (500, 420)])  # up- and downsampling
def test_mask_resized_with_nearest_keeps_binary_values_and_area(height, width):
    mask = torch.zeros(1, height, width)
    mask[:, height // 5 : height * 3 // 4, width // 4 : width * 3 // 4] = 1.0
    image = torch.rand(3, height, width)
    out = ResizeToPatchMultipled(keys=("image", "label"), spatial_size=224, mode=("bilinear", "nearest"))(
        {"image": image, "label": mask}
    )
    assert tuple(out["image"].shape) == (3, 224, 224) and tuple(out["label"].shape) == (1, 224, 224)
    assert sorted(torch.unique(out["label"]).tolist()) == [0.0, 1.0]
    assert float(out["label"].mean()) == pytest.approx(float(mask.mean()), abs=0.01)


def test_backbone_chain_on_isic_pair_gives_model_ready_tensors(isic_root):
    item = isic2018_task1_datalist(isic_root, "train")[0]
    raw_mask = np.asarray(Image.open(item["label"])) > 127
    out = make_backbone_transforms("image", "label", spatial_size=224)(item)
    image, label = out["image"], out["label"]
    assert tuple(image.shape) == (3, 224, 224) and image.dtype == torch.float32
    assert tuple(label.shape) == (1, 224, 224)
    assert sorted(torch.unique(label).tolist()) == [0.0, 1.0]
    assert float(label.mean()) == pytest.approx(raw_mask.mean(), abs=0.02)
    # normalised: a [0, 1] image maps into [(0 - mean) / std, (1 - mean) / std] per channel
    low = torch.tensor([-m / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    high = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    assert bool((image.amin(dim=(1, 2)) >= low - 1e-5).all() and (image.amax(dim=(1, 2)) <= high + 1e-5).all())
    assert isinstance(image, MetaTensor) and image.meta["filename_or_obj"] == item["image"]


def test_dict_chain_composes_like_a_bundle_config(isic_root):
    items = isic2018_task1_datalist(isic_root, "train")
    transform = Compose([
        LoadImage2Dd(keys="image"),
        ResizeToPatchMultipled(keys="image", spatial_size=(112, 140)),
        NormalizeForBackboned(keys="image"),
    ])
    dataset = build_dataset(items, transform, cache_rate=1.0)
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert len(dataset) == 4
    assert tuple(batch["image"].shape) == (2, 3, 112, 140)
    assert batch["id"] == [items[0]["id"], items[1]["id"]]


def test_bundle_config_builds_the_chain_from_target_names(isic_root):
    from monai.bundle import ConfigParser

    config = {
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "essa_monai.data.LoadImage2Dd", "keys": "image"},
            {"_target_": "essa_monai.data.LoadMask2Dd", "keys": "label"},
            {"_target_": "essa_monai.data.CheckSameSpatialShaped", "keys": ["image", "label"]},
            {"_target_": "essa_monai.data.ResizeToPatchMultipled", "keys": ["image", "label"], "spatial_size": 98,
             "mode": ["bilinear", "nearest"]},
            {"_target_": "essa_monai.data.NormalizeForBackboned", "keys": "image"},
        ]}
    }
    transform = ConfigParser(config).get_parsed_content("preprocessing")
    out = transform(isic2018_task1_datalist(isic_root, "validation")[0])
    assert tuple(out["image"].shape) == (3, 98, 98) and tuple(out["label"].shape) == (1, 98, 98)
    assert sorted(torch.unique(out["label"]).tolist()) == [0.0, 1.0]
