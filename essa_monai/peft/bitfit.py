"""BitFit: train bias terms only (Ben Zaken et al., 2022)."""

from __future__ import annotations

import dataclasses

from torch import nn

from .base import PeftConfig, register_peft

__all__ = ["BitFitConfig"]

#: scope -> predicate on a parameter's dotted name (e.g. ``blocks.0.attn.qkv.bias``)
_SCOPES = {
    "all": lambda name: True,
    "attention": lambda name: ".attn." in f".{name}",
    "mlp": lambda name: ".mlp." in f".{name}",
}


@register_peft("bitfit")
@dataclasses.dataclass
class BitFitConfig(PeftConfig):
    """Options of BitFit.

    Attributes:
        scope: which biases to train: ``"all"`` (every bias, LayerNorms and patch embedding included),
            ``"attention"`` (``attn.qkv``/``attn.proj``) or ``"mlp"`` (``mlp.fc1``/``mlp.fc2``).
    """

    scope: str = "all"

    def __post_init__(self) -> None:
        if self.scope not in _SCOPES:
            raise ValueError(f"BitFit scope must be one of {sorted(_SCOPES)}, got {self.scope!r}")

    def inject(self, model: nn.Module) -> None:
        in_scope = _SCOPES[self.scope]
        biases = [p for name, p in model.named_parameters() if name.endswith("bias") and in_scope(name)]
        if not biases:
            raise ValueError(f"BitFit (scope={self.scope!r}) found no bias in {type(model).__name__}")
        for p in biases:
            p.requires_grad_(True)
