"""Baselines: full fine-tuning (every tensor trains) and frozen backbone (linear probe)."""

from __future__ import annotations

import dataclasses

from torch import nn

from .base import PeftConfig, register_peft

__all__ = ["FullConfig", "FrozenConfig"]


@register_peft("full")
@dataclasses.dataclass
class FullConfig(PeftConfig):
    """Full fine-tuning: every backbone tensor is trained (the reference for memory and speed)."""

    def inject(self, model: nn.Module) -> None:
        model.requires_grad_(True)


@register_peft("frozen")
@dataclasses.dataclass
class FrozenConfig(PeftConfig):
    """Frozen backbone: nothing in it trains; only heads outside it do (linear probe)."""

    def inject(self, model: nn.Module) -> None:
        model.requires_grad_(False)
