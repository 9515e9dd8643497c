"""Ignite handlers for supervised adaptation with MONAI's ``SupervisedTrainer``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from torch import nn

from ..atomic import atomic_write
from ..optim import clip_gradients
from ..peft import adapter_hash, merged_state_dict, peft_config_of, save_adapter
from .network import unwrap_network

__all__ = ["GradientClipHandler", "MergedModelExportHandler"]

logger = logging.getLogger(__name__)


class GradientClipHandler:
    """Clip the global gradient norm of the trainer's optimizer between ``backward`` and ``step``
    (MONAI's ``IterationEvents.BACKWARD_COMPLETED``), with :func:`essa_monai.optim.clip_gradients`.

    With ``SupervisedTrainer(amp=True)`` the gradients at that event are still multiplied by the loss
    scale, so the trainer's ``GradScaler`` unscales them first; ``scaler.step`` then steps on the
    clipped, unscaled gradients. With ``accumulation_steps > 1`` it clips only on the iterations that
    step the optimizer (the accumulated gradient). The norm before clipping goes to
    ``engine.state.grad_norm`` (float).
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = max_norm

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    @staticmethod
    def _steps_now(engine: Engine) -> bool:
        """Whether ``SupervisedTrainer._iteration`` calls ``optimizer.step`` after this backward."""
        accumulation = getattr(engine, "accumulation_steps", 1)
        if accumulation <= 1:
            return True
        epoch_length = engine.state.epoch_length
        local = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        return (local + 1) % accumulation == 0 or (epoch_length is not None and local + 1 == epoch_length)

    def __call__(self, engine: Engine) -> None:
        if self._steps_now(engine):
            scaler = getattr(engine, "scaler", None) if getattr(engine, "amp", False) else None
            engine.state.grad_norm = clip_gradients(engine.optimizer, self.max_norm, scaler)


class MergedModelExportHandler:
    """When training completes, write the model for evaluation and inference:

    * ``model_file``: the network's state dict with PEFT merged (plain ``nn.Linear``; keys of the network
      built without PEFT), so inference costs what the plain backbone costs;
    * ``adapter_file`` (optional): the adapter-only file (PEFT tensors + heads);
    * ``<model_file>.json``: PEFT config and adapter hash.

    ``load_best``: load the best checkpoint (e.g. the evaluator's best key metric) into the network first.
    """

    def __init__(
        self,
        network: nn.Module,
        model_file: str | Path,
        adapter_file: str | Path | None = None,
        load_best: str | Path | None = None,
    ) -> None:
        self.network, self.model_file = network, Path(model_file)
        self.adapter_file = Path(adapter_file) if adapter_file else None
        self.load_best = load_best

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return  # one writer: rank 0
        network = unwrap_network(self.network)
        if self.load_best is not None:
            best = sorted(Path(self.load_best).parent.glob(Path(self.load_best).name))
            if best:
                state = torch.load(best[-1], map_location="cpu", weights_only=True)
                network.load_state_dict(state.get("network", state))
                logger.info("loaded best checkpoint %s before export", best[-1])
        config = peft_config_of(network)
        info = {"peft": config.to_dict() if config else None, "adapter_hash": adapter_hash(network) if config else None}
        if self.adapter_file is not None and config is not None:
            save_adapter(network, self.adapter_file)
        merged = {k: v.detach().cpu() for k, v in merged_state_dict(network).items()}
        atomic_write(self.model_file, lambda tmp: torch.save(merged, tmp))
        self.model_file.with_suffix(".json").write_text(json.dumps(info, indent=2))
        engine.state.exported_model = str(self.model_file)
        logger.info("exported merged model to %s", self.model_file)
