"""DINO loss on CLS tokens: cross-entropy between teacher and student prototype distributions.

The teacher's CLS logits of the global crops become targets (centered softmax at a low temperature,
or Sinkhorn-Knopp); the student's CLS logits of every crop (global and local) are compared with the
target of every *other* global view. As in DINOv2, the sum over crop pairs is divided by the number
of pairs, ``n_global * (n_global - 1) + n_local * n_global``.

Tensors of several crops are crop-major, as the multi-crop collate builds them: rows
``[v * B:(v + 1) * B]`` hold view ``v`` of the ``B`` images.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .centering import distributed_mean, sinkhorn_knopp

__all__ = ["DINOLoss"]

CenteringMethod = Literal["centering", "sinkhorn_knopp"]


class DINOLoss(nn.Module):
    """DINO CLS-token loss with a teacher center kept as an EMA buffer.

    Args:
        out_dim: number of prototypes ``K`` (DINO head output size).
        student_temp: student softmax temperature (dimensionless).
        center_momentum: EMA momentum of the teacher center; after :meth:`update_center`,
            ``center = momentum * center + (1 - momentum) * batch_mean``.

    Buffers:
        center: ``(1, K)`` float32 running mean of teacher logits.

    Typical step::

        targets = loss_fn.teacher_targets(teacher_logits, teacher_temp)  # softmax, then center update
        loss = loss_fn(student_global_logits, targets, student_local_logits)
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
        """Centered, sharpened teacher distribution ``softmax((logits - center) / teacher_temp)``.

        Args:
            teacher_logits: ``(N, K)`` teacher head outputs.
            teacher_temp: teacher temperature (dimensionless, 0.04-0.07 in DINOv2).

        Returns:
            ``(N, K)`` float32 probabilities. The center is not changed (see :meth:`update_center`).
        """
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_logits: Tensor, teacher_temp: float, n_iterations: int = 3) -> Tensor:
        """Sinkhorn-Knopp teacher distribution (no center involved), ``(N, K)`` -> ``(N, K)``.

        See :func:`essa_monai.ssl.centering.sinkhorn_knopp`.
        """
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_iterations=n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """EMA update of the center with the mean teacher logits of this batch (all ranks).

        Args:
            teacher_logits: ``(N, K)`` teacher head outputs of the global crops of this step.
        """
        if teacher_logits.shape[0] == 0:
            return
        batch_center = distributed_mean(teacher_logits).to(self.center.device)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)

    @torch.no_grad()
    def teacher_targets(
        self,
        teacher_logits: Tensor,
        teacher_temp: float,
        method: CenteringMethod = "centering",
        n_iterations: int = 3,
    ) -> Tensor:
        """Teacher targets for this step, as DINOv2 computes them.

        With ``"centering"`` the softmax uses the current center, which is then updated with this
        batch (so the update affects the next step). With ``"sinkhorn_knopp"`` the center is unused.

        Args:
            teacher_logits: ``(N, K)`` teacher head outputs of the global crops.
            teacher_temp: teacher temperature (dimensionless).
            method: ``"centering"`` or ``"sinkhorn_knopp"``.
            n_iterations: Sinkhorn-Knopp iterations.

        Returns:
            ``(N, K)`` float32 target probabilities.
        """
        if method == "centering":
            targets = self.softmax_center_teacher(teacher_logits, teacher_temp)
            self.update_center(teacher_logits)
            return targets
        if method == "sinkhorn_knopp":
            return self.sinkhorn_knopp_teacher(teacher_logits, teacher_temp, n_iterations=n_iterations)
        raise ValueError(f"unknown teacher centering method {method!r}; use 'centering' or 'sinkhorn_knopp'")

    def forward(
        self,
        student_global_logits: Tensor,
        teacher_probs: Tensor,
        student_local_logits: Tensor | None = None,
        n_global_crops: int = 2,
    ) -> Tensor:
        """Mean cross-entropy over all (student crop, other teacher view) pairs.

        Args:
            student_global_logits: ``(n_global_crops * B, K)`` student head outputs of the global
                crops, crop-major.
            teacher_probs: ``(n_global_crops * B, K)`` teacher targets of the same global crops in the
                same order (not swapped: the pairing with the other view is done here).
            student_local_logits: ``(n_local * B, K)`` student head outputs of the local crops,
                crop-major, or ``None``.
            n_global_crops: number of global views per image.

        Returns:
            Scalar loss (nats): ``sum over pairs of mean_b H(teacher_j[b], student_i[b]) / n_pairs``,
            pairs being (global ``i``, global ``j != i``) and (local ``l``, global ``j``).
        """
        n_rows, n_prototypes = teacher_probs.shape
        if n_rows % n_global_crops:
            raise ValueError(f"teacher_probs has {n_rows} rows, not a multiple of n_global_crops={n_global_crops}")
        batch = n_rows // n_global_crops
        if student_global_logits.shape != teacher_probs.shape:
            raise ValueError(
                f"student_global_logits {tuple(student_global_logits.shape)} and teacher_probs "
                f"{tuple(teacher_probs.shape)} must have the same shape"
            )
        n_local = 0
        if student_local_logits is not None:
            if student_local_logits.shape[-1] != n_prototypes or student_local_logits.shape[0] % batch:
                raise ValueError(
                    f"student_local_logits {tuple(student_local_logits.shape)} must be "
                    f"(n_local * {batch}, {n_prototypes})"
                )
            n_local = student_local_logits.shape[0] // batch
        n_pairs = n_global_crops * (n_global_crops - 1) + n_local * n_global_crops
        if n_pairs == 0:
            raise ValueError("no crop pairs: need at least 2 global crops or 1 local crop")

        teacher = teacher_probs.float().view(n_global_crops, batch, n_prototypes)
        teacher_sum = teacher.sum(dim=0)  # cross-entropy is linear in the target: sum the views once
        log_p_global = F.log_softmax(student_global_logits.float() / self.student_temp, dim=-1)
        log_p_global = log_p_global.view(n_global_crops, batch, n_prototypes)
        # global view i against every teacher view j != i
        total = -((teacher_sum.unsqueeze(0) - teacher) * log_p_global).sum(dim=-1).mean(dim=-1).sum()
        if n_local:
            log_p_local = F.log_softmax(student_local_logits.float() / self.student_temp, dim=-1)
            log_p_local = log_p_local.view(n_local, batch, n_prototypes)
            total = total - (teacher_sum.unsqueeze(0) * log_p_local).sum(dim=-1).mean(dim=-1).sum()
        return total / n_pairs
