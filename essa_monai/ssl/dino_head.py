"""DINO projection head: MLP, L2 normalisation, weight-normalised linear layer onto the prototypes.

The last layer is ``torch.nn.utils.parametrizations.weight_norm`` of a bias-free ``Linear``: its
weight is ``g * v / ||v||`` row-wise, with the magnitude ``g`` set to 1. By default ``g`` is also
frozen, so every prototype is a unit vector and the logits are cosine similarities in ``[-1, 1]``.

For the first iterations of training the last layer is kept fixed (DINOv2:
``freeze_last_layer_epochs: 1``), which stabilises the start; :func:`cancel_last_layer_gradients`
does this by dropping its gradients before the optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "cancel_last_layer_gradients", "last_layer_parameters"]


def _mlp(n_layers: int, in_dim: int, hidden_dim: int, bottleneck_dim: int, use_bn: bool, bias: bool) -> nn.Module:
    if n_layers == 1:
        return nn.Linear(in_dim, bottleneck_dim, bias=bias)
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (n_layers - 1)
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if use_bn:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(nn.GELU())
    layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=bias))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """DINO/iBOT head.

    Args:
        in_dim: input feature size (backbone embedding dim, e.g. 384 for ViT-S/14).
        out_dim: number of prototypes ``K`` (DINOv2: 65536).
        hidden_dim: width of the hidden MLP layers.
        bottleneck_dim: size of the L2-normalised bottleneck feeding the last layer.
        n_layers: number of MLP linear layers (``>= 1``).
        use_bn: batch norm after hidden layers (off in DINOv2).
        mlp_bias: biases in the MLP layers.
        freeze_magnitude: keep the weight-norm magnitude ``g`` fixed at 1 (not trained).

    Shapes:
        ``(..., in_dim)`` -> ``(..., out_dim)`` logits (cosine similarities when ``g`` is 1).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
        mlp_bias: bool = True,
        freeze_magnitude: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.mlp = _mlp(n_layers, in_dim, hidden_dim, bottleneck_dim, use_bn, mlp_bias)
        self.mlp.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), name="weight", dim=0)
        magnitude = self.last_layer.parametrizations.weight.original0  # g: (out_dim, 1)
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not freeze_magnitude)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, p=2, dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


def last_layer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of every submodule named ``last_layer`` in ``module`` (heads, or a model holding heads)."""
    params: list[nn.Parameter] = []
    for name, submodule in module.named_modules():
        if name.split(".")[-1] == "last_layer":
            params.extend(submodule.parameters())
    return params


def cancel_last_layer_gradients(module: nn.Module, iteration: int, freeze_last_layer_iters: int) -> bool:
    """Freeze the head's last layer during the first ``freeze_last_layer_iters`` iterations.

    Call between ``backward()`` and ``optimizer.step()``. While ``iteration < freeze_last_layer_iters``
    the gradients of all ``last_layer`` parameters are set to ``None``, so the optimiser leaves them
    untouched (no update, no weight decay, no moment update) -- the same effect as DINOv2's zero
    learning rate for the last layer (see :func:`essa_monai.ssl.schedules.last_layer_lr_schedule`).

    Args:
        module: a :class:`DINOHead` or any module containing heads.
        iteration: current iteration, counted from 0.
        freeze_last_layer_iters: number of frozen iterations (DINOv2: one epoch).

    Returns:
        ``True`` if gradients were cancelled (the last layer is frozen at this iteration).
    """
    if iteration >= freeze_last_layer_iters:
        return False
    for param in last_layer_parameters(module):
        param.grad = None
    return True
