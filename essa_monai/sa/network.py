"""Networks for supervised adaptation: the PEFT-wrapped training network and the merged inference one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..peft import apply_peft, make_peft_config

__all__ = ["peft_network", "merged_network", "load_merged_model", "unwrap_network"]

#: methods whose trained tensors stay separate after merging (the network needs them applied to load)
_UNMERGEABLE = ("vpt",)


def peft_network(
    network: nn.Module,
    peft: str | dict[str, Any] | None,
    backbone: str = "backbone",
    device: torch.device | str | None = None,
    init_model_file: str | Path | None = None,
) -> nn.Module:
    """Apply ``peft`` to ``network.<backbone>`` (heads stay trainable; ``None`` means full fine-tuning) and
    move it to ``device``. When a ``torch.distributed`` process group is initialised (``torchrun``), the
    result is wrapped in ``DistributedDataParallel``; :func:`unwrap_network` gets the network back.

    ``init_model_file``: continue from a merged model written by an earlier training of the same
    network (``MergedModelExportHandler``): its weights are loaded into ``network`` before ``peft`` is
    applied, so training starts from that model's outputs. Models trained with a method that cannot be
    merged (VPT) cannot be continued this way (``ValueError``).
    """
    if init_model_file:
        saved = _saved_peft(Path(init_model_file))
        if saved and make_peft_config(saved).method in _UNMERGEABLE:
            raise ValueError(f"{init_model_file}: a {make_peft_config(saved).method} model cannot be continued "
                             "(its prompts are not merged into the ViT); start from the backbone instead")
        load_merged_model(network, init_model_file, backbone=backbone).train()
    network = apply_peft(network, peft if peft is not None else "full", backbone=backbone)
    if device is not None:
        network = network.to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device_ids = [torch.device(device).index] if device is not None and torch.device(device).type == "cuda" else None
        network = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    return network


def unwrap_network(network: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``network`` itself)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return network.module if isinstance(network, wrappers) else network


def _saved_peft(model_file: Path) -> Any:
    """The PEFT config recorded next to a merged model (``<model_file>.json``), or ``None``."""
    info_file = model_file.with_suffix(".json")
    return json.loads(info_file.read_text()).get("peft") if info_file.is_file() else None


def merged_network(network: nn.Module, peft: str | dict[str, Any] | None, backbone: str = "backbone") -> nn.Module:
    """The structure a merged model of ``network`` trained with ``peft`` loads into: ``network`` itself,
    or, for methods whose trained tensors are not folded into the ViT (VPT), ``network`` with ``peft``
    applied."""
    if peft and make_peft_config(peft).method in _UNMERGEABLE:
        apply_peft(network, peft, backbone=backbone)
    return network


def load_merged_model(network: nn.Module, model_file: str | Path, backbone: str = "backbone") -> nn.Module:
    """Load a merged model written at the end of training (``MergedModelExportHandler``) into ``network``
    (built without PEFT). For VPT, whose prompts are not folded into the ViT, the method recorded in
    ``<model_file>.json`` is applied first. Returns ``network`` in eval mode.

    Raises ``FileNotFoundError`` naming the file, ``ValueError`` when it does not fit the network.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"trained model not found: {model_file} (run the bundle's train config first)")
    merged_network(network, _saved_peft(model_file), backbone=backbone)
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{model_file}: does not fit the network: {str(err)[:600]}") from err
    return network.eval()
