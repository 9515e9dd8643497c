"""The SSA student network: a DINOv2 backbone with DINO and iBOT heads and an iBOT mask token."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..peft import apply_peft
from ..ssl import DINOHead
from .masked_tokens import masked_patch_embedding

__all__ = ["SSANetwork"]


class SSANetwork(nn.Module):
    """Backbone + DINO head (+ separate iBOT head) + mask token.

    Args:
        backbone: a timm ViT (see :func:`essa_monai.backbone.create_backbone`).
        n_prototypes: head output size K (DINOv2: 65536).
        hidden_dim, bottleneck_dim: DINO head MLP sizes (DINOv2: 2048, 256).
        separate_ibot_head: give iBOT its own head (DINOv2 ViT-g recipe) instead of sharing the DINO head.
        peft: ``None`` or a PEFT spec (``{"method": "apla", "r": 128}`` or a method name) applied to the
            backbone only; heads and mask token always train.
        grad_checkpointing: recompute block activations in backward (timm's activation checkpointing):
            less memory, more compute.

    ``forward_tokens(x, masks)`` maps images (B, 3, H, W) to normalised CLS tokens (B, D) and patch
    tokens (B, N, D), N = (H/14)(W/14), with masked patches replaced by the mask token before the blocks.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        separate_ibot_head: bool = False,
        peft: str | dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        self.dino_head = DINOHead(dim, n_prototypes, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
        self.ibot_head = (
            DINOHead(dim, n_prototypes, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
            if separate_ibot_head
            else None
        )
        # DINOv2 initialises its mask token to zeros.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        if peft is not None:
            apply_peft(self.backbone, peft)
        backbone.set_grad_checkpointing(grad_checkpointing)

    @property
    def patch_head(self) -> nn.Module:
        """The head used for iBOT patch tokens (the DINO head unless a separate one exists)."""
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with masked_patch_embedding(self.backbone, masks, self.mask_token):
            tokens = self.backbone.forward_features(x)  # (B, prefix + N, D), final norm applied
        return tokens[:, 0], tokens[:, self.backbone.num_prefix_tokens :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLS features (B, D) of the backbone, as used for evaluation (kNN, linear probe)."""
        return self.backbone(x)
