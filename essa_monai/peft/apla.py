"""APLA: tune only the attention output projection W_O (``attn.proj``) of every block.

ESSA (arXiv 2503.18873) / APLA: with ``r=None`` every row of W_O (and its bias) is trained; with
``r < dim`` a random subset of ``r`` output rows per block is trained. The subset layer keeps the
trainable rows and the frozen rows as two separate tensors, runs two matmuls and scatters their outputs
back into place, so the frozen rows never get a weight gradient and never get optimizer state. The
row permutation is drawn from a seeded generator and stored as a buffer, so it travels in the adapter
file: student, teacher, resume and DDP replicas all agree. :meth:`APLALinear.merged_module` folds the
two parts back into one ``nn.Linear`` (zero inference cost).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .base import PeftConfig, register_peft, replace_submodule

__all__ = ["APLAConfig", "APLALinear"]


class APLALinear(nn.Module):
    """A ``nn.Linear`` split by output rows into a trainable part and a frozen part.

    Args:
        linear: the layer to split; its weight (out, in) and bias (out,) are copied.
        row_indices: a permutation of ``range(out)``; its first ``r`` entries are the trainable rows.
        r: number of trainable output rows, ``0 < r < out``.

    Shapes: input (..., in) -> output (..., out), identical to ``linear``.
    """

    adapter_buffers = ("row_indices",)

    def __init__(self, linear: nn.Linear, row_indices: torch.Tensor, r: int):
        super().__init__()
        out_features = linear.out_features
        if not 0 < r < out_features:
            raise ValueError(f"APLA r must be in (0, {out_features}) for a split layer, got {r}")
        row_indices = row_indices.detach().to("cpu", torch.long)
        if not torch.equal(row_indices.sort().values, torch.arange(out_features, device="cpu")):
            raise ValueError("APLA row_indices must be a permutation of the output rows")
        self.in_features, self.out_features, self.r = linear.in_features, out_features, r
        self.register_buffer("row_indices", row_indices.clone())
        # inverse permutation: output column j comes from column inverse[j] of cat([trainable, frozen])
        self.register_buffer("inverse_indices", torch.argsort(self.row_indices), persistent=False)
        weight = linear.weight.detach()
        train_rows, frozen_rows = row_indices[:r].to(weight.device), row_indices[r:].to(weight.device)
        self.trainable_weight = nn.Parameter(weight[train_rows].clone())
        self.frozen_weight = nn.Parameter(weight[frozen_rows].clone(), requires_grad=False)
        if linear.bias is not None:
            bias = linear.bias.detach()
            self.trainable_bias = nn.Parameter(bias[train_rows].clone())
            self.frozen_bias = nn.Parameter(bias[frozen_rows].clone(), requires_grad=False)
        else:
            self.register_parameter("trainable_bias", None)
            self.register_parameter("frozen_bias", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The row permutation is part of the adapter: loading one must also refresh its inverse.
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.inverse_indices = torch.argsort(self.row_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trainable = F.linear(x, self.trainable_weight, self.trainable_bias)
        frozen = F.linear(x, self.frozen_weight, self.frozen_bias)
        return torch.cat([trainable, frozen], dim=-1).index_select(-1, self.inverse_indices)

    @torch.no_grad()
    def merged_module(self) -> nn.Linear:
        """One ``nn.Linear`` with the trained rows scattered back into place."""
        w = self.trainable_weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.trainable_bias is not None)
        linear = linear.to(device=w.device, dtype=w.dtype)
        linear.weight.copy_(torch.cat([self.trainable_weight, self.frozen_weight])[self.inverse_indices])
        if self.trainable_bias is not None:
            linear.bias.copy_(torch.cat([self.trainable_bias, self.frozen_bias])[self.inverse_indices])
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, trainable_rows={self.r}"


@register_peft("apla")
@dataclasses.dataclass
class APLAConfig(PeftConfig):
    """Options of APLA.

    Attributes:
        r: trainable output rows of W_O per block; ``None`` (or >= dim) trains all of W_O.
        seed: seed of the row permutation (one ``torch.Generator`` walked over blocks in order).
        target: name suffix of the layers to adapt (W_O is ``attn.proj`` in timm ViTs).
    """

    r: int | None = None
    seed: int = 0
    target: str = "attn.proj"

    def __post_init__(self) -> None:
        if self.r is not None and int(self.r) <= 0:
            raise ValueError(f"APLA r must be a positive number of rows or None (all rows), got {self.r}")

    def inject(self, model: nn.Module) -> None:
        targets = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and (name == self.target or name.endswith("." + self.target))
        ]
        if not targets:
            raise ValueError(f"APLA found no nn.Linear named '*{self.target}' in {type(model).__name__}")
        generator = torch.Generator().manual_seed(int(self.seed))
        for name, linear in targets:
            if self.r is None or int(self.r) >= linear.out_features:
                linear.requires_grad_(True)
                continue
            perm = torch.randperm(linear.out_features, generator=generator, device="cpu")
            replace_submodule(model, name, APLALinear(linear, perm, int(self.r)))
