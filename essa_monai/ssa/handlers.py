"""Ignite handlers for SSA: schedules, per-batch seeding, kNN monitor, export at the end."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from ..ssl import lr_schedule, teacher_momentum_schedule, teacher_temp_schedule, weight_decay_schedule
from .distributed import broadcast_from_rank0, rank
from .export import export_adapted_backbone

__all__ = ["SSAScheduleHandler", "BatchSeedHandler", "KNNMonitor", "SSAExportHandler", "knn_predict"]

logger = logging.getLogger(__name__)


class SSAScheduleHandler:
    """Per-iteration DINOv2 schedules, built when the run starts (from ``max_epochs * epoch_length``).

    Sets, at every ``ITERATION_STARTED``: each optimizer group's ``lr`` (linear warm-up then cosine to
    ``min_lr``) and ``weight_decay`` (cosine ``weight_decay`` -> ``weight_decay_end``, times the group's
    ``wd_multiplier``), ``engine.state.teacher_momentum`` (cosine ``momentum_teacher`` -> 1.0) and
    ``engine.state.teacher_temp`` (linear ``warmup_teacher_temp`` -> ``teacher_temp`` over
    ``warmup_teacher_temp_epochs``, then constant). Epoch arguments may be fractional.
    """

    def __init__(
        self,
        lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 1.0,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.2,
        momentum_teacher: float = 0.994,
        final_momentum_teacher: float = 1.0,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_teacher_temp_epochs: float = 1.0,
    ) -> None:
        self.lr, self.min_lr, self.warmup_epochs = lr, min_lr, warmup_epochs
        self.weight_decay, self.weight_decay_end = weight_decay, weight_decay_end
        self.momentum_teacher, self.final_momentum_teacher = momentum_teacher, final_momentum_teacher
        self.warmup_teacher_temp, self.teacher_temp = warmup_teacher_temp, teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.schedules: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.build)
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def build(self, engine: Engine) -> None:
        per_epoch = engine.state.epoch_length
        total = engine.state.max_epochs * per_epoch
        warmup = min(int(self.warmup_epochs * per_epoch), total)
        self.schedules = {
            "lr": lr_schedule(self.lr, total, warmup_iters=warmup, min_lr=self.min_lr),
            "weight_decay": weight_decay_schedule(total, self.weight_decay, self.weight_decay_end),
            "teacher_momentum": teacher_momentum_schedule(total, self.momentum_teacher, self.final_momentum_teacher),
            "teacher_temp": teacher_temp_schedule(
                max(int(self.warmup_teacher_temp_epochs * per_epoch), 1), self.warmup_teacher_temp, self.teacher_temp
            ),
        }

    def values(self, iteration: int) -> dict[str, float]:
        """Schedule values at 0-based ``iteration``."""
        if self.schedules is None:
            raise RuntimeError("schedules are built when the engine starts")
        return {name: float(schedule[iteration]) for name, schedule in self.schedules.items()}

    def __call__(self, engine: Engine) -> None:
        values = self.values(engine.state.iteration - 1)
        for group in engine.optimizer.param_groups:
            group["lr"] = values["lr"]
            group["weight_decay"] = values["weight_decay"] * group.get("wd_multiplier", 1.0)
        engine.state.lr = values["lr"]
        engine.state.teacher_momentum = values["teacher_momentum"]
        engine.state.teacher_temp = values["teacher_temp"]


class BatchSeedHandler:
    """Seed ``random``, NumPy and torch with ``seed + iteration`` (and the rank) before every batch is drawn.

    Crops, iBOT masks and dropout then depend only on the iteration, so a run resumed from a checkpoint
    continues exactly as an uninterrupted one would (with ``num_workers=0``: worker processes draw from
    their own generators). Seeding per batch rather than per epoch matters: a ``DataLoader`` draws from
    torch's generator whenever Ignite re-creates its iterator, which happens at different moments in a
    resumed and an uninterrupted run. Under ``torchrun`` rank ``r`` adds ``r * 2**32`` (NumPy: seeds
    ``[seed + iteration, r]``), so ranks draw different crops and masks, as DINOv2's per-rank seeds do;
    rank 0 draws what one process draws.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed, process = int(self.seed) + int(engine.state.iteration), rank()
        random.seed(seed + (process << 32))
        np.random.seed([seed % 2**32, process] if process else seed % 2**32)
        torch.manual_seed(seed + (process << 32))


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    features: torch.Tensor,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Weighted kNN classification as in DINO's evaluation.

    Args:
        train_features: (N, D) L2-normalised; train_labels: (N,) int class indices.
        features: (M, D) L2-normalised queries.
        k: neighbours (capped at N); temperature: weights are ``exp(cosine / temperature)``.

    Returns:
        (M, n_classes) class scores; ``argmax`` is the prediction.
    """
    k = min(k, train_features.shape[0])
    similarity = features @ train_features.T  # (M, N) cosine similarities
    top_sim, top_idx = similarity.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    votes = F.one_hot(train_labels[top_idx], n_classes).to(weights.dtype)  # (M, k, C)
    return (votes * weights.unsqueeze(-1)).sum(dim=1)


class KNNMonitor:
    """Every ``interval`` epochs, kNN accuracy of the teacher backbone's CLS features on a small labelled set.

    ``train_loader``/``val_loader`` yield dicts with ``image`` (B, 3, H, W) and ``label`` (B,) class
    indices or (B, C) one-hot. The result goes to ``engine.state.metrics["knn_accuracy"]`` (0-1).
    """

    def __init__(
        self,
        train_loader: Iterable,
        val_loader: Iterable,
        n_classes: int,
        k: int = 20,
        temperature: float = 0.07,
        interval: int = 1,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        self.train_loader, self.val_loader, self.n_classes = train_loader, val_loader, n_classes
        self.k, self.temperature, self.interval = k, temperature, interval
        self.image_key, self.label_key = image_key, label_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def _features(self, backbone: torch.nn.Module, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        device = next(backbone.parameters()).device
        for batch in loader:
            x = torch.as_tensor(batch[self.image_key]).to(device)
            y = torch.as_tensor(batch[self.label_key])
            y = y.argmax(dim=-1) if y.ndim > 1 else y
            feats.append(F.normalize(backbone(x).float(), dim=-1).cpu())
            labels.append(y.long().reshape(-1))
        return torch.cat(feats), torch.cat(labels)

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        # Rank 0 evaluates (under FSDP every rank helps gather the teacher first); every rank then gets
        # the accuracy, so a handler acting on it acts alike on all ranks.
        backbones = engine.rank0_backbones()
        accuracy = float("nan")
        if backbones is not None:
            backbone = backbones[1]
            was_training = backbone.training
            backbone.eval()
            train_x, train_y = self._features(backbone, self.train_loader)
            val_x, val_y = self._features(backbone, self.val_loader)
            backbone.train(was_training)
            scores = knn_predict(train_x, train_y, val_x, self.n_classes, self.k, self.temperature)
            accuracy = float((scores.argmax(dim=1) == val_y).float().mean())
            logger.info("epoch %d: kNN (k=%d) accuracy %.4f", engine.state.epoch, self.k, accuracy)
        engine.state.metrics["knn_accuracy"] = broadcast_from_rank0(accuracy)


class SSAExportHandler:
    """At the end of the run, export the teacher backbone (merged weights + adapter-only file), on rank 0.

    See :func:`essa_monai.ssa.export.export_adapted_backbone` for the files written to ``output_dir``.
    Attach it on every rank: under FSDP all ranks gather the teacher's shards for rank 0.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        backbones = engine.rank0_backbones()
        if backbones is None:
            return
        paths = export_adapted_backbone(*backbones, self.output_dir)
        engine.state.export_paths = {k: str(v) for k, v in paths.items()}
        logger.info("exported adapted backbone: %s", ", ".join(str(p) for p in paths.values()))
