"""LoRA: low-rank updates ``W + (alpha / r) * B @ A`` on chosen linear layers.

MED-PEFT (arXiv 2401.12215) defaults: rank 4, alpha 32, dropout 0.1, on the Q and V thirds of the
fused ``attn.qkv`` projection only. Other targets (``attn.proj``, ``mlp.fc1``, ``mlp.fc2``) get one
update over the whole output. ``B`` starts at zero, so an adapted model starts equal to its base.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import PeftConfig, register_peft, replace_submodule

__all__ = ["LoRAConfig", "LoRALinear"]

QKV = ("q", "k", "v")


class LoRALinear(nn.Linear):
    """``nn.Linear`` (frozen ``weight``/``bias``, same state-dict names) plus LoRA factors.

    Args:
        linear: the base layer (its tensors are reused, not copied).
        r: rank; alpha: scale numerator (update scaled by ``alpha / r``); dropout: on the LoRA input.
        parts: ``("all",)`` for one update over all outputs, or a subset of ``("q", "k", "v")`` for a
            fused qkv layer whose output splits into three equal thirds.

    Factors: ``lora_A[p]`` (r, in), ``lora_B[p]`` (out_p, r). Shapes: (..., in) -> (..., out).
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float, parts: tuple[str, ...]):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", linear.bias)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.parts = parts
        self.fused_qkv = parts != ("all",)
        if self.fused_qkv and self.out_features % 3:
            raise ValueError(f"LoRA on q/k/v needs a fused qkv layer (out divisible by 3), got {self.out_features}")
        self.part_size = self.out_features // 3 if self.fused_qkv else self.out_features
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.lora_A = nn.ParameterDict({p: nn.Parameter(torch.empty(r, self.in_features, **factory)) for p in parts})
        self.lora_B = nn.ParameterDict({p: nn.Parameter(torch.zeros(self.part_size, r, **factory)) for p in parts})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.merged = False

    def _slice(self, part: str) -> slice:
        start = QKV.index(part) * self.part_size if self.fused_qkv else 0
        return slice(start, start + self.part_size)

    def delta_weight(self, part: str) -> torch.Tensor:
        """The update of one part, (out_p, in), already scaled."""
        return (self.lora_B[part] @ self.lora_A[part]) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        h = self.lora_dropout(x)
        deltas = {p: F.linear(F.linear(h, self.lora_A[p]), self.lora_B[p]) * self.scaling for p in self.parts}
        if not self.fused_qkv:
            return out + deltas["all"]
        chunks = out.split(self.part_size, dim=-1)
        return torch.cat([c + deltas[p] if p in deltas else c for p, c in zip(QKV, chunks)], dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the updates into ``weight`` in place; ``forward`` then skips the LoRA path."""
        if not self.merged:
            for p in self.parts:
                self.weight[self._slice(p)] += self.delta_weight(p)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (subtract the updates again)."""
        if self.merged:
            for p in self.parts:
                self.weight[self._slice(p)] -= self.delta_weight(p)
            self.merged = False

    @torch.no_grad()
    def merged_module(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing ``W + delta`` (this layer is left unchanged)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear = linear.to(device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(self.weight)
        if not self.merged:
            for p in self.parts:
                linear.weight[self._slice(p)] += self.delta_weight(p)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}, parts={','.join(self.parts)}"


@register_peft("lora")
@dataclasses.dataclass
class LoRAConfig(PeftConfig):
    """Options of LoRA.

    Attributes:
        r: rank. alpha: scaling numerator (update scaled by alpha / r). dropout: on the LoRA input.
        targets: name suffixes of the layers to adapt: ``qkv``, ``proj``, ``fc1``, ``fc2`` (or longer
            suffixes such as ``attn.qkv``, ``mlp.fc1``).
        qkv: which thirds of a fused ``qkv`` layer get an update (any of ``"q"``, ``"k"``, ``"v"``).
    """

    r: int = 4
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("qkv",)
    qkv: str = "qv"

    def __post_init__(self) -> None:
        if int(self.r) <= 0:
            raise ValueError(f"LoRA r must be a positive rank, got {self.r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str):
            self.targets = (self.targets,)
        if not self.qkv or set(self.qkv) - set(QKV):
            raise ValueError(f"LoRA qkv must be a non-empty combination of 'q', 'k', 'v', got {self.qkv!r}")

    def inject(self, model: nn.Module) -> None:
        found = False
        for name, module in list(model.named_modules()):
            if not isinstance(module, nn.Linear) or isinstance(module, LoRALinear):
                continue
            target = next((t for t in self.targets if name == t or name.endswith("." + t)), None)
            if target is None:
                continue
            parts = tuple(p for p in QKV if p in self.qkv) if target.endswith("qkv") else ("all",)
            replace_submodule(model, name, LoRALinear(module, int(self.r), float(self.alpha), float(self.dropout), parts))
            found = True
        if not found:
            raise ValueError(f"LoRA found no nn.Linear matching targets {list(self.targets)} in {type(model).__name__}")
