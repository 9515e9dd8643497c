"""VPT: visual prompt tuning (Jia et al., 2022), shallow or deep, on a timm ViT.

``num_tokens`` learnable prompt tokens are placed right after the CLS and register tokens:
``[CLS, REG..., PROMPTS..., PATCHES...]``. Shallow VPT inserts them once, before the first block; deep
VPT also overwrites them with fresh tokens before every later block (the previous block's prompt
outputs are discarded, as in the paper).

The prompts count as prefix tokens (``model.num_prefix_tokens`` grows by ``num_tokens``), so timm's
``forward_intermediates`` removes them from the patch grid and ``global_pool="token"`` still reads CLS.
timm resamples positional embeddings for dynamic image sizes assuming every prefix token owns a slot in
``pos_embed``; DINOv2 stores a CLS slot only, so the CLS slot is first folded into ``cls_token``
(timm's ``no_embed_class`` layout, the same conversion timm applies to DINOv2 with registers). The
result is numerically the same model.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import torch
from torch import nn

from .base import PeftConfig, register_peft

__all__ = ["VPTConfig", "VisualPrompts"]


class VisualPrompts(nn.Module):
    """Prompt tokens of shape (L, num_tokens, D): L = 1 (shallow) or depth (deep), inserted at ``offset``.

    The module is attached to the ViT as ``model.vpt`` and acts through hooks: a forward hook on
    ``norm_pre`` inserts prompts into the token sequence (B, T, D) -> (B, T + num_tokens, D); for deep
    VPT, a forward pre-hook on block ``i >= 1`` replaces the prompt positions with layer ``i``'s tokens.
    """

    def __init__(self, depth: int, num_tokens: int, dim: int, offset: int, patch_area: int, dropout: float = 0.0):
        super().__init__()
        self.offset, self.num_tokens = offset, num_tokens
        self.tokens = nn.Parameter(torch.empty(depth, num_tokens, dim))
        # VPT's init: uniform in +-sqrt(6 / (3 * patch_h * patch_w + dim))
        bound = math.sqrt(6.0 / (3 * patch_area + dim))
        nn.init.uniform_(self.tokens, -bound, bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _layer(self, index: int, batch: int) -> torch.Tensor:
        return self.dropout(self.tokens[index]).unsqueeze(0).expand(batch, -1, -1)

    def insert_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        prompts = self._layer(0, output.shape[0]).to(output.dtype)
        return torch.cat([output[:, : self.offset], prompts, output[:, self.offset :]], dim=1)

    def replace_hook(self, index: int, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        prompts = self._layer(index, x.shape[0]).to(x.dtype)
        x = torch.cat([x[:, : self.offset], prompts, x[:, self.offset + self.num_tokens :]], dim=1)
        return (x, *args[1:])


@register_peft("vpt")
@dataclasses.dataclass
class VPTConfig(PeftConfig):
    """Options of VPT.

    Attributes:
        num_tokens: prompt tokens per layer. deep: new prompts before every block (else first only).
        dropout: dropout on the prompt tokens.
    """

    num_tokens: int = 10
    deep: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if int(self.num_tokens) <= 0:
            raise ValueError(f"VPT num_tokens must be positive, got {self.num_tokens}")

    def inject(self, model: nn.Module) -> None:
        for attr in ("blocks", "norm_pre", "patch_embed", "num_prefix_tokens", "cls_token"):
            if not hasattr(model, attr):
                raise ValueError(f"VPT needs a timm VisionTransformer; {type(model).__name__} has no '{attr}'")
        if hasattr(model, "vpt"):
            raise ValueError("VPT is already applied to this model")
        if model.pos_embed is not None and not model.no_embed_class and model.cls_token is not None:
            _fold_class_pos_embed(model)
        depth = len(model.blocks)
        dim = model.cls_token.shape[-1]
        ph, pw = model.patch_embed.patch_size
        prompts = VisualPrompts(
            depth if self.deep else 1, int(self.num_tokens), dim, model.num_prefix_tokens, ph * pw, self.dropout
        )
        model.vpt = prompts.to(device=model.cls_token.device, dtype=model.cls_token.dtype)
        model.num_prefix_tokens += int(self.num_tokens)
        model.norm_pre.register_forward_hook(model.vpt.insert_hook)
        if self.deep:
            for i in range(1, depth):
                model.blocks[i].register_forward_pre_hook(partial(model.vpt.replace_hook, i))


@torch.no_grad()
def _fold_class_pos_embed(model: nn.Module) -> None:
    """Move the CLS slot of ``pos_embed`` (1, 1 + N, D) into ``cls_token``; ``pos_embed`` becomes (1, N, D)."""
    pos = model.pos_embed
    model.cls_token.add_(pos[:, :1])
    model.pos_embed = nn.Parameter(pos[:, 1:].clone(), requires_grad=pos.requires_grad)
    model.no_embed_class = True
