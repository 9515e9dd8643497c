"""UperNet segmentation for plain (single-scale) ViTs, as mmseg's UperNet on BEiT/ViT-Adapter.

Data flow for an input of H x W pixels (both multiples of the patch size, 14) and a backbone of
embedding size D::

    backbone.forward_intermediates  4 blocks -> 4 maps (B, D, H/14, W/14)              (stride 14)
    ViTFeaturePyramid (neck)        -> (B, D, ceil(H/s), ceil(W/s)) for s = 4, 8, 16, 32
    UperNetHead                     PPM on stride 32 + FPN + fuse -> (B, K, ceil(H/4), ceil(W/4))
    ViTUperNet                      bilinear resize -> (B, K, H, W) logits
    FCNHead (optional, training)    on stride 16 -> (B, K, H, W) auxiliary logits

Neck design (:class:`ViTFeaturePyramid`). A ViT has one grid of stride 14 (one token per 14 x 14
patch), not the strides 4/8/16/32 a UperNet expects. Each of the four maps is first resampled by a
fixed factor, as in the BEiT/ViT-Adapter necks:

* level 0: ``ConvTranspose2d(2, stride 2) - Norm - GELU - ConvTranspose2d(2, stride 2)`` (x4, stride 3.5);
* level 1: ``ConvTranspose2d(2, stride 2)`` (x2, stride 7);
* level 2: identity (stride 14);
* level 3: ``MaxPool2d(2, stride 2, ceil_mode=True)`` (/2, stride 28).

Because 14 is not a power of two, these maps are 8/7 larger than the target stride (e.g. 32 x 32
instead of 28 x 28 at stride 4 for a 112 px input), so each is then resized with bilinear
interpolation (``align_corners=False``) to exactly ``(ceil(H/s), ceil(W/s))`` for its stride ``s``
(the size a stride-``s`` CNN feature map has). The neck keeps D channels.

Head (:class:`UperNetHead`, after mmseg's ``UPerHead``): a pyramid pooling module (adaptive average
pooling to 1, 2, 3, 6 cells, 1x1 conv each, upsampled and concatenated with the input, 3x3 conv) on
the stride-32 level; 1x1 lateral convs on the other levels; a top-down pathway (each level plus the
upsampled coarser one); 3x3 FPN convs; all four levels upsampled to stride 4, concatenated and fused
by a 3x3 conv; dropout and a 1x1 classifier conv. Every conv except the classifier is
``Conv (no bias) - Norm - ReLU`` with ``channels`` outputs.

Normalisation (``norm``): BatchNorm by default; BatchNorm cannot train on a batch of one image (the
1x1 pooled map of the PPM then has a single value per channel), so use ``norm="group"`` there.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import check_patch_multiple, default_feature_indices
from .classification import _embed_dim

__all__ = [
    "NORMS",
    "FCNHead",
    "PyramidPoolingModule",
    "UperNetHead",
    "ViTFeaturePyramid",
    "ViTUperNet",
    "make_norm",
    "resolve_feature_indices",
]

NormSpec = Union[str, Callable[[int], nn.Module]]
#: Names accepted by ``norm`` arguments (a callable ``channels -> nn.Module`` is accepted as well).
NORMS = ("batch", "sync_batch", "group", "instance")


def make_norm(norm: NormSpec, channels: int) -> nn.Module:
    """A 2D normalisation layer for ``channels`` channels.

    Args:
        norm: ``"batch"`` (``BatchNorm2d``), ``"sync_batch"`` (``SyncBatchNorm``, for DDP), ``"group"``
            (``GroupNorm`` with ``gcd(32, channels // 2)`` groups: 32 groups for 512 channels, and at
            least 2 channels per group), ``"instance"`` (affine ``InstanceNorm2d``), or a callable
            ``channels -> nn.Module``.
        channels: number of channels C of the (B, C, H, W) input.
    """
    if callable(norm):
        return norm(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "sync_batch":
        return nn.SyncBatchNorm(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, max(channels // 2, 1)), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}, or pass a callable")


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias, 'same' padding) - norm - ReLU: (B, C_in, h, w) -> (B, C_out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: NormSpec = "batch"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ViTFeaturePyramid(nn.Module):
    """Neck turning four stride-14 ViT maps into a stride 4/8/16/32 pyramid (see the module docstring).

    Args:
        embed_dim: channels D of the ViT maps (kept by the neck).
        norm: normalisation between the two transposed convs of level 0 (see :func:`make_norm`).

    Shapes: ``forward(features, image_size)`` with four (B, D, h, w) maps (h = H/14, w = W/14) and
    ``image_size = (H, W)`` in pixels -> four (B, D, ceil(H/s), ceil(W/s)) maps for s = 4, 8, 16, 32.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, embed_dim: int, norm: NormSpec = "batch"):
        super().__init__()
        d = embed_dim
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(d, d, kernel_size=2, stride=2),
            make_norm(norm, d),
            nn.GELU(),
            nn.ConvTranspose2d(d, d, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(d, d, kernel_size=2, stride=2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)

    @classmethod
    def output_sizes(cls, image_size: Sequence[int]) -> list[tuple[int, int]]:
        """(height, width) in cells of the four pyramid levels for an (H, W) image."""
        height, width = image_size
        return [(math.ceil(height / s), math.ceil(width / s)) for s in cls.strides]

    def forward(self, features: Sequence[torch.Tensor], image_size: Sequence[int]) -> list[torch.Tensor]:
        if len(features) != 4:
            raise ValueError(f"ViTFeaturePyramid needs 4 feature maps, got {len(features)}")
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return [_resize(op(f), size) for op, f, size in zip(ops, features, self.output_sizes(image_size))]


class PyramidPoolingModule(nn.Module):
    """PSPNet's pyramid pooling: (B, C_in, h, w) -> (B, C_in + len(pool_scales) * channels, h, w).

    For each scale s: adaptive average pooling to s x s cells, ``ConvNormAct`` 1x1 to ``channels``,
    bilinear upsampling back to h x w; the results are concatenated after the input.
    """

    def __init__(
        self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6), norm: NormSpec = "batch"
    ):
        super().__init__()
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvNormAct(in_channels, channels, 1, norm))
            for s in self.pool_scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(_resize(stage(x), size) for stage in self.stages)], dim=1)


class UperNetHead(nn.Module):
    """UperNet decode head (PPM + FPN + fuse), after mmseg's ``UPerHead``.

    Args:
        in_channels: channels of the four pyramid levels, finest first (``[D] * 4`` after the neck).
        num_classes: number of output logits K.
        channels: width of every internal conv (mmseg: 512).
        pool_scales: PPM output sizes on the coarsest level.
        norm: normalisation of every ``ConvNormAct`` (see :func:`make_norm`).
        dropout: ``Dropout2d`` probability before the classifier (mmseg: 0.1).

    Shapes: ``forward(features)`` with levels (B, C_i, h_i, w_i), finest first -> (B, K, h_0, w_0)
    logits at the finest level's resolution (stride 4).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: NormSpec = "batch",
        dropout: float = 0.1,
    ):
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) < 2:
            raise ValueError(f"UperNetHead needs at least 2 levels, got in_channels={in_channels}")
        self.ppm = PyramidPoolingModule(in_channels[-1], channels, pool_scales, norm)
        self.ppm_bottleneck = ConvNormAct(in_channels[-1] + len(self.ppm.pool_scales) * channels, channels, 3, norm)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1, norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, norm) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.lateral_convs) + 1:
            raise ValueError(f"UperNetHead expects {len(self.lateral_convs) + 1} levels, got {len(features)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        laterals.append(self.ppm_bottleneck(self.ppm(features[-1])))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the upsampled coarser level
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))
        return self.classifier(self.dropout(fused))


class FCNHead(nn.Module):
    """Auxiliary FCN head (mmseg's ``FCNHead`` with one conv, as UperNet's auxiliary head).

    ``ConvNormAct`` 3x3 to ``channels``, ``Dropout2d``, 1x1 classifier: (B, C_in, h, w) -> (B, K, h, w).
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 256, norm: NormSpec = "batch", dropout: float = 0.1
    ):
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def resolve_feature_indices(depth: int, indices: Sequence[int] | None = None) -> list[int]:
    """The four block indices (0-based, in [0, depth)) whose outputs feed the pyramid, finest level first.

    ``None`` gives :func:`essa_monai.backbone.default_feature_indices` (``[2, 5, 8, 11]`` for depth 12);
    for a backbone of fewer than 4 blocks the last block is repeated (``[0, 1, 2, 2]`` for depth 3).
    Negative indices count from the end. Indices may repeat.
    """
    if indices is None:
        indices = default_feature_indices(depth)
        indices = list(indices) + [depth - 1] * (4 - len(indices))
    indices = [int(i) for i in indices]
    if len(indices) != 4:
        raise ValueError(f"UperNet needs exactly 4 block indices (strides 4, 8, 16, 32), got {indices}")
    bad = [i for i in indices if not -depth <= i < depth]
    if bad:
        raise ValueError(f"block indices {bad} out of range for a backbone of depth {depth}")
    return [i % depth for i in indices]


class ViTUperNet(nn.Module):
    """A timm ViT with the UperNet head: images (B, 3, H, W) -> logits (B, K, H, W).

    H and W may be any multiples of the patch size (14), square or not (e.g. 28, 42, 98, 224, 518).

    Attributes:
        backbone: the ViT. ``apply_peft(model, method, backbone="backbone")`` adapts it and leaves
            ``neck``, ``decode_head`` and ``aux_head`` trainable.
        indices: the four block indices read by ``forward_intermediates``.
        neck: :class:`ViTFeaturePyramid`.
        decode_head: :class:`UperNetHead`.
        aux_head: :class:`FCNHead` on the stride-16 level, or ``None``.

    Args:
        backbone: a timm ``VisionTransformer`` (``dynamic_img_size=True``, as ``create_backbone`` builds).
        num_classes: number of output channels K (logits; include the background class).
        indices: four block indices (see :func:`resolve_feature_indices`); ``None`` for the defaults.
        channels: width of the UperNet convs (512 in mmseg; smaller for small backbones).
        aux_head: add the auxiliary FCN head. In training mode ``forward`` then returns
            ``(main, aux)``, both (B, K, H, W); in eval mode only ``main``. Weight the losses as mmseg
            does (1.0 and 0.4), e.g. ``monai.losses.DeepSupervisionLoss(DiceCELoss(...), weights=[1.0, 0.4])``,
            which accepts the tuple.
        pool_scales: PPM scales.
        norm: normalisation of the neck and heads (``"batch"``, ``"group"`` for batch size 1, ...).
        dropout: ``Dropout2d`` before the classifiers.
        aux_channels: width of the auxiliary head's conv.
        norm_features: apply the backbone's final ``LayerNorm`` to the intermediate features (as
            DINOv2's ``get_intermediate_layers(norm=True)``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        indices: Sequence[int] | None = None,
        channels: int = 512,
        aux_head: bool = False,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: NormSpec = "batch",
        dropout: float = 0.1,
        aux_channels: int = 256,
        norm_features: bool = True,
    ):
        super().__init__()
        for attr in ("blocks", "forward_intermediates", "patch_embed"):
            if not hasattr(backbone, attr):
                raise ValueError(
                    f"ViTUperNet needs a timm VisionTransformer; {type(backbone).__name__} has no {attr!r}"
                )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        dim = _embed_dim(backbone)
        self.backbone = backbone
        self.indices = resolve_feature_indices(len(backbone.blocks), indices)
        self.norm_features = norm_features
        self.num_classes = num_classes
        self.neck = ViTFeaturePyramid(dim, norm)
        self.decode_head = UperNetHead([dim] * 4, num_classes, channels, pool_scales, norm, dropout)
        self.aux_head = FCNHead(dim, num_classes, aux_channels, norm, dropout) if aux_head else None

    @property
    def patch_size(self) -> int:
        size = self.backbone.patch_embed.patch_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> four (B, D, H/14, W/14) block outputs, in the order of ``indices``."""
        check_patch_multiple(tuple(int(s) for s in x.shape[-2:]), "input height and width", self.patch_size)
        unique = sorted(set(self.indices))
        maps = self.backbone.forward_intermediates(
            x, indices=unique, norm=self.norm_features, stop_early=True, intermediates_only=True
        )
        by_index = dict(zip(unique, maps))
        return [by_index[i] for i in self.indices]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> four (B, D, ceil(H/s), ceil(W/s)) neck outputs for s = 4, 8, 16, 32."""
        return self.neck(self.features(x), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        levels = self.pyramid(x)
        main = _resize(self.decode_head(levels), size)
        if self.aux_head is not None and self.training:
            return main, _resize(self.aux_head(levels[2]), size)
        return main
