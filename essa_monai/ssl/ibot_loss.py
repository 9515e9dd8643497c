"""iBOT masked-patch loss: the student predicts the teacher's prototype distribution of the patches
it did not see.

Only masked patch tokens of the global crops enter the loss. The student sees the masked crop (mask
token in place of the patch), the teacher sees the intact crop. Each image contributes equally:
patch ``m`` of an image with ``n`` masked patches has weight ``1 / n``, and the weighted sum is
divided by the number of images ``B`` (masked or not), as DINOv2's ``forward_masked``.

Masked tokens are passed *flat*: ``(M, K)`` rows in the order of ``masks.flatten().nonzero()``, which
is what :func:`essa_monai.ssl.masking.sample_ibot_masks` returns as ``mask_indices``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from .centering import CenteredTeacherLoss

__all__ = ["IBOTPatchLoss", "masked_patch_weights"]


def masked_patch_weights(masks: Tensor) -> Tensor:
    """Per-masked-patch weights ``1 / n_masked`` of their image.

    Args:
        masks: ``(B, N)`` boolean masks (``True`` = masked patch).

    Returns:
        ``(M,)`` float32 weights, ``M = masks.sum()``, in ``masks.flatten().nonzero()`` order.
    """
    n_masked = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    return (1.0 / n_masked).expand(masks.shape)[masks]


class IBOTPatchLoss(CenteredTeacherLoss):
    """iBOT cross-entropy on masked patch tokens, with a teacher center kept as an EMA buffer.

    Args:
        patch_out_dim: number of prototypes ``K`` of the (shared or separate) patch head.
        student_temp: student softmax temperature (dimensionless).
        center_momentum: EMA momentum of the teacher center.

    Buffers:
        center: ``(1, K)`` float32 running mean of teacher logits of masked patches.
    """

    def __init__(self, patch_out_dim: int = 65536, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__(patch_out_dim, student_temp, center_momentum)
        self.patch_out_dim = patch_out_dim

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self,
        teacher_patch_logits: Tensor,
        teacher_temp: float,
        n_iterations: int = 3,
        n_samples: Tensor | None = None,
        n_masked_patches: int | Tensor | None = None,
    ) -> Tensor:
        """Sinkhorn-Knopp targets for ``(M, K)`` masked-patch logits -> ``(M, K)`` float32.

        Args:
            n_masked_patches: number of masked patches on this rank (default ``M``); it is summed over
                ranks here, since ranks hold different numbers of masked patches.
        """
        if n_samples is None:
            if n_masked_patches is None:
                n_masked_patches = teacher_patch_logits.shape[0]
            n_samples = torch.as_tensor(n_masked_patches, dtype=torch.float32, device=teacher_patch_logits.device).clone()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(n_samples)
        return super().sinkhorn_knopp_teacher(teacher_patch_logits, teacher_temp, n_iterations, n_samples)

    def forward(
        self,
        student_patch_logits: Tensor,
        teacher_probs: Tensor,
        masks: Tensor,
        masks_weight: Tensor | None = None,
    ) -> Tensor:
        """Weighted cross-entropy over masked patches.

        Args:
            student_patch_logits: ``(M, K)`` student head outputs of the masked patches.
            teacher_probs: ``(M, K)`` teacher targets of the same patches.
            masks: ``(B, N)`` boolean masks of the ``B`` global crops; ``M == masks.sum()``.
            masks_weight: ``(M,)`` per-patch weights; default :func:`masked_patch_weights` ``(masks)``.

        Returns:
            Scalar loss (nats): ``sum_m w_m * H(teacher_m, student_m) / B``.
        """
        if student_patch_logits.shape != teacher_probs.shape:
            raise ValueError(
                f"student_patch_logits {tuple(student_patch_logits.shape)} and teacher_probs "
                f"{tuple(teacher_probs.shape)} must have the same shape"
            )
        if masks.dtype != torch.bool or masks.ndim != 2:
            raise ValueError(f"masks must be a (B, N) bool tensor, got {masks.dtype} {tuple(masks.shape)}")
        if masks_weight is None:
            masks_weight = masked_patch_weights(masks)
        n_masked = student_patch_logits.shape[0]
        if masks_weight.shape != (n_masked,):
            raise ValueError(f"masks_weight has shape {tuple(masks_weight.shape)}, expected ({n_masked},)")
        log_p = F.log_softmax(student_patch_logits.float() / self.student_temp, dim=-1)
        cross_entropy = -(teacher_probs.float() * log_p).sum(dim=-1)
        return (cross_entropy * masks_weight.to(cross_entropy)).sum() / masks.shape[0]
