"""Multi-process SSA: the process group from ``torchrun``'s environment, the module that DDP wraps or
FSDP2 shards, rank helpers, and rank-0 views of sharded models for checkpoints, export and monitoring.

Three modes (the bundle key ``distributed``; :class:`~essa_monai.ssa.SSATrainer` ``distributed=``):

* ``"none"``: one process.
* ``"ddp"``: PyTorch :class:`~torch.nn.parallel.DistributedDataParallel` over one :class:`SSAModel`
  (student + teacher + objective), whose forward is the whole DINOv2 step of one batch. Every rank holds
  the whole model; DDP broadcasts rank 0's tensors (teacher EMA copies and centres included) when it is
  built and averages the student's trainable gradients in backward, so replicas stay identical; the
  teacher EMA then stays identical on every rank without communication.
* ``"fsdp"``: FSDP2 (:func:`torch.distributed.fsdp.fully_shard`) for backbones that do not fit one
  device: one group per transformer block and per head, each holding the student's *and* the teacher's
  module, so a frozen tensor they share is sharded once and the teacher reads the student's shards; the
  rest (patch embedding, tokens, final norm, mask token) is the root group on the :class:`SSAModel`.
  Gradients are reduce-scattered (averaged), the optimizer and the EMA work on local shards.

Plain PyTorch rather than ``ignite.distributed``: ``idist.auto_model`` would only wrap in DDP (with its
own defaults) and has no FSDP2; MONAI's bundles and the SA overlay already start the process group from
``torchrun``'s environment; Ignite's handlers (``CheckpointSaver``'s disk writer) still see the process
group and write on rank 0.

What is reduced across ranks (as DINOv2 does, see ``dinov2/train/ssl_meta_arch.py`` and ``dinov2/loss``):
the DINO and iBOT centres and the Sinkhorn-Knopp sums (in :mod:`essa_monai.ssl.centering`), the gradients
(DDP/FSDP), and the logged losses (averaged, for display). KoLeo's nearest neighbours are searched within
each rank's batch only, as in DINOv2: with ``koleo_weight > 0``, N processes with batch B are not the
same run as one process with batch N*B.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DISTRIBUTED_MODES",
    "SSAModel",
    "init_distributed",
    "destroy_distributed",
    "rank0_first",
    "local_device",
    "rank",
    "world_size",
    "is_rank0",
    "mean_over_ranks",
    "broadcast_from_rank0",
    "wrap_ddp",
    "fully_shard_ssa",
    "broadcast_module_",
    "meta_copy",
    "gather_full_module",
    "FullModelState",
    "FullOptimizerState",
]

DISTRIBUTED_MODES = ("none", "ddp", "fsdp")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank: from the process group, else ``torchrun``'s ``RANK``, else 0."""
    return dist.get_rank() if _initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes: from the process group, else ``torchrun``'s ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if _initialized() else int(os.environ.get("WORLD_SIZE", 1))


def is_rank0() -> bool:
    """Whether this process writes outputs (logs, TensorBoard, checkpoints, exports)."""
    return rank() == 0


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (one GPU per process), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _check_mode(mode: str) -> None:
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {', '.join(repr(m) for m in DISTRIBUTED_MODES)}, got {mode!r}")


def init_distributed(mode: str = "none") -> bool:
    """Start the process group for ``mode`` from ``torchrun``'s environment; returns whether it is distributed.

    NCCL on GPUs (and ``torch.cuda.set_device(LOCAL_RANK)``), gloo on CPU. ``"none"`` starts nothing, and
    refuses to run under a multi-process ``torchrun`` (every process would train alone and write the same
    files). A process group that is already started is kept.
    """
    _check_mode(mode)
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if mode == "none":
        if launched > 1:
            raise RuntimeError(
                f"launched with WORLD_SIZE={launched} processes but distributed is 'none': add the "
                "configs/multi_gpu_ssa.json overlay (or --distributed ddp / fsdp)"
            )
        return False
    if _initialized():
        return True
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"distributed={mode!r} needs torchrun's environment ({', '.join(missing)} not set): launch with "
            "torchrun --nproc_per_node=N -m monai.bundle run ..."
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
        dist.init_process_group(backend="nccl", device_id=local_device())
    else:
        dist.init_process_group(backend="gloo")
    return True


def rank0_first(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on rank 0, then on the other ranks (after a barrier), so that rank 0 alone
    writes what all of them need (e.g. the demo data); the same as one call in one process."""
    if not (_initialized() and dist.get_world_size() > 1):
        return fn(*args, **kwargs)
    result = fn(*args, **kwargs) if is_rank0() else None
    dist.barrier()
    return result if is_rank0() else fn(*args, **kwargs)


def destroy_distributed() -> None:
    """End the process group, if one was started."""
    if _initialized():
        dist.destroy_process_group()


@torch.no_grad()
def mean_over_ranks(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Scalars averaged over ranks (one ``all_reduce``), as floats; the local values in one process."""
    names = list(values)
    stacked = torch.stack([values[n].detach().float().reshape(()) for n in names])
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist()))


def broadcast_from_rank0(value: float) -> float:
    """Rank 0's ``value`` on every rank (itself in one process)."""
    if not (_initialized() and dist.get_world_size() > 1):
        return value
    device = local_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


class SSAModel(nn.Module):
    """Student, teacher and objective as one module whose forward is the losses of one batch.

    This is the unit that DDP wraps (so the gradient synchronisation sees the whole step, every loss
    term and the mask token included) and that FSDP2 roots on. ``forward(batch, teacher_temp)`` returns
    what :meth:`essa_monai.ssa.DINOv2Objective.forward` returns.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.student, self.teacher, self.objective = student, teacher, objective

    def forward(self, batch: Mapping[str, Any], teacher_temp: float) -> dict[str, torch.Tensor]:
        return self.objective(self.student, self.teacher, batch, teacher_temp)


def wrap_ddp(model: SSAModel, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """DDP over ``model`` (already on ``device``).

    ``static_graph=True``: the step uses the same parameters every iteration (the objective runs iBOT on
    every rank, with zero masked patches if need be), and it lets parameters that a configuration never
    uses (the mask token and a separate iBOT head with ``ibot_weight=0``) stay out of the reduction.
    Buffers are not re-broadcast every step: the centres are updated with all-reduced statistics and
    APLA's row indices never change. Gradients are views into DDP's communication buckets (no second
    copy of the trainable gradients).
    """
    device = torch.device(device)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        static_graph=True,
        gradient_as_bucket_view=True,
    )


@torch.no_grad()
def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, in place (shared tensors once). With NCCL,
    CPU tensors travel one at a time through the current GPU, so the whole module never sits there."""
    nccl = dist.get_backend() == "nccl"
    seen: set[int] = set()
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if nccl and tensor.device.type == "cpu":
            staged = tensor.data.to(local_device())
            dist.broadcast(staged, src=src)
            tensor.data.copy_(staged)
        else:
            dist.broadcast(tensor.data, src=src)


def fully_shard_ssa(model: SSAModel, device: torch.device) -> SSAModel:
    """Shard ``model`` in place with FSDP2 over all ranks: per block and per head, student with teacher.

    Student and teacher must be built before (see :func:`essa_monai.ssa.make_teacher`): a frozen tensor
    they share is one ``Parameter``, so grouping ``[student_block, teacher_block]`` shards it once and
    both modules read the same shard. Rank 0's tensors are broadcast first, so every rank starts from the
    same model. Parameters become sharded ``DTensor`` s: build the optimizer over them afterwards (the
    trainer re-points an optimizer built before).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    student, teacher = model.student, model.teacher
    for name in ("student", "teacher"):
        if not hasattr(getattr(model, name).backbone, "blocks"):
            raise ValueError(f"FSDP shards per transformer block, but the {name} backbone has no `blocks`")
    device = torch.device(device)
    broadcast_module_(model)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for student_block, teacher_block in zip(student.backbone.blocks, teacher.backbone.blocks, strict=True):
        fully_shard([student_block, teacher_block], mesh=mesh)
    for head in ("dino_head", "ibot_head"):
        if getattr(student, head, None) is not None:
            fully_shard([getattr(student, head), getattr(teacher, head)], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters live on the meta device (no memory; buffers are copied):
    the structure, PEFT config, hooks and ``requires_grad`` flags, to load a gathered state dict into
    with ``load_state_dict(state, assign=True)``. Take it before FSDP (which forbids deep copies)."""
    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in module.parameters()
    }
    return copy.deepcopy(module, memo)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_full_module(sharded: nn.Module, template: nn.Module) -> nn.Module | None:
    """Gather an FSDP2-sharded module into ``template`` (its :func:`meta_copy`) on rank 0's CPU.

    Collective: every rank must call it. Returns the full module on rank 0 and ``None`` elsewhere.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(sharded, options=_full_options())
    if not is_rank0():
        return None
    template.load_state_dict(state, assign=True)
    return template


class FullModelState:
    """Checkpoint view of an FSDP2-sharded module: ``state_dict()`` gathers the full tensors onto rank 0's
    CPU (collective; empty on other ranks, which do not write), ``load_state_dict`` takes a full state
    dict on every rank and keeps each rank's shards. The file is a plain, unsharded state dict."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.module, options=_full_options())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.module, dict(state), options=StateDictOptions(full_state_dict=True))


class FullOptimizerState:
    """Checkpoint view of an optimizer over FSDP2 shards, in the format of a plain optimizer's state dict.

    ``state_dict()`` gathers every sharded state tensor (Adam's moments) whole onto rank 0's CPU
    (collective; empty on other ranks); ``load_state_dict`` takes such a dict, e.g. from a run without
    FSDP, on every rank and keeps each rank's shards. Parameters that have not stepped yet (the heads'
    last layer while it is frozen) have no state, as in a plain optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.tensor import DTensor

        state = self.optimizer.state_dict()  # sharded tensors stay DTensors, in parameter order
        full = {
            index: {k: v.full_tensor().cpu() if isinstance(v, DTensor) else v for k, v in values.items()}
            for index, values in state["state"].items()
        }
        return {"state": full, "param_groups": state["param_groups"]} if is_rank0() else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for group in self.optimizer.param_groups for p in group["params"]]

        def shard(index: int, value: Any) -> Any:
            param = params[index]
            if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape:
                return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
            return value

        sharded = {
            index: {k: shard(int(index), v) for k, v in values.items()} for index, values in state["state"].items()
        }
        self.optimizer.load_state_dict({"state": sharded, "param_groups": state["param_groups"]})
