"""Generic PEFT operations: apply a method, list what trains, merge for inference, adapter files.

Typical use::

    model = Classifier(backbone=create_backbone(...), ...)
    apply_peft(model, "apla", backbone="backbone", r=128)   # heads outside `backbone` keep training
    optimizer = torch.optim.AdamW(trainable_parameters(model).values())
    ...
    save_adapter(model, "adapter.pt")          # only the trained tensors (+ APLA row indices)
    merge_peft(model)                          # plain nn.Linear layers again, zero inference cost
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..atomic import atomic_write
from .base import PeftConfig, make_peft_config

__all__ = [
    "ADAPTER_FORMAT",
    "apply_peft",
    "peft_config_of",
    "trainable_parameters",
    "count_parameters",
    "merge_peft",
    "merged_state_dict",
    "adapter_state_dict",
    "load_adapter_state_dict",
    "save_adapter",
    "write_adapter_file",
    "load_adapter",
    "adapter_hash",
]

ADAPTER_FORMAT = "essa-monai-adapter/1"
_CONFIG_ATTR = "peft_config"
_BACKBONE_ATTR = "peft_backbone"


def _target(model: nn.Module, backbone: str | None) -> nn.Module:
    if not backbone:
        return model
    try:
        return model.get_submodule(backbone)
    except AttributeError as err:
        raise ValueError(f"{type(model).__name__} has no submodule {backbone!r} to apply PEFT to") from err


def apply_peft(
    model: nn.Module,
    method: str | PeftConfig | Mapping[str, Any] = "apla",
    *,
    backbone: str | None = None,
    **options: Any,
) -> nn.Module:
    """Apply a PEFT method in place and return ``model``.

    Args:
        model: the network (a timm ViT, or a model containing one).
        method: a method name (``apla``, ``lora``, ``bitfit``, ``vpt``, ``full``, ``frozen``), a
            config object, or a ``to_dict()`` mapping.
        backbone: dotted name of the submodule to adapt (e.g. ``"backbone"``); its parameters are frozen
            except those the method trains. Parameters outside it (heads) are left as they are, so they
            stay trainable. ``None`` adapts the whole ``model``.
        options: method options (e.g. ``r=128`` for APLA, ``r=4, qkv="qv"`` for LoRA).
    """
    if peft_config_of(model) is not None:
        raise ValueError(f"PEFT ({peft_config_of(model).method}) is already applied to this model")
    config = make_peft_config(method, **options)
    target = _target(model, backbone)
    target.requires_grad_(False)
    config.inject(target)
    setattr(model, _CONFIG_ATTR, config)
    setattr(model, _BACKBONE_ATTR, backbone)
    return model


def peft_config_of(model: nn.Module) -> PeftConfig | None:
    """The config :func:`apply_peft` applied to ``model``, or ``None``."""
    return getattr(model, _CONFIG_ATTR, None)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters with ``requires_grad``, by state-dict name (what an optimizer should get)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of scalar parameters; shared tensors are counted once."""
    trainable = sum(p.numel() for p in trainable_parameters(model).values())
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def merge_peft(model: nn.Module) -> nn.Module:
    """Fold every mergeable PEFT layer into a plain module in place (e.g. APLA and LoRA layers become
    ``nn.Linear``), so inference costs what the plain backbone costs. VPT prompts, BitFit biases and full
    fine-tuning have nothing to fold and are left as they are. Returns ``model``."""
    mergeable = [name for name, m in model.named_modules() if name and hasattr(m, "merged_module")]
    for name in mergeable:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        merged = getattr(parent, child).merged_module()
        merged.requires_grad_(False)
        setattr(parent, child, merged)
    return model


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict ``merge_peft(model)`` would have, without changing ``model`` or copying it whole:
    APLA/LoRA layers appear as plain ``nn.Linear`` entries (``weight``, ``bias``)."""
    mergeable = {name: m for name, m in model.named_modules() if name and hasattr(m, "merged_module")}
    state = {
        key: value
        for key, value in model.state_dict().items()
        if not any(key.startswith(name + ".") for name in mergeable)
    }
    for name, module in mergeable.items():
        for key, value in module.merged_module().state_dict().items():
            state[f"{name}.{key}"] = value
    return state


def _adapter_buffer_names(model: nn.Module) -> list[str]:
    names = []
    for prefix, module in model.named_modules():
        for buf in getattr(module, "adapter_buffers", ()):
            names.append(f"{prefix}.{buf}" if prefix else buf)
    return names


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors only (plus adapter buffers such as APLA's row indices), by state-dict name,
    detached and on CPU. For a model with a head, the head's tensors are included."""
    state = model.state_dict()
    names = [*trainable_parameters(model), *_adapter_buffer_names(model)]
    return {name: state[name].detach().cpu().clone() for name in names}


def load_adapter_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load an :func:`adapter_state_dict` into a model that has the same PEFT applied.

    Raises ``ValueError`` when a key is unknown, a shape differs, or a trained tensor is missing.
    """
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    expected = set(trainable_parameters(model)) | set(_adapter_buffer_names(model))
    missing = sorted(expected - set(state))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    problems = [
        f"unknown keys {unknown[:5]}" if unknown else "",
        f"missing trained tensors {missing[:5]}" if missing else "",
        f"shape mismatches {shapes[:5]}" if shapes else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("adapter does not fit this model: " + "; ".join(problems))
    model.load_state_dict(dict(state), strict=False)


def write_adapter_file(
    path: str | Path,
    config: PeftConfig,
    state_dict: Mapping[str, torch.Tensor],
    backbone: str | None = None,
    **metadata: Any,
) -> Path:
    """Write an adapter file atomically (temp file + rename): ``{"format", "peft", "backbone",
    "metadata", "state_dict"}``. :func:`save_adapter` is the usual entry point; this one lets a caller
    supply the tensors (e.g. an SSA teacher's EMA values under the student's trained names)."""
    path = Path(path)
    payload = {
        "format": ADAPTER_FORMAT,
        "peft": config.to_dict(),
        "backbone": backbone,
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def save_adapter(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Write ``model``'s adapter (see :func:`adapter_state_dict`) and PEFT config to ``path``."""
    config = peft_config_of(model)
    if config is None:
        raise ValueError("no PEFT applied to this model: call apply_peft first")
    return write_adapter_file(path, config, adapter_state_dict(model), getattr(model, _BACKBONE_ATTR, None), **metadata)


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an adapter file written by :func:`save_adapter` into ``model`` and return it.

    If ``model`` has no PEFT yet, the saved method is applied first (to the saved ``backbone``
    submodule); APLA's row indices come from the file, so the same rows are trained again.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path}: not an essa-monai adapter file (expected format {ADAPTER_FORMAT!r})")
    saved = make_peft_config(payload["peft"])
    current = peft_config_of(model)
    if current is None:
        apply_peft(model, saved, backbone=payload.get("backbone"))
    elif current.to_dict() != saved.to_dict():
        raise ValueError(f"{path}: adapter is for {saved.to_dict()}, but the model has {current.to_dict()}")
    try:
        load_adapter_state_dict(model, payload["state_dict"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return model


def adapter_hash(model: nn.Module, length: int = 12) -> str:
    """Short SHA-256 of the adapter tensors (names, shapes and values): identifies a trained adapter."""
    digest = hashlib.sha256()
    for name, tensor in sorted(adapter_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]
