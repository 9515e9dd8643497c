"""Optimizer parameter groups for supervised adaptation: PEFT tensors and heads at their own rates."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..optim import uses_weight_decay

__all__ = ["sa_parameter_groups"]


def sa_parameter_groups(
    model: nn.Module,
    lr: float,
    head_lr: float | None = None,
    weight_decay: float = 0.05,
    backbone: str = "backbone",
) -> list[dict[str, Any]]:
    """Groups of the trainable parameters of ``model`` (a network whose ``backbone`` submodule carries PEFT).

    Returns up to four groups: backbone (PEFT) tensors at ``lr`` and heads at ``head_lr`` (default
    ``lr``), each split into with/without weight decay (no decay for biases, norms, tokens, positional
    embeddings). Each group carries ``name``, so schedulers and logs can tell them apart.
    """
    from .network import unwrap_network

    model = unwrap_network(model)
    head_lr = lr if head_lr is None else head_lr
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    prefix = backbone + "."
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if name.startswith(prefix) else "head"
        decay = uses_weight_decay(name, p)
        groups.setdefault((part, decay), []).append(p)
    if not groups:
        raise ValueError("no trainable parameters: apply PEFT (or 'full') and keep the heads trainable")
    return [
        {
            "name": f"{part}{'' if decay else '_no_decay'}",
            "params": params,
            "lr": lr if part == "backbone" else head_lr,
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (part, decay), params in sorted(groups.items())
    ]
