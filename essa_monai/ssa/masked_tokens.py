"""iBOT masking inside a timm ViT: replace masked patch embeddings by a learned mask token.

DINOv2 swaps masked patch embeddings for its ``mask_token`` before adding positional embeddings; a
timm ViT has no mask token (timm drops it when converting DINOv2 weights), so the SSA model owns one
and this context manager hooks it into ``patch_embed`` for one forward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["masked_patch_embedding"]


@contextmanager
def masked_patch_embedding(backbone: nn.Module, masks: torch.Tensor | None, mask_token: torch.Tensor) -> Iterator[None]:
    """While active, ``backbone.patch_embed`` outputs ``mask_token`` at masked patches.

    Args:
        backbone: a timm ViT.
        masks: bool (B, N) with N = (H/14)*(W/14) patches in row-major order, or ``None`` (no-op).
        mask_token: (1, D) or (D,) learned embedding.
    """
    if masks is None:
        yield
        return

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        # out: (B, H, W, D) with dynamic_img_size, else (B, N, D)
        if masks.numel() != out[..., 0].numel():
            raise ValueError(f"mask of shape {tuple(masks.shape)} does not fit {tuple(out.shape[:-1])} patches")
        m = masks.reshape(out.shape[:-1]).unsqueeze(-1)
        return torch.where(m, mask_token.reshape(-1).to(out.dtype), out)

    handle = backbone.patch_embed.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
