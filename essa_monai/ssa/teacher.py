"""The SSA teacher: an EMA of the student that shares the student's frozen tensors.

With PEFT, most backbone tensors never change, so the teacher reuses them (same storage) and keeps its
own copies of the trainable tensors only: APLA-SSA holds one backbone in memory, not two. With full
fine-tuning every tensor trains, so the teacher is a full copy, as in DINOv2.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

__all__ = ["make_teacher", "TeacherEMAState"]


def make_teacher(student: nn.Module) -> nn.Module:
    """Deep-copy ``student`` except its frozen parameters and its buffers, which are shared.

    Every parameter of the teacher has ``requires_grad=False``; the teacher is put in eval mode
    (no dropout, no stochastic depth), as DINOv2's teacher is.
    """
    memo = {id(p): p for p in student.parameters() if not p.requires_grad}
    memo.update({id(b): b for b in student.buffers()})
    teacher = copy.deepcopy(student, memo)
    teacher.requires_grad_(False)
    return teacher.eval()


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard on the CPU (a collective), or the tensor itself."""
    return tensor.full_tensor().cpu() if isinstance(tensor, DTensor) else tensor


class TeacherEMAState:
    """Checkpoint view of a teacher: ``state_dict()`` holds only the teacher's own tensors (the EMA copies
    of what the student trains); the shared frozen tensors are saved once, with the student. Use it in
    a MONAI ``CheckpointSaver``/``CheckpointLoader`` ``save_dict``/``load_dict`` as ``"teacher"``.

    Under FSDP2 (sharded ``DTensor`` parameters) ``state_dict()`` gathers whole tensors (every rank must
    call it, as Ignite's ``Checkpoint`` does) and ``load_state_dict`` keeps each rank's shard of them.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module) -> None:
        self.teacher, self.student = teacher, student

    def _names(self) -> list[str]:
        return [name for name, p in self.student.named_parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        params = dict(self.teacher.named_parameters())
        return {name: _full(params[name].detach()).clone() for name in self._names()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.teacher.named_parameters())
        missing = sorted(set(self._names()) - set(state))
        if missing:
            raise ValueError(f"teacher checkpoint lacks EMA tensors {missing[:5]}")
        for name in self._names():
            param, value = params[name], state[name]
            if isinstance(param, DTensor):
                value = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)
            param.copy_(value)


