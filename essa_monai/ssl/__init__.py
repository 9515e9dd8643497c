"""DINOv2 self-supervised objective as building blocks: heads, losses, masking, multi-crop, schedules, EMA.

The pieces follow facebookresearch/dinov2 (``dinov2/train/ssl_meta_arch.py`` and friends). Per
step, with ``batch = MultiCropCollator()(samples)`` and ``K`` prototypes, an engine does::

    temp = teacher_temp[it]
    t_cls, t_patch = teacher(batch["global_crops"])               # (2B, K), (2B, N, K) after the head
    dino_t = dino_loss.teacher_targets(t_cls, temp)                # (2B, K), same crop order
    ibot_t = ibot_loss.teacher_targets(t_patch.flatten(0, 1)[batch["mask_indices"]], temp)
    loss = dino_loss(s_global_cls, dino_t, s_local_cls)            # student logits (2B, K), (nB, K)
    loss = loss + ibot_loss(s_masked_patch, ibot_t, batch["masks"], batch["masks_weight"])
    loss = loss + 0.1 * koleo_loss(s_global_backbone_cls, n_views=2)
    loss.backward(); cancel_last_layer_gradients(student_head, it, freeze_iters); optimizer.step()
    ema_update_(ema_parameter_pairs(teacher, student), momentum[it])
"""

from __future__ import annotations

from .centering import CenteredTeacherLoss, distributed_mean, sinkhorn_knopp
from .dino_head import DINOHead, cancel_last_layer_gradients, last_layer_parameters
from .dino_loss import DINOLoss
from .ema import ema_parameter_pairs, ema_update_
from .ibot_loss import IBOTPatchLoss, masked_patch_weights
from .koleo_loss import KoLeoLoss
from .masking import MaskingGenerator, sample_ibot_masks
from .multicrop import MultiCropAugmentation, MultiCropCollator, MultiCropd, collate_multicrop
from .schedules import (
    CosineScheduler,
    last_layer_lr_schedule,
    lr_schedule,
    teacher_momentum_schedule,
    teacher_temp_schedule,
    weight_decay_schedule,
)

__all__ = [
    "DINOHead",
    "cancel_last_layer_gradients",
    "last_layer_parameters",
    "DINOLoss",
    "IBOTPatchLoss",
    "masked_patch_weights",
    "KoLeoLoss",
    "sinkhorn_knopp",
    "CenteredTeacherLoss",
    "distributed_mean",
    "MaskingGenerator",
    "sample_ibot_masks",
    "MultiCropAugmentation",
    "MultiCropd",
    "MultiCropCollator",
    "collate_multicrop",
    "CosineScheduler",
    "lr_schedule",
    "last_layer_lr_schedule",
    "weight_decay_schedule",
    "teacher_momentum_schedule",
    "teacher_temp_schedule",
    "ema_update_",
    "ema_parameter_pairs",
]
