"""Linear classification on ViT tokens, as in DINOv2's linear evaluation.

The backbone's final (normed) token sequence ``[CLS, REG..., PROMPTS..., PATCHES...]`` is pooled into
one feature vector per image, normalised with a ``LayerNorm`` and mapped to class logits by one
``Linear`` layer::

    tokens (B, T, D) --pool--> (B, D) or (B, 2D) --LayerNorm--> --Dropout--> --Linear--> logits (B, K)

Pooling (``pooling``):

* ``"cls"``: the CLS token (token 0), (B, D);
* ``"mean"``: the mean of the patch tokens, (B, D);
* ``"cls+mean"``: both concatenated, ``[cls, mean]``, (B, 2D) (DINOv2's linear probe).

All prefix tokens (CLS, registers and VPT prompts: ``backbone.num_prefix_tokens`` counts them all)
are excluded from the patch mean.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["POOLINGS", "ClassificationHead", "ViTClassifier", "pool_tokens"]

Pooling = Literal["cls", "mean", "cls+mean"]
#: Supported ``pooling`` values and the factor they multiply the embedding dim by.
POOLINGS: dict[str, int] = {"cls": 1, "mean": 1, "cls+mean": 2}


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")


def pool_tokens(tokens: torch.Tensor, num_prefix_tokens: int, pooling: Pooling = "cls+mean") -> torch.Tensor:
    """Pool a ViT token sequence into one vector per image.

    Args:
        tokens: (B, T, D) tokens, prefix tokens first (``[CLS, REG..., PROMPTS..., PATCHES...]``).
        num_prefix_tokens: number of leading non-patch tokens (CLS + registers + VPT prompts); >= 1 for
            ``"cls"`` pooling (the CLS token is token 0).
        pooling: ``"cls"``, ``"mean"`` (mean of the T - num_prefix_tokens patch tokens) or ``"cls+mean"``.

    Returns:
        (B, D) for ``"cls"`` and ``"mean"``, (B, 2D) ``[cls, mean]`` for ``"cls+mean"``.
    """
    _check_pooling(pooling)
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, T, D), got shape {tuple(tokens.shape)}")
    if pooling != "mean" and num_prefix_tokens < 1:
        raise ValueError(f"pooling={pooling!r} needs a CLS token, but the backbone has no prefix tokens")
    if pooling != "cls" and tokens.shape[1] <= num_prefix_tokens:
        raise ValueError(f"no patch tokens to average: {tokens.shape[1]} tokens, {num_prefix_tokens} of them prefix")
    parts = []
    if pooling in ("cls", "cls+mean"):
        parts.append(tokens[:, 0])
    if pooling in ("mean", "cls+mean"):
        parts.append(tokens[:, num_prefix_tokens:].mean(dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class ClassificationHead(nn.Module):
    """Pooling, ``LayerNorm``, optional dropout, ``Linear``: ViT tokens to class logits.

    Args:
        embed_dim: token size D of the backbone (``backbone.embed_dim``, e.g. 384 for ViT-S/14).
        num_classes: number of output logits K.
        pooling: ``"cls"``, ``"mean"`` or ``"cls+mean"`` (see :func:`pool_tokens`).
        dropout: dropout probability before the linear layer (0 disables it).

    Shapes: ``forward(tokens (B, T, D), num_prefix_tokens)`` -> logits (B, K). The linear layer starts
    with weights ~ N(0, 0.01) and zero bias, as DINOv2's linear classifiers.
    """

    def __init__(self, embed_dim: int, num_classes: int, pooling: Pooling = "cls+mean", dropout: float = 0.0):
        super().__init__()
        _check_pooling(pooling)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.pooling = pooling
        self.in_features = embed_dim * POOLINGS[pooling]
        self.num_classes = num_classes
        self.norm = nn.LayerNorm(self.in_features)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_features, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def pool(self, tokens: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
        """(B, T, D) tokens -> (B, in_features) normalised pooled features (before dropout and linear)."""
        return self.norm(pool_tokens(tokens, num_prefix_tokens, self.pooling))

    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(tokens, num_prefix_tokens)))

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


class ViTClassifier(nn.Module):
    """A timm ViT backbone with a :class:`ClassificationHead`: images (B, 3, H, W) -> logits (B, K).

    The backbone's ``forward_features`` gives the final normed tokens; ``backbone.num_prefix_tokens``
    (read at every call, so VPT prompts added later by ``apply_peft`` are excluded from the mean too)
    splits them into prefix and patch tokens. H and W must be multiples of the patch size (14).

    Attributes:
        backbone: the ViT; adapt it with ``apply_peft(model, method, backbone="backbone")``, which
            leaves ``head`` trainable.
        head: the :class:`ClassificationHead`.

    Args:
        backbone: a timm ``VisionTransformer`` (e.g. from :func:`essa_monai.backbone.create_backbone`).
        num_classes: number of logits K (e.g. 7 for ISIC 2018 task 3, 14 for ChestX-ray14).
        pooling: ``"cls"``, ``"mean"`` or ``"cls+mean"``.
        dropout: dropout before the linear layer.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: Pooling = "cls+mean", dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = ClassificationHead(_embed_dim(backbone), num_classes, pooling=pooling, dropout=dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, in_features) pooled, normalised features fed to the linear layer."""
        return self.head.pool(self.backbone.forward_features(x), self.backbone.num_prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x), self.backbone.num_prefix_tokens)


def _embed_dim(backbone: nn.Module) -> int:
    for attr in ("embed_dim", "num_features"):
        value = getattr(backbone, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(backbone).__name__} has no integer 'embed_dim': pass a timm VisionTransformer")
