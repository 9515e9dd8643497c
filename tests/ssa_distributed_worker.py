"""SSA runs for tests/test_ssa_distributed.py: launched there with ``torchrun --nproc_per_node=2`` (gloo, CPU)
and imported there for the one-process references.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ssa_distributed_worker.py TASK OUT_DIR

Tasks:
    equality  every case of CASES on fixed global batches, each rank taking its share of the images;
              rank 0 writes OUT_DIR/<case>.pt (final student, teacher EMA tensors, centres, logged losses),
              DDP ranks 1 also write OUT_DIR/<case>.rank1.pt (replicas must be identical).
    killed    RESUME_CASES on the real SSA data path (DistributedSampler, random crops and masks),
              checkpointing every epoch; the DDP run stops after epoch 1, then the FSDP run is
              SIGKILLed right after its epoch-1 checkpoint.
    resume    RESUME_CASES uninterrupted for 2 epochs, then resumed from the killed runs' epoch-1
              checkpoints with other initial weights; both final states, the export and the kNN
              accuracy (FSDP: gathered teacher) go to OUT_DIR/<case>.{uninterrupted,resumed}.pt.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.data import DataLoader as MonaiDataLoader
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Compose

from essa_monai.backbone import create_backbone
from essa_monai.ssa import (
    BatchSeedHandler,
    DINOv2Objective,
    KNNMonitor,
    SSAExportHandler,
    SSANetwork,
    SSAScheduleHandler,
    SSATrainer,
    init_distributed,
    ssa_data_loader,
    ssa_parameter_groups,
)
from essa_monai.ssl import MultiCropd, masked_patch_weights

K = 32  # prototypes
TINY = dict(img_size=42, embed_dim=32, depth=2, num_heads=2)
GLOBAL_BATCH = 8  # images per step over all ranks
PEFT = {
    "apla": {"method": "apla", "r": 8},
    "full": "full",
    "lora": {"method": "lora", "r": 2, "dropout": 0.0},  # dropout would draw different numbers per rank
    "bitfit": "bitfit",
    "vpt": {"method": "vpt", "num_tokens": 2, "deep": True},
}
#: case -> (distributed mode, PEFT method, extra SSANetwork / objective options)
CASES = {
    "ddp-apla": ("ddp", "apla", {}),
    "ddp-full": ("ddp", "full", {}),
    "ddp-lora": ("ddp", "lora", {}),
    "ddp-bitfit-without-ibot": ("ddp", "bitfit", {"ibot_weight": 0.0}),  # mask token unused: DDP must cope
    "ddp-vpt": ("ddp", "vpt", {}),
    "ddp-apla-checkpointing-sinkhorn": ("ddp", "apla", {"grad_checkpointing": True, "centering": "sinkhorn_knopp"}),
    "fsdp-apla": ("fsdp", "apla", {}),
    "fsdp-full": ("fsdp", "full", {}),
    "fsdp-vpt": ("fsdp", "vpt", {"separate_ibot_head": True}),
    "fsdp-lora-checkpointing": ("fsdp", "lora", {"grad_checkpointing": True}),
}
RESUME_CASES = {"ddp-apla": ("ddp", "apla", {}), "fsdp-apla": ("fsdp", "apla", {})}
NETWORK_OPTIONS = ("grad_checkpointing", "separate_ibot_head")


def make_student(peft: str, init_seed: int = 0, **options: Any) -> SSANetwork:
    torch.manual_seed(init_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        backbone = create_backbone("vit_small_patch14_dinov2", **TINY)
    return SSANetwork(backbone, n_prototypes=K, hidden_dim=48, bottleneck_dim=16, peft=PEFT[peft], **options)


def make_trainer(case: tuple, loader, epoch_length: int, init_seed: int = 0, koleo_weight: float = 0.0,
                 handlers: tuple = (), distributed: str | None = None) -> SSATrainer:
    mode, peft, options = case
    student = make_student(peft, init_seed, **{k: v for k, v in options.items() if k in NETWORK_OPTIONS})
    objective = DINOv2Objective(K, koleo_weight=koleo_weight, centering=options.get("centering", "centering"),
                                ibot_weight=options.get("ibot_weight", 1.0))
    optimizer = torch.optim.AdamW(ssa_parameter_groups(student), lr=1e-3)
    schedule = SSAScheduleHandler(lr=5e-3, min_lr=1e-4, warmup_epochs=1, warmup_teacher_temp_epochs=1)
    return SSATrainer(
        "cpu", 2, loader, student, objective, optimizer, epoch_length=epoch_length, clip_grad=0.3,
        freeze_last_layer_epochs=1, train_handlers=[schedule, *handlers],
        distributed=mode if distributed is None else distributed,
    )


def global_batches(n_steps: int = 2) -> list[dict[str, torch.Tensor]]:
    """Fixed multi-crop batches of GLOBAL_BATCH images (no augmentation: the same tensors every run),
    crop-major, with iBOT masks on a 3 x 3 patch grid; in step 0 the last half of the images (rank 1's
    share on 2 ranks) has no masked patch, so that rank runs iBOT on zero patches."""
    g = torch.Generator().manual_seed(7)
    batches = []
    for step in range(n_steps):
        masks = torch.rand(2 * GLOBAL_BATCH, 9, generator=g) < 0.4
        masks &= (torch.rand(2 * GLOBAL_BATCH, 1, generator=g) < 0.6)
        if step == 0:
            masks.view(2, GLOBAL_BATCH, 9)[:, GLOBAL_BATCH // 2:] = False
        batches.append({
            "global_crops": torch.randn(2 * GLOBAL_BATCH, 3, 42, 42, generator=g),
            "local_crops": torch.randn(2 * GLOBAL_BATCH, 3, 14, 14, generator=g),
            "masks": masks,
        })
    return batches


def shard_batch(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """This rank's images of a crop-major global batch (what a DistributedSampler and the collate give)."""
    share = GLOBAL_BATCH // world
    rows = lambda t: t.view(-1, GLOBAL_BATCH, *t.shape[1:])[:, rank * share:(rank + 1) * share].flatten(0, 1)
    local = {k: rows(v) for k, v in batch.items()}
    local["mask_indices"] = local["masks"].flatten().nonzero().flatten()
    local["masks_weight"] = masked_patch_weights(local["masks"])
    return local


def final_state(trainer: SSATrainer) -> dict[str, dict[str, torch.Tensor]] | None:
    """Student (every tensor), teacher EMA tensors and centres, as saved in a checkpoint (gathered under
    FSDP: a collective); ``None`` on ranks other than 0 under FSDP."""
    objects = trainer.checkpoint_dict()
    state = {key: objects[key].state_dict() for key in ("student", "teacher", "objective")}
    if not state["student"]:
        return None
    return {key: {k: v.detach().cpu().clone() for k, v in value.items()} for key, value in state.items()}


def sharing_facts(trainer: SSATrainer) -> dict[str, Any]:
    """Whether the teacher's frozen parameters are the student's (shards), and the fraction of the
    student's parameter elements this rank holds (1 without FSDP)."""
    student, teacher = dict(trainer.student.named_parameters()), dict(trainer.teacher.named_parameters())
    frozen = [n for n, p in student.items() if not p.requires_grad]
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in student.values())
    return {"frozen_shared": bool(frozen) and all(teacher[n] is student[n] for n in frozen),
            "local_fraction": local / sum(p.numel() for p in student.values())}


def run_equality_case(name: str, rank: int = 0, world: int = 1) -> dict[str, Any] | None:
    """Train ``CASES[name]`` for 2 epochs of 2 steps; with ``world == 1`` in one process (``distributed='none'``)
    on the whole global batches."""
    batches = [shard_batch(b, rank, world) for b in global_batches()]
    trainer = make_trainer(CASES[name], batches, epoch_length=len(batches), distributed=None if world > 1 else "none")
    facts = sharing_facts(trainer)
    losses: list[dict[str, float]] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(dict(e.state.output)))
    trainer.run()
    state = final_state(trainer)
    return None if state is None else {**state, "losses": losses, **facts}


def image_datalist(n: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [{"image": torch.rand(1, 60, 52, generator=g)} for _ in range(n)]


def real_loader():
    """The SSA data path: DistributedSampler shards, random multi-crop, collate with random iBOT masks."""
    transform = Compose([MultiCropd(keys="image", global_crops_size=42, local_crops_size=14, local_crops_number=2)])
    return ssa_data_loader(image_datalist(), transform, batch_size=4, seed=5)


def knn_loaders():
    g = torch.Generator().manual_seed(4)
    data = [{"image": torch.rand(3, 42, 42, generator=g), "label": i % 3} for i in range(12)]
    return MonaiDataLoader(data[:8], batch_size=4), MonaiDataLoader(data[8:], batch_size=4)


def run_resume_case(name: str, out: Path, stage: str) -> dict[str, Any] | None:
    """One run of ``RESUME_CASES[name]`` (KoLeo on): ``killed`` stops after its epoch-1 checkpoint;
    ``uninterrupted`` runs 2 epochs; ``resumed`` loads the epoch-1 checkpoint into other weights first."""
    loader = real_loader()
    handlers = [BatchSeedHandler(5), KNNMonitor(*knn_loaders(), n_classes=3, k=3)]
    if stage != "killed":
        handlers.append(SSAExportHandler(out / f"{name}.{stage}.export"))
    trainer = make_trainer(RESUME_CASES[name], loader, epoch_length=len(loader), koleo_weight=0.1,
                           init_seed=123 if stage == "resumed" else 0, handlers=tuple(handlers))
    checkpoints = out / f"{name}.checkpoints"
    if stage == "killed":
        CheckpointSaver(str(checkpoints), trainer.checkpoint_dict(), save_interval=1, epoch_level=True).attach(trainer)

        @trainer.on(Events.EPOCH_COMPLETED(once=1))
        def stop(engine: SSATrainer) -> None:
            dist.barrier()  # rank 0 has written the checkpoint
            if engine.distributed == "fsdp":
                os.kill(os.getpid(), signal.SIGKILL)
            engine.terminate()
    if stage == "resumed":
        (checkpoint,) = checkpoints.glob("*epoch=1*.pt")
        CheckpointLoader(str(checkpoint), trainer.checkpoint_dict(), map_location="cpu").attach(trainer)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    state = final_state(trainer)
    if state is None:
        return None
    return {**state, "losses": losses, "iterations": trainer.state.iteration,
            "knn_accuracy": trainer.state.metrics.get("knn_accuracy")}


def main(task: str, out: Path) -> None:
    init_distributed("ddp")  # starts the gloo process group from torchrun's environment
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    if task == "equality":
        for name in CASES:
            result = run_equality_case(name, rank, world)
            if result is not None:
                torch.save(result, out / (f"{name}.pt" if rank == 0 else f"{name}.rank{rank}.pt"))
    elif task in ("killed", "resume"):
        for name in RESUME_CASES:
            for stage in ("killed",) if task == "killed" else ("uninterrupted", "resumed"):
                result = run_resume_case(name, out, stage)
                if rank == 0:
                    torch.save(result, out / f"{name}.{stage}.pt")
    else:
        raise SystemExit(f"unknown task {task!r}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
