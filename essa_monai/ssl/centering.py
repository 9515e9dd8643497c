"""Teacher target normalisation shared by the DINO and iBOT losses.

Two ways turn teacher logits into target distributions in DINOv2:

* *centering*: subtract a running mean of the teacher logits (an EMA buffer kept by each loss) and
  apply a sharp softmax;
* *Sinkhorn-Knopp*: a few alternating row/column normalisations of ``exp(logits / temp)`` so that
  every sample gets a distribution and every prototype gets an equal share of the batch.

Both work across ranks: sums are ``all_reduce``-d when :mod:`torch.distributed` is initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["sinkhorn_knopp", "distributed_mean"]


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def distributed_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over its first dimension, averaged over ranks.

    Args:
        x: ``(N, K)`` values (teacher logits); ``N`` may differ between ranks.

    Returns:
        ``(1, K)`` float32 tensor: the local mean over ``N``, then the mean of those over ranks (as
        DINOv2 does for its centers; equal to the global mean when every rank has the same ``N``).
    """
    mean = x.float().mean(dim=0, keepdim=True)
    if _is_distributed():
        dist.all_reduce(mean)
        mean /= dist.get_world_size()
    return mean


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    n_samples: int | Tensor | None = None,
) -> Tensor:
    """Sinkhorn-Knopp normalisation of teacher logits into soft assignments (SwAV, DINOv2).

    Starting from ``Q = exp(logits / teacher_temp)`` (scaled to sum to 1 over all ranks), each
    iteration makes every prototype's total mass ``1/K`` and then every sample's mass ``1/N``; the
    result is rescaled so that each sample's row sums to 1.

    Args:
        teacher_logits: ``(N, K)`` teacher head outputs for ``N`` samples and ``K`` prototypes.
        teacher_temp: softmax temperature (dimensionless, e.g. 0.04-0.07).
        n_iterations: number of row/column normalisation rounds (DINOv2: 3).
        n_samples: total number of samples over all ranks. Default: ``N`` times the world size
            (right when every rank has ``N`` samples); pass the all-reduced count when ``N`` varies
            by rank, as for masked patches in iBOT.

    Returns:
        ``(N, K)`` float32 tensor, rows summing to 1; after enough iterations each column sums to
        ``n_samples / K`` over all ranks.
    """
    logits = teacher_logits.float() / teacher_temp
    # Subtracting one global constant before exp changes nothing after normalisation but avoids overflow.
    shift = logits.max() if logits.numel() else logits.new_full((), float("-inf"))
    if _is_distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp(logits - shift).t()  # (K, N): prototypes x samples
    n_prototypes = q.shape[0]
    if n_samples is None:
        n_samples = q.shape[1] * (dist.get_world_size() if _is_distributed() else 1)
    elif isinstance(n_samples, Tensor):
        n_samples = n_samples.to(device=q.device, dtype=q.dtype)

    total = q.sum()
    if _is_distributed():
        dist.all_reduce(total)
    q /= total
    for _ in range(n_iterations):
        per_prototype = q.sum(dim=1, keepdim=True)
        if _is_distributed():
            dist.all_reduce(per_prototype)
        q /= per_prototype
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    q *= n_samples
    return q.t()
