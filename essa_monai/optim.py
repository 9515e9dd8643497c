"""Optimizer rules SA and SSA share: which parameters get no weight decay, and gradient clipping that
unscales mixed-precision (AMP) gradients first."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["NO_WEIGHT_DECAY", "uses_weight_decay", "clip_gradients"]

#: parameter-name endings trained without weight decay (DINOv2's rule), besides every bias and norm
NO_WEIGHT_DECAY = ("mask_token", "cls_token", "reg_token", "pos_embed", "vpt.tokens")


def uses_weight_decay(name: str, param: nn.Parameter) -> bool:
    """``False`` for biases and norm weights (``ndim <= 1``), tokens and positional embeddings."""
    return not (param.ndim <= 1 or name.endswith(NO_WEIGHT_DECAY))


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None, scaler: Any = None) -> float | None:
    """Clip the global L2 norm of the gradients of ``optimizer``'s parameters to ``max_norm``.

    Call it between ``backward`` and ``optimizer.step``. Under FSDP the norm is taken over all ranks'
    gradient shards. With a ``torch.amp.GradScaler`` (``scaler``),
    the gradients are unscaled first (``scaler.unscale_(optimizer)``), so the norm is measured and
    bounded in the loss's own units; ``scaler.step`` then does not unscale again.

    Returns:
        the total norm before clipping (``inf``/``nan`` when AMP overflowed: ``scaler.step`` then skips
        the step), or ``None`` when ``max_norm`` is ``None`` or ``<= 0`` (no clipping, nothing unscaled).
    """
    if max_norm is None or max_norm <= 0:
        return None
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(total, "full_tensor"):  # a DTensor (FSDP shards): the norm over every rank's shard
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)
