"""Teacher target normalisation shared by the DINO and iBOT losses.

Two ways turn teacher logits into target distributions in DINOv2:

* *centering*: subtract a running mean of the teacher logits (an EMA buffer kept by each loss) and
  apply a sharp softmax;
* *Sinkhorn-Knopp*: a few alternating row/column normalisations of ``exp(logits / temp)`` so that
  every sample gets a distribution and every prototype gets an equal share of the batch.

Both work across ranks: sums are ``all_reduce``-d when :mod:`torch.distributed` is initialised.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sinkhorn_knopp", "distributed_mean", "CenteredTeacherLoss", "CenteringMethod"]

CenteringMethod = Literal["centering", "sinkhorn_knopp"]


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def _sum_and_count(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(1, K)`` float32 sum of the rows of ``(N, K)`` ``x`` and their number, both summed over ranks
    (one ``all_reduce``)."""
    stats = torch.cat([x.float().sum(dim=0), x.new_full((1,), x.shape[0], dtype=torch.float32)])
    if _is_distributed():
        dist.all_reduce(stats)
    return stats[:-1].unsqueeze(0), stats[-1]


@torch.no_grad()
def distributed_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over its first dimension and over ranks.

    Args:
        x: ``(N, K)`` values (teacher logits); ``N`` may differ between ranks (masked patches) and be 0.

    Returns:
        ``(1, K)`` float32 tensor: the sum of all ranks' rows divided by their total number, i.e. the mean
        one process would compute on the whole batch (NaN when no rank has a row). DINOv2 averages the
        ranks' means instead, the same when every rank has the same ``N``, as for CLS tokens.
    """
    total, count = _sum_and_count(x)
    return total / count


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


class CenteredTeacherLoss(nn.Module):
    """Base of the DINO and iBOT losses: the teacher centre (an EMA buffer) and the teacher targets.

    Args:
        out_dim: number of prototypes ``K``.
        student_temp: student softmax temperature (dimensionless), used by subclasses' ``forward``.
        center_momentum: EMA momentum of the centre.

    Buffers:
        center: ``(1, K)`` float32 running mean of the teacher logits.
    """

    center: Tensor

    def __init__(self, out_dim: int = 65536, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """Centred, sharpened teacher distribution ``softmax((logits - center) / teacher_temp)``:
        ``(N, K)`` -> ``(N, K)`` float32. The centre is not changed (see :meth:`update_center`)."""
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_logits: Tensor, teacher_temp: float, n_iterations: int = 3, n_samples: Tensor | None = None
    ) -> Tensor:
        """Sinkhorn-Knopp targets (no centre involved), ``(N, K)`` -> ``(N, K)`` float32; ``n_samples``:
        the number of rows over all ranks (see :func:`sinkhorn_knopp`)."""
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_iterations=n_iterations, n_samples=n_samples)

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """EMA update of the centre with the mean teacher logits of this batch over all ranks.

        ``(N, K)`` logits. Every rank takes part, empty or not (see :func:`distributed_mean`); a batch
        with no rows on any rank (``N = 0`` everywhere) leaves the centre unchanged.
        """
        total, count = _sum_and_count(teacher_logits)
        if count.item() == 0:
            return
        batch_center = (total / count).to(self.center.device)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)

    @torch.no_grad()
    def teacher_targets(
        self, teacher_logits: Tensor, teacher_temp: float, method: CenteringMethod = "centering", n_iterations: int = 3
    ) -> Tensor:
        """Teacher targets for this step, as DINOv2 computes them: with ``"centering"`` the softmax uses
        the current centre, which is then updated with this batch (the update affects the next step);
        with ``"sinkhorn_knopp"`` the centre is unused. ``(N, K)`` logits -> ``(N, K)`` float32 probabilities."""
        if method == "centering":
            targets = self.softmax_center_teacher(teacher_logits, teacher_temp)
            self.update_center(teacher_logits)
            return targets
        if method == "sinkhorn_knopp":
            return self.sinkhorn_knopp_teacher(teacher_logits, teacher_temp, n_iterations=n_iterations)
        raise ValueError(f"unknown teacher centering method {method!r}; use 'centering' or 'sinkhorn_knopp'")
