"""Exponential moving average (EMA) of student weights into the teacher.

``teacher = m * teacher + (1 - m) * student`` for every pair, with the momentum ``m`` following
:func:`essa_monai.ssl.schedules.teacher_momentum_schedule` (0.994 -> 1.0). The update runs as two
fused ``torch._foreach_*`` kernels over all pairs.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

__all__ = ["ema_update_", "ema_parameter_pairs"]


@torch.no_grad()
def ema_update_(pairs: Iterable[tuple[Tensor, Tensor]], momentum: float) -> None:
    """In-place EMA ``t = momentum * t + (1 - momentum) * s`` for each ``(teacher, student)`` pair.

    Args:
        pairs: ``(teacher_tensor, student_tensor)`` pairs of equal shapes (any shapes, any units).
        momentum: EMA momentum ``m`` in ``[0, 1]``; 1 leaves the teacher unchanged.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teacher: list[Tensor] = []
    student: list[Tensor] = []
    for t, s in pairs:
        if t.shape != s.shape:
            raise ValueError(f"teacher tensor {tuple(t.shape)} and student tensor {tuple(s.shape)} differ in shape")
        teacher.append(t.detach())
        student.append(s.detach().to(device=t.device, dtype=t.dtype))
    if not teacher:
        return
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1.0 - momentum)


def ema_parameter_pairs(teacher: nn.Module, student: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """``(teacher_param, student_param)`` pairs, matched by name, of the tensors the EMA must update.

    Only trainable student parameters are paired: frozen ones never change, and a teacher that shares
    them with the student (see :func:`essa_monai.ssa.make_teacher`) must not touch them (``m*t + (1-m)*t``
    is not bit-exact in floating point).

    Args:
        teacher: the EMA copy; it must have the same parameter names and shapes as ``student``.
        student: the trained module.
    """
    teacher_params = dict(teacher.named_parameters(remove_duplicate=False))
    student_params = dict(student.named_parameters(remove_duplicate=False))
    if teacher_params.keys() != student_params.keys():
        missing = sorted(student_params.keys() - teacher_params.keys())
        extra = sorted(teacher_params.keys() - student_params.keys())
        raise ValueError(f"teacher and student parameters differ: missing in teacher {missing}, extra {extra}")
    pairs = []
    for name, s in student_params.items():
        if not s.requires_grad:
            continue
        if teacher_params[name] is s:
            raise ValueError(f"teacher shares the trainable tensor {name} with the student")
        pairs.append((teacher_params[name], s))
    return pairs
