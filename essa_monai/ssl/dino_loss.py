"""DINO loss on CLS tokens: cross-entropy between teacher and student prototype distributions.

The teacher's CLS logits of the global crops become targets (centered softmax at a low temperature,
or Sinkhorn-Knopp); the student's CLS logits of every crop (global and local) are compared with the
target of every *other* global view. As in DINOv2, the sum over crop pairs is divided by the number
of pairs, ``n_global * (n_global - 1) + n_local * n_global``.

Tensors of several crops are crop-major, as the multi-crop collate builds them: rows
``[v * B:(v + 1) * B]`` hold view ``v`` of the ``B`` images.
"""

from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor

from .centering import CenteredTeacherLoss

__all__ = ["DINOLoss"]



class DINOLoss(CenteredTeacherLoss):
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
