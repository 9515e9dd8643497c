"""The DINOv2 training objective for one step: DINO (CLS) + iBOT (masked patches) + KoLeo.

Follows ``dinov2/train/ssl_meta_arch.py``: the teacher sees the global crops only; the student sees the
global crops (with iBOT masks) and the local crops; DINO pairs every student crop with every *other*
teacher view; iBOT compares masked student patches with the teacher's patches at the same positions;
KoLeo spreads the student's global CLS tokens (per view).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import nn

from ..ssl import DINOLoss, IBOTPatchLoss, KoLeoLoss
from .network import SSANetwork

__all__ = ["DINOv2Objective"]


class DINOv2Objective(nn.Module):
    """Loss terms and their weights; owns the DINO and iBOT centres (buffers, saved in checkpoints).

    Args:
        n_prototypes: head output size K.
        dino_weight, ibot_weight, koleo_weight: term weights (DINOv2: 1.0, 1.0, 0.1). A zero weight
            skips the term's computation.
        centering: ``"centering"`` (softmax with EMA centre) or ``"sinkhorn_knopp"``.
        student_temp: student softmax temperature (0.1).
        center_momentum: EMA momentum of the centres (0.9).
        n_global_crops: global views per image (2).
    """

    def __init__(
        self,
        n_prototypes: int,
        dino_weight: float = 1.0,
        ibot_weight: float = 1.0,
        koleo_weight: float = 0.1,
        centering: Literal["centering", "sinkhorn_knopp"] = "centering",
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_global_crops: int = 2,
    ):
        super().__init__()
        if centering not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"centering must be 'centering' or 'sinkhorn_knopp', got {centering!r}")
        self.dino_weight, self.ibot_weight, self.koleo_weight = dino_weight, ibot_weight, koleo_weight
        self.centering, self.n_global_crops = centering, n_global_crops
        self.dino_loss = DINOLoss(n_prototypes, student_temp=student_temp, center_momentum=center_momentum)
        self.ibot_loss = IBOTPatchLoss(n_prototypes, student_temp=student_temp, center_momentum=center_momentum)
        self.koleo_loss = KoLeoLoss()

    def forward(
        self, student: SSANetwork, teacher: SSANetwork, batch: Mapping[str, Any], teacher_temp: float
    ) -> dict[str, torch.Tensor]:
        """Compute the loss of one multi-crop batch.

        Args:
            batch: from :class:`essa_monai.ssl.MultiCropCollator`: ``global_crops`` (2B, 3, G, G),
                ``local_crops`` (nB, 3, L, L) or None, and for iBOT ``masks`` (2B, N) bool,
                ``mask_indices`` (M,), ``masks_weight`` (M,).
            teacher_temp: teacher softmax temperature at this iteration.

        Returns:
            ``{"loss": total, "dino_loss", "ibot_loss", "koleo_loss"}`` scalars (nats); ``loss`` has a graph.
        """
        global_crops, local_crops = batch["global_crops"], batch.get("local_crops")
        # Not skipped when no patch is masked: with several processes every rank must run the same
        # collectives (centres, Sinkhorn-Knopp) and use the same parameters (mask token, iBOT head).
        do_ibot = self.ibot_weight > 0 and batch.get("masks") is not None
        masks = batch["masks"] if do_ibot else None

        with torch.no_grad():
            t_cls, t_patch = teacher.forward_tokens(global_crops)
            dino_targets = self.dino_loss.teacher_targets(teacher.dino_head(t_cls), teacher_temp, self.centering)
            if do_ibot:
                t_masked = t_patch.flatten(0, 1)[batch["mask_indices"]]
                ibot_targets = self.ibot_loss.teacher_targets(teacher.patch_head(t_masked), teacher_temp, self.centering)

        s_cls, s_patch = student.forward_tokens(global_crops, masks)
        s_local = student.dino_head(student.forward_tokens(local_crops)[0]) if local_crops is not None else None
        out: dict[str, torch.Tensor] = {}
        out["dino_loss"] = self.dino_loss(student.dino_head(s_cls), dino_targets, s_local, self.n_global_crops)
        total = self.dino_weight * out["dino_loss"]
        if do_ibot:
            s_masked = student.patch_head(s_patch.flatten(0, 1)[batch["mask_indices"]])
            out["ibot_loss"] = self.ibot_loss(s_masked, ibot_targets, masks, batch.get("masks_weight"))
            total = total + self.ibot_weight * out["ibot_loss"]
        if self.koleo_weight > 0:
            out["koleo_loss"] = self.koleo_loss(s_cls, n_views=self.n_global_crops)
            total = total + self.koleo_weight * out["koleo_loss"]
        out["loss"] = total
        return out
