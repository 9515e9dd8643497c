"""A bundle prepared for MONAI Label: standalone configs in a workspace folder, next to its model.

Our bundles are model-zoo style: ``configs/train.json`` takes shared wiring from ``bundles/common`` with
``%`` macros (paths relative to the project root), and evaluation/inference are overlays on it. MONAI
Label's bundle tasks read ``configs/inference.json`` / ``configs/train.json`` alone, from any working
directory, and override nested ids such as ``train#dataset#data``. So the app serves a copy of each
bundle in a workspace, ``<workspace>/<name>/``::

    configs/train.json       train.json with every macro replaced by its content (it stands alone)
    configs/inference.json   the same plus MONAI Label's keys: preprocessing, postprocessing, inferer
    configs/multi_gpu_train.json  the bundle's DDP overlay, macros replaced (MONAI Label's multi-GPU training)
    configs/metadata.json    copied from the bundle
    models/model.pt          the merged model (copied from the bundle when newer; MONAI Label training
                             writes here, never into the bundle in the repository)

Nothing here imports MONAI Label, so it is tested in the main environment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write
from ..bundle_paths import project_root_of, working_directory
from ..inference.bundle import bundle_task, segmentation_class_names

__all__ = ["ServedBundle", "flatten_config", "prepare_served_bundle", "MODEL_FILES"]

logger = logging.getLogger(__name__)

#: files of ``models/`` that travel together: merged model, its provenance, the adapter
MODEL_FILES = ("model.pt", "model.json", "adapter.pt")

_MACRO = "%"


def _has_macro(config: Any) -> bool:
    if isinstance(config, dict):
        return any(_has_macro(v) for v in config.values())
    if isinstance(config, list):
        return any(_has_macro(v) for v in config)
    return isinstance(config, str) and config.startswith(_MACRO)


def flatten_config(config_files: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str],
                   max_depth: int = 8) -> dict[str, Any]:
    """Read ``config_files`` (later files replace earlier top-level keys, as ``--config_file "[a, b]"``
    does) and replace every ``%file::id`` macro by its content, again and again since that content can
    hold macros of its own; macro paths are relative to ``root``. Returns a config that needs no other
    file and no particular working directory.

    Raises:
        ValueError: macros nested deeper than ``max_depth`` (a macro that includes itself).
    """
    from monai.bundle import ConfigParser

    with working_directory(root):
        parser = ConfigParser()
        parser.read_config([os.fspath(Path(f).resolve()) for f in config_files])
        for _ in range(max_depth):
            if not _has_macro(parser.get()):
                # ConfigParser adds an empty "_meta_"; a served config has its metadata in metadata.json
                return {k: v for k, v in parser.get().items() if k != "_meta_" or v}
            parser.resolve_macro_and_relative_ids()
    raise ValueError(f"{[os.fspath(f) for f in config_files]}: macros nested deeper than {max_depth} levels")


@dataclass
class ServedBundle:
    """A bundle ready for MONAI Label's bundle tasks.

    ``task``: ``"segmentation"``, ``"classification"`` (softmax, one class) or ``"multilabel"``
    (sigmoid per class). ``class_names``: output channel names (segmentation: ``["background", ...]``).
    """

    name: str
    source: Path
    path: Path
    task: str
    class_names: list[str] = field(default_factory=list)

    @property
    def model_file(self) -> Path:
        return self.path / "models" / "model.pt"

    @property
    def is_segmentation(self) -> bool:
        return self.task == "segmentation"


def _inference_keys(task: str) -> dict[str, Any]:
    """MONAI Label's inference keys: the bundle's own input transforms, then per-pixel softmax resized to
    the image and argmax (segmentation) or class probabilities (classification)."""
    if task == "segmentation":
        post: list[Any] = [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "essa_monai.sa.ResizeToOriginald", "keys": "pred", "mode": "bilinear"},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]
    else:
        activation = {"sigmoid": True} if task == "multilabel" else {"softmax": True}
        post = [{"_target_": "Activationsd", "keys": "pred", **activation}]
    return {
        "preprocessing": "$essa_monai.data.make_backbone_transforms('image', spatial_size=@img_size)",
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "inferer": {"_target_": "SimpleInferer"},
    }


def _class_names(config: dict[str, Any], task: str, source: Path) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    if "class_names" in config:
        return [str(c) for c in parser.get_parsed_content("class_names")]
    if task != "segmentation":
        raise ValueError(f"{source}/configs/train.json: a classification bundle needs 'class_names'")
    meta_file = source / "configs" / "metadata.json"
    metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    num_classes = int(parser.get_parsed_content("num_classes")) if "num_classes" in config else 2
    return segmentation_class_names(metadata, num_classes)


def _sync_models(source: Path, dest: Path) -> None:
    """Copy the bundle's trained model into the workspace when the workspace has none or an older one
    (a model trained later with ``monai.bundle run`` wins; one trained in MONAI Label is kept)."""
    src_model, dest_model = source / "models" / "model.pt", dest / "models" / "model.pt"
    if not src_model.is_file():
        return
    if dest_model.is_file() and dest_model.stat().st_mtime >= src_model.stat().st_mtime:
        return
    (dest / "models").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / "models" / name).is_file():
            shutil.copy2(source / "models" / name, dest / "models" / name)
    logger.info("%s: serving the model trained in %s", dest.name, src_model)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=2)))


def prepare_served_bundle(
    source: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
) -> ServedBundle:
    """Write the MONAI Label copy of bundle ``source`` to ``<workspace>/<bundle name>/`` (see the module
    docstring) and return what the tasks need to know about it.

    Args:
        source: the bundle folder, e.g. ``bundles/isic_apla``.
        workspace: where served bundles live (the app uses ``<studies>/.essa_monai/bundles``).
        data_dir: the ``data_dir`` of the served configs (the datastore folder; the datalists
            themselves come from MONAI Label).
        overrides: top-level keys to replace in both configs, e.g. ``{"img_size": 56}``.

    Raises:
        FileNotFoundError: ``source`` has no ``configs/train.json``.
    """
    source = Path(source).resolve()
    train_file = source / "configs" / "train.json"
    if not train_file.is_file():
        raise FileNotFoundError(f"not a bundle: {train_file} does not exist")
    dest = Path(workspace).resolve() / source.name

    train = flatten_config([train_file], project_root_of(source))
    train.update(overrides or {})
    train.update({"bundle_root": str(dest), "data_dir": str(Path(data_dir).resolve())})
    task = bundle_task(train)
    class_names = _class_names(train, task, source)

    inference = {
        **train,
        "evaluate_only": True,
        "random_init_warning": False,
        "backbone_weights": None,  # the weights are in models/model.pt
        "network_structure": train["network_def"],
        "network_def": "$essa_monai.sa.merged_network(@network_structure, @peft)",
        **_inference_keys(task),
    }
    _write_json(dest / "configs" / "train.json", train)
    _write_json(dest / "configs" / "inference.json", inference)
    multi_gpu = source / "configs" / "multi_gpu_train.json"
    if multi_gpu.is_file():  # the overlay MONAI Label puts over train.json for torchrun
        _write_json(dest / "configs" / "multi_gpu_train.json", flatten_config([multi_gpu], project_root_of(source)))
    for name in ("metadata.json", "logging.conf"):
        if (source / "configs" / name).is_file():
            shutil.copy2(source / "configs" / name, dest / "configs" / name)
    _sync_models(source, dest)
    return ServedBundle(name=source.name, source=source, path=dest, task=task, class_names=class_names)
