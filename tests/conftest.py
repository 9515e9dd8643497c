"""Shared fixtures: tiny random-init DINOv2-architecture ViTs (embed dim 32, depth 3, 28 px)."""

from __future__ import annotations

import warnings

import pytest
import torch

from essa_monai.backbone import create_backbone

TINY = dict(embed_dim=32, depth=3, num_heads=2)


def make_tiny_backbone(name: str = "vit_small_patch14_dinov2", seed: int = 0, img_size: int = 28, **kwargs):
    """A random-init timm DINOv2 ViT with embed dim 32, depth 3 (or as overridden), seeded."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return create_backbone(name, img_size=img_size, **{**TINY, **kwargs})


@pytest.fixture
def tiny_backbone():
    return make_tiny_backbone
