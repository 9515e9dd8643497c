"""SSA as an Ignite engine: MONAI's :class:`~monai.engines.Trainer` with the DINOv2 step.

One iteration (``SSATrainer._iteration``):

1. read this iteration's teacher temperature and momentum from ``engine.state`` (set by
   :class:`~essa_monai.ssa.handlers.SSAScheduleHandler`, which also sets the optimizer's lr and weight decay);
2. compute the DINOv2 objective under autocast (bf16 on CPU, fp16/bf16 on GPU) if asked;
3. backward, cancel the heads' last-layer gradients while it is frozen (first epoch), clip the
   gradient norm, optimizer step (with a ``GradScaler`` for fp16);
4. EMA-update the teacher's copies of the trainable tensors (frozen tensors are shared, untouched).

Student, teacher and objective run as one :class:`~essa_monai.ssa.distributed.SSAModel`, which
``distributed="ddp"`` wraps in DistributedDataParallel and ``distributed="fsdp"`` shards with FSDP2
(see :mod:`essa_monai.ssa.distributed`); the logged losses are averaged over ranks.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import torch
from monai.engines import Trainer
from torch import nn

from ..optim import clip_gradients, uses_weight_decay
from ..ssl import cancel_last_layer_gradients, ema_parameter_pairs, ema_update_
from .distributed import (
    DISTRIBUTED_MODES,
    FullModelState,
    FullOptimizerState,
    SSAModel,
    fully_shard_ssa,
    gather_full_module,
    is_rank0,
    mean_over_ranks,
    meta_copy,
    wrap_ddp,
)
from .network import SSANetwork
from .objective import DINOv2Objective
from .teacher import TeacherEMAState, make_teacher

__all__ = ["SSATrainer", "PRECISIONS", "ssa_parameter_groups"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def ssa_parameter_groups(student: nn.Module) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: with weight decay (matrices) and without (biases,
    norms, tokens, positional embeddings), as DINOv2 does. The schedule handler scales each group's
    weight decay by its ``wd_multiplier``."""
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (decay if uses_weight_decay(name, p) else no_decay).append(p)
    groups = [{"params": decay, "wd_multiplier": 1.0}, {"params": no_decay, "wd_multiplier": 0.0}]
    return [g for g in groups if g["params"]]


class SSATrainer(Trainer):
    """Ignite engine for self-supervised adaptation.

    Args:
        device: where to train.
        max_epochs: epochs to run.
        train_data_loader: yields :class:`~essa_monai.ssl.MultiCropCollator` batches.
        student: the :class:`SSANetwork` (PEFT already applied to its backbone).
        objective: the :class:`DINOv2Objective` (owns the centres).
        optimizer: over ``ssa_parameter_groups(student)``.
        teacher: the EMA teacher; default :func:`make_teacher` ``(student)`` (shares frozen tensors).
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        clip_grad: max gradient norm (DINOv2: 3.0); ``0`` disables clipping.
        freeze_last_layer_epochs: epochs during which the heads' last layer does not train (DINOv2: 1).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (fp16 only on CUDA, with loss scaling; not with FSDP).
        train_handlers: Ignite/MONAI handlers to attach (schedules, stats, checkpoints, kNN monitor...).
        distributed: ``"none"``, ``"ddp"`` or ``"fsdp"`` (needs a started process group, see
            :func:`essa_monai.ssa.init_distributed`). With ``"fsdp"`` the student and teacher are sharded
            in place here and ``optimizer`` (built over the unsharded student, before any step) is
            re-pointed at the shards; keep the CPU-built model off the device, FSDP moves only the shards.

    ``engine.state.output`` per iteration: ``{"loss", "dino_loss", "ibot_loss", "koleo_loss"}`` floats,
    averaged over ranks. Checkpoint with :meth:`checkpoint_dict`; export and monitor with
    :meth:`rank0_backbones`.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        student: SSANetwork,
        objective: DINOv2Objective,
        optimizer: torch.optim.Optimizer,
        teacher: SSANetwork | None = None,
        epoch_length: int | None = None,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: float = 1.0,
        precision: str = "fp32",
        train_handlers: Sequence | None = None,
        distributed: str = "none",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if distributed not in DISTRIBUTED_MODES:
            raise ValueError(f"distributed must be one of {', '.join(DISTRIBUTED_MODES)}, got {distributed!r}")
        device = torch.device(device)
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA device; use precision='bf16' on CPU")
        if precision == "fp16" and distributed == "fsdp":
            raise ValueError("fp16 loss scaling is not supported with distributed='fsdp'; use precision='bf16'")
        if distributed != "none" and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError(
                f"distributed={distributed!r} needs a process group: launch with torchrun and call "
                "essa_monai.ssa.init_distributed (the multi_gpu_ssa.json overlay does)"
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            handlers=None,  # attached below, once the networks exist on the engine
            amp=False,  # precision is handled here (MONAI's amp flag is CUDA fp16 only)
            decollate=False,
        )
        if not is_rank0():
            self.logger.setLevel(logging.WARNING)  # the engine's messages (and CheckpointSaver's) from rank 0
        teacher = teacher if teacher is not None else make_teacher(student)
        self.distributed = distributed
        self.student, self.teacher, self.objective, self.optimizer = student, teacher, objective, optimizer
        model = SSAModel(student, teacher, objective)
        if distributed == "fsdp":
            self._backbone_template = meta_copy(student.backbone)
            names = {id(p): name for name, p in student.named_parameters()}
            self.model = fully_shard_ssa(model, device)
            _repoint_optimizer(optimizer, names, dict(student.named_parameters()))
        else:
            model.to(device)
            self.model = wrap_ddp(model, device) if distributed == "ddp" else model
        self.clip_grad = clip_grad
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.precision = precision
        self.autocast_dtype = PRECISIONS[precision]
        self.grad_scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.ema_pairs = ema_parameter_pairs(self.teacher, self.student)
        # defaults for when no schedule handler is attached
        self.state.teacher_temp = 0.07
        self.state.teacher_momentum = 0.994
        if train_handlers:
            for handler in train_handlers:
                handler.attach(self)

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.state.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _iteration(self, engine: "SSATrainer", batchdata: Mapping[str, Any]) -> dict[str, float]:
        batch = self._to_device(batchdata)
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.state.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            losses = self.model(batch, float(self.state.teacher_temp))
        loss = losses["loss"]
        reported = mean_over_ranks(losses)  # every rank sees the same values, so all raise together
        if not math.isfinite(reported["loss"]):
            raise FloatingPointError(f"SSA loss is {reported['loss']} at iteration {self.state.iteration}; lower the lr")
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
        else:
            loss.backward()
        freeze_iters = int(self.freeze_last_layer_epochs * self.state.epoch_length)
        cancel_last_layer_gradients(self.student, self.state.iteration - 1, freeze_iters)
        clip_gradients(self.optimizer, self.clip_grad, self.grad_scaler)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        ema_update_(self.ema_pairs, float(self.state.teacher_momentum))
        return reported

    def checkpoint_dict(self) -> dict[str, Any]:
        """What SSA needs to resume, for MONAI's ``CheckpointSaver``/``CheckpointLoader``: student, teacher
        EMA tensors, centres, optimizer, engine state. Under FSDP the student and optimizer state dicts
        are gathered whole on rank 0, so the file is the one a run without FSDP writes (either run can
        resume from the other's checkpoint); every rank loads it and keeps its shards."""
        fsdp = self.distributed == "fsdp"
        return {
            "student": FullModelState(self.student) if fsdp else self.student,
            "teacher": TeacherEMAState(self.teacher, self.student),
            "objective": self.objective,
            "optimizer": FullOptimizerState(self.optimizer) if fsdp else self.optimizer,
            "trainer": self,
        }

    def rank0_backbones(self) -> tuple[nn.Module, nn.Module] | None:
        """``(student_backbone, teacher_backbone)`` as plain modules on rank 0, ``None`` on other ranks.

        Under FSDP this is a collective (every rank must call it): the teacher's shards are gathered into
        one CPU copy on rank 0, returned twice, whose ``requires_grad`` flags and PEFT config are the
        student's (what :func:`~essa_monai.ssa.export_adapted_backbone` reads from the student).
        """
        if self.distributed == "fsdp":
            full = gather_full_module(self.teacher.backbone, self._backbone_template)
            return None if full is None else (full, full)
        return (self.student.backbone, self.teacher.backbone) if is_rank0() else None


def _repoint_optimizer(optimizer: torch.optim.Optimizer, old_names: dict[int, str], new: dict[str, nn.Parameter]) -> None:
    """Replace, in place, each optimizer parameter by the parameter of the same name after sharding."""
    if optimizer.state:
        raise ValueError("distributed='fsdp' needs an optimizer that has not stepped yet (its state would be unsharded)")
    for group in optimizer.param_groups:
        unknown = [p for p in group["params"] if id(p) not in old_names]
        if unknown:
            raise ValueError(f"the optimizer holds {len(unknown)} tensors that are not student parameters")
        group["params"] = [new[old_names[id(p)]] for p in group["params"]]
