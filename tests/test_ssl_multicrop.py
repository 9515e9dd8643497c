"""Multi-crop augmentation (shapes, dtypes, grayscale handling, validation) and its collate."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from essa_monai.ssl import MultiCropAugmentation, MultiCropCollator, MultiCropd, collate_multicrop

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


def _small_aug(**kwargs) -> MultiCropAugmentation:
    return MultiCropAugmentation(global_crops_size=56, local_crops_size=28, local_crops_number=3, **kwargs)


@pytest.mark.parametrize("channels", [1, 3])
def test_multicrop_default_sizes_give_224_global_and_98_local_rgb_crops(channels):
    torch.manual_seed(0)
    out = MultiCropAugmentation()(torch.rand(channels, 240, 256))
    assert set(out) == {"global_crops", "local_crops"}
    assert [tuple(c.shape) for c in out["global_crops"]] == [(3, 224, 224)] * 2
    assert [tuple(c.shape) for c in out["local_crops"]] == [(3, 98, 98)] * 8
    assert all(c.dtype == torch.float32 for c in out["global_crops"] + out["local_crops"])


@pytest.mark.parametrize("channels", [1, 3])
def test_multicrop_normalises_with_imagenet_statistics(channels):
    # black stays black under jitter, grayscale, blur and solarize, so every crop is (0 - mean) / std
    out = _small_aug()(torch.zeros(channels, 64, 80))
    expected = ((0.0 - MEAN) / STD).expand(3, 56, 56)
    for crop in out["global_crops"]:
        torch.testing.assert_close(crop, expected)
    torch.testing.assert_close(out["local_crops"][0], ((0.0 - MEAN) / STD).expand(3, 28, 28))


def test_grayscale_input_gives_gray_rgb_crops():
    torch.manual_seed(1)
    out = _small_aug()(torch.rand(1, 64, 64))
    for crop in out["global_crops"] + out["local_crops"]:
        pixels = crop * STD + MEAN  # back to [0, 1]
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        torch.testing.assert_close(pixels[0], pixels[1], atol=1e-4, rtol=0)
        torch.testing.assert_close(pixels[0], pixels[2], atol=1e-4, rtol=0)


def test_multicrop_accepts_pil_uint8_and_metatensor_images():
    torch.manual_seed(2)
    aug = _small_aug()
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 60, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    for image in (rgb, gray, torch.randint(0, 256, (3, 50, 50), dtype=torch.uint8), MetaTensor(torch.rand(1, 50, 50))):
        out = aug(image)
        assert tuple(out["global_crops"][1].shape) == (3, 56, 56)
        assert tuple(out["local_crops"][2].shape) == (3, 28, 28)
        assert type(out["global_crops"][0]) is torch.Tensor


@pytest.mark.parametrize(
    "kwargs, name",
    [({"global_crops_size": 100}, "global_crops_size"), ({"local_crops_size": 96}, "local_crops_size")],
)
def test_crop_size_not_a_multiple_of_patch_size_is_rejected(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be a positive multiple of the ViT patch size 14 px"):
        MultiCropAugmentation(**kwargs)


def test_bad_inputs_and_scales_are_rejected():
    with pytest.raises(ValueError, match="global_crops_scale"):
        MultiCropAugmentation(global_crops_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"C = 1 or 3"):
        _small_aug()(torch.rand(2, 32, 32))
    with pytest.raises(TypeError, match="float tensor"):
        _small_aug()(torch.ones(3, 32, 32, dtype=torch.int32))


def _fake_sample(value: float, n_local: int = 3) -> dict[str, list[torch.Tensor]]:
    return {
        "global_crops": [torch.full((3, 56, 56), value + v) for v in (0.0, 0.5)],
        "local_crops": [torch.full((3, 28, 28), value + 10 * (v + 1)) for v in range(n_local)],
    }


def test_collate_stacks_crops_view_major_with_ibot_masks():
    samples = [_fake_sample(float(i)) for i in range(3)]  # B = 3
    batch = collate_multicrop(samples, with_masks=True, rng=random.Random(0))
    assert batch["global_crops"].shape == (6, 3, 56, 56)
    assert batch["local_crops"].shape == (9, 3, 28, 28)
    # rows [v * B:(v + 1) * B] are view v of images 0..B-1
    assert batch["global_crops"][:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.5, 1.5, 2.5]
    assert batch["local_crops"][:, 0, 0, 0].tolist() == [10.0, 11.0, 12.0, 20.0, 21.0, 22.0, 30.0, 31.0, 32.0]
    masks = batch["masks"]
    assert masks.shape == (6, (56 // 14) ** 2) and masks.dtype == torch.bool
    assert int((masks.sum(dim=1) > 0).sum()) == 3  # half of the 6 global crops
    assert batch["masks_weight"].shape == batch["mask_indices"].shape == (int(masks.sum()),)


def test_collate_accepts_labelled_samples_and_no_local_crops():
    samples = [(_fake_sample(0.0, n_local=0), 7), (_fake_sample(1.0, n_local=0), 8)]  # (crops, label)
    batch = collate_multicrop(samples, dtype=torch.bfloat16)
    assert batch["global_crops"].shape == (4, 3, 56, 56) and batch["global_crops"].dtype == torch.bfloat16
    assert batch["local_crops"] is None
    assert "masks" not in batch


def test_collator_with_augmentation_end_to_end_and_picklable():
    torch.manual_seed(3)
    aug = _small_aug()
    collator = pickle.loads(pickle.dumps(MultiCropCollator(with_masks=True)))
    batch = collator([aug(torch.rand(1, 64, 64)) for _ in range(2)])
    assert batch["global_crops"].shape == (4, 3, 56, 56)
    assert batch["local_crops"].shape == (6, 3, 28, 28)
    assert batch["masks"].shape == (4, 16)


def test_multicropd_replaces_image_key_by_crops():
    torch.manual_seed(4)
    transform = MultiCropd(keys="image", global_crops_size=28, local_crops_size=14, local_crops_number=2)
    out = transform({"image": MetaTensor(torch.rand(1, 40, 40)), "label": 3})
    assert "image" not in out and out["label"] == 3
    assert [tuple(c.shape) for c in out["global_crops"]] == [(3, 28, 28)] * 2
    assert [tuple(c.shape) for c in out["local_crops"]] == [(3, 14, 14)] * 2
    with pytest.raises(ValueError, match="exactly one image key"):
        MultiCropd(keys=["image", "other"])
