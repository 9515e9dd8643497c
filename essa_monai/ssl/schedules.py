"""Per-iteration schedules for DINOv2 training: cosine decay with a linear warm-up.

Every schedule is a :class:`CosineScheduler`: a precomputed array with one value per iteration,
read with ``schedule[iteration]``; past the end it returns the final value. Helpers build the
schedules DINOv2 uses (values are defaults of this package; DINOv2's ViT-L/14 recipe):

=====================  ==========================  =================================
schedule               values                      shape
=====================  ==========================  =================================
learning rate          0 -> base_lr -> min_lr      linear warm-up, then cosine
last-layer lr          0 while frozen, else lr     the lr schedule, first iters zeroed
weight decay           0.04 -> 0.2                 cosine
teacher momentum       0.994 -> 1.0                cosine
teacher temperature    0.04 -> 0.07                linear over the warm-up, then constant
=====================  ==========================  =================================
"""

from __future__ import annotations


import numpy as np

__all__ = [
    "CosineScheduler",
    "lr_schedule",
    "last_layer_lr_schedule",
    "weight_decay_schedule",
    "teacher_momentum_schedule",
    "teacher_temp_schedule",
]


class CosineScheduler:
    """``freeze_iters`` zeros, then a linear warm-up, then a half-cosine from ``base_value`` to ``final_value``.

    Args:
        base_value: value at the end of the warm-up (start of the cosine).
        final_value: value at the end of the cosine, and for every iteration ``>= total_iters``.
        total_iters: length of the schedule (iterations), freeze and warm-up included.
        warmup_iters: iterations of linear warm-up from ``start_warmup_value`` to ``base_value``
            (both ends included, as ``numpy.linspace``).
        start_warmup_value: value at the first warm-up iteration.
        freeze_iters: leading iterations with value 0.

    Attributes:
        schedule: ``(total_iters,)`` float64 array.
    """

    def __init__(
        self,
        base_value: float,
        final_value: float,
        total_iters: int,
        warmup_iters: int = 0,
        start_warmup_value: float = 0.0,
        freeze_iters: int = 0,
    ) -> None:
        cosine_iters = total_iters - warmup_iters - freeze_iters
        if min(total_iters, warmup_iters, freeze_iters, cosine_iters) < 0:
            raise ValueError(
                f"need 0 <= freeze_iters + warmup_iters <= total_iters, got freeze_iters={freeze_iters}, "
                f"warmup_iters={warmup_iters}, total_iters={total_iters}"
            )
        self.base_value = base_value
        self.final_value = final_value
        self.total_iters = total_iters
        steps = np.arange(cosine_iters)
        cosine = final_value + 0.5 * (base_value - final_value) * (1.0 + np.cos(np.pi * steps / max(cosine_iters, 1)))
        self.schedule = np.concatenate(
            (np.zeros(freeze_iters), np.linspace(start_warmup_value, base_value, warmup_iters), cosine)
        )

    def __len__(self) -> int:
        return self.total_iters

    def __getitem__(self, iteration: int) -> float:
        if iteration >= self.total_iters:
            return float(self.final_value)
        return float(self.schedule[iteration])


def lr_schedule(base_lr: float, total_iters: int, warmup_iters: int = 0, min_lr: float = 1e-6) -> CosineScheduler:
    """Learning rate: linear warm-up from 0 to ``base_lr`` over ``warmup_iters``, then cosine to ``min_lr``."""
    return CosineScheduler(base_lr, min_lr, total_iters, warmup_iters=warmup_iters, start_warmup_value=0.0)


def last_layer_lr_schedule(
    base_lr: float,
    total_iters: int,
    warmup_iters: int = 0,
    min_lr: float = 1e-6,
    freeze_last_layer_iters: int = 0,
) -> CosineScheduler:
    """The :func:`lr_schedule` with its first ``freeze_last_layer_iters`` values set to 0 (DINOv2's
    way to freeze the head's last layer; the rest of the schedule is not shifted)."""
    schedule = lr_schedule(base_lr, total_iters, warmup_iters=warmup_iters, min_lr=min_lr)
    schedule.schedule[:freeze_last_layer_iters] = 0.0
    return schedule


def weight_decay_schedule(total_iters: int, base_value: float = 0.04, final_value: float = 0.2) -> CosineScheduler:
    """Weight decay: cosine from ``base_value`` to ``final_value`` (no warm-up)."""
    return CosineScheduler(base_value, final_value, total_iters)


def teacher_momentum_schedule(
    total_iters: int, base_value: float = 0.994, final_value: float = 1.0
) -> CosineScheduler:
    """Teacher EMA momentum: cosine from ``base_value`` to ``final_value`` (no warm-up)."""
    return CosineScheduler(base_value, final_value, total_iters)


def teacher_temp_schedule(
    warmup_iters: int, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07
) -> CosineScheduler:
    """Teacher temperature: linear from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_iters`` (inclusive), then ``teacher_temp`` for every later iteration."""
    return CosineScheduler(
        teacher_temp, teacher_temp, warmup_iters, warmup_iters=warmup_iters, start_warmup_value=warmup_teacher_temp
    )
