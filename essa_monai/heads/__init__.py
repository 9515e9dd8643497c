"""Task heads on DINOv2 ViT backbones, kept outside ``backbone`` so PEFT leaves them trainable.

* :class:`ViTClassifier` / :class:`ClassificationHead`: DINOv2-style linear classification on the
  CLS token, the patch-token mean, or both (images (B, 3, H, W) -> logits (B, K)).
* :class:`ViTUperNet`: UperNet segmentation (neck to strides 4/8/16/32, PPM + FPN + fuse, optional
  auxiliary FCN head); images (B, 3, H, W) -> logits (B, K, H, W).

Both expose ``backbone``, so ``apply_peft(model, method, backbone="backbone")`` adapts the ViT only.
"""

from __future__ import annotations

from .classification import POOLINGS, ClassificationHead, ViTClassifier, pool_tokens
from .upernet import (
    NORMS,
    FCNHead,
    PyramidPoolingModule,
    UperNetHead,
    ViTFeaturePyramid,
    ViTUperNet,
    make_norm,
    resolve_feature_indices,
)

__all__ = [
    "POOLINGS",
    "ClassificationHead",
    "ViTClassifier",
    "pool_tokens",
    "NORMS",
    "FCNHead",
    "PyramidPoolingModule",
    "UperNetHead",
    "ViTFeaturePyramid",
    "ViTUperNet",
    "make_norm",
    "resolve_feature_indices",
]
