"""A bundle's trained (merged) model, ready for inference: network, task, input size, names, provenance."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["InferenceModel", "UsageError", "load_bundle_model", "resolve_device", "bundle_task",
           "segmentation_class_names"]

#: tasks an :class:`InferenceModel` can have
TASKS = ("segmentation", "classification", "multilabel")


class UsageError(ValueError):
    """A problem with the command itself (bundle, model file, inputs, options): exit code 2."""


@dataclass
class InferenceModel:
    """What inference needs from a bundle.

    ``task`` is ``"segmentation"`` (per-pixel softmax, argmax), ``"classification"`` (softmax over
    ``class_names``, one predicted class) or ``"multilabel"`` (sigmoid per class, every class with
    probability >= ``threshold`` predicted).
    """

    network: nn.Module
    task: str
    img_size: int
    device: torch.device
    class_names: list[str] = field(default_factory=list)
    name: str = ""
    version: str = ""
    adapter_hash: str = ""
    model_file: str = ""
    threshold: float = 0.5


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} requested but CUDA is not available")
    return device


def segmentation_class_names(metadata: dict[str, Any], num_classes: int) -> list[str]:
    """Names of a segmentation network's ``num_classes`` output channels: the ``channel_def`` of the
    first output in ``metadata.json``'s ``network_data_format``, else ``background``/``foreground``
    (two classes) or ``class_<k>``."""
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    channels = next(iter(outputs.values()), {}).get("channel_def", {})
    default = ["background", "foreground"] if num_classes == 2 else [f"class_{k}" for k in range(num_classes)]
    return [str(channels.get(str(k), name)) for k, name in enumerate(default)]


def bundle_task(config: dict[str, Any]) -> str:
    """The task of a parsed-but-not-instantiated train config: a classifier trained with a BCE loss is
    ``"multilabel"`` (sigmoid), any other classifier ``"classification"`` (softmax), a network with a
    pixel-wise head (UperNet) ``"segmentation"``."""
    target = str(config.get("network_def", {}).get("_target_", ""))
    if "Classifier" not in target:
        return "segmentation"
    loss = json.dumps(config.get("loss", ""))
    return "multilabel" if "BCE" in loss or config.get("multi_label") else "classification"


def load_bundle_model(
    bundle: str | os.PathLike[str],
    model_file: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    overrides: dict[str, Any] | None = None,
) -> InferenceModel:
    """Build ``network_def`` of ``<bundle>/configs/train.json`` (with ``overrides``, e.g. a tiny
    ``backbone_kwargs``), load the merged model (default ``<bundle>/models/model.pt``) and read the
    provenance (``configs/metadata.json`` name/version, ``model.json`` adapter hash).

    Raises:
        UsageError: no such bundle, no model file, or a model file that does not fit the network.
    """
    from monai.bundle import ConfigParser

    from ..bundle_paths import project_root_of, working_directory
    from ..sa import load_merged_model

    bundle_dir = Path(bundle).resolve()
    config_file = bundle_dir / "configs" / "train.json"
    if not config_file.is_file():
        raise UsageError(f"not a bundle: {config_file} does not exist")
    model_file = Path(model_file).resolve() if model_file else bundle_dir / "models" / "model.pt"
    if not model_file.is_file():
        raise UsageError(f"trained model not found: {model_file} (train the bundle first, or pass --model_file)")
    meta_file = bundle_dir / "configs" / "metadata.json"
    metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    info_file = model_file.with_suffix(".json")
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}

    torch_device = resolve_device(device)
    with working_directory(project_root_of(bundle_dir)):
        parser = ConfigParser()
        parser.read_config(str(config_file))
        parser.update({"random_init_warning": False, "backbone_weights": None, **(overrides or {})})
        task = bundle_task(parser.get())
        try:
            network = parser.get_parsed_content("network_def", instantiate=True)
            class_names = list(parser.get_parsed_content("class_names")) if "class_names" in parser else []
            img_size = int(parser.get_parsed_content("img_size"))
            n_seg = int(parser.get_parsed_content("num_classes")) if task == "segmentation" and "num_classes" in parser else 2
        except Exception as err:
            raise UsageError(f"{config_file}: cannot build the network: {err}") from err
    try:
        network = load_merged_model(network, model_file)
    except (ValueError, RuntimeError) as err:
        raise UsageError(str(err)) from err
    if task == "segmentation" and not class_names:
        class_names = segmentation_class_names(metadata, n_seg)
    return InferenceModel(
        network=network.to(torch_device).eval(), task=task, img_size=img_size, device=torch_device,
        class_names=class_names, name=str(metadata.get("name", bundle_dir.name)),
        version=str(metadata.get("version", "")), adapter_hash=str(info.get("adapter_hash", "")),
        model_file=str(model_file),
    )
