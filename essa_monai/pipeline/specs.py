"""What the ESSA pipeline runs on: the datasets (one bundle each) and the PEFT method presets.

A dataset name maps to the bundle whose ``configs/ssa.json`` does its self-supervised adaptation (SSA),
whose ``configs/train.json`` does its supervised adaptation (SA) and whose ``configs/evaluate.json``
evaluates it. A method is a PEFT spec (``{"method": "lora", "r": 4}``, ``"bitfit"``) or the name of a
preset below.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping, Union

from ..bundle_paths import project_root
from ..peft import make_peft_config

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "SHARED_SSA_CONFIG",
    "METHOD_PRESETS",
    "PeftSpec",
    "dataset_spec",
    "resolve_method",
    "method_label",
    "check_ssa_method",
]

#: a PEFT spec as the bundles take it: a method name or ``{"method": name, **options}``
PeftSpec = Union[str, dict[str, Any]]

#: the SSA config a dataset whose bundle has no ``configs/ssa.json`` falls back to (its data keys are
#: overridden with the dataset's images)
SHARED_SSA_CONFIG = "bundles/isic_apla/configs/ssa.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the pipeline.

    Attributes:
        name: pipeline name (``isic_seg``, ``isic_cls``, ``cxr14``).
        bundle: folder under ``bundles/`` with ``configs/train.json``, ``configs/evaluate.json`` and
            (preferably) ``configs/ssa.json``.
        task: what the bundle does, for the tables.
        split_dataset: the dataset's name in :data:`essa_monai.data.SPLIT_DATASETS`, whose split file the
            bundle's ``train_datalist`` reads (keys ``split_file`` and ``label_fraction``).
    """

    name: str
    bundle: str
    task: str
    split_dataset: str

    @property
    def train_config(self) -> str:
        return f"bundles/{self.bundle}/configs/train.json"

    @property
    def evaluate_config(self) -> str:
        return f"bundles/{self.bundle}/configs/evaluate.json"

    @property
    def own_ssa_config(self) -> str:
        return f"bundles/{self.bundle}/configs/ssa.json"

    @property
    def ssa_config(self) -> str:
        """The bundle's own ``configs/ssa.json``, else :data:`SHARED_SSA_CONFIG` (see :attr:`ssa_config_note`)."""
        return self.own_ssa_config if (project_root() / self.own_ssa_config).is_file() else SHARED_SSA_CONFIG

    @property
    def ssa_config_note(self) -> str | None:
        """Why SSA does not use the bundle's own config, or ``None`` when it does."""
        if self.ssa_config == self.own_ssa_config:
            return None
        return (f"{self.own_ssa_config} does not exist: SSA on {self.name} runs {SHARED_SSA_CONFIG} on this "
                "dataset's images (add the bundle's own SSA config to tune it for this dataset)")


DATASETS: dict[str, DatasetSpec] = {
    "isic_seg": DatasetSpec("isic_seg", "isic_apla", "ISIC 2018 Task 1 lesion segmentation", "isic2018_task1"),
    "isic_cls": DatasetSpec("isic_cls", "isic_cls_apla", "ISIC 2018 Task 3 7-class diagnosis", "isic2018_task3"),
    "cxr14": DatasetSpec("cxr14", "cxr14_lora", "ChestX-ray14 14-finding multi-label", "chestxray14"),
}

#: method presets: ESSA's APLA (all rows of W_O, or 128 rows), MED-PEFT's LoRA on Q and V (r 4, alpha 32,
#: dropout 0.1), BitFit, VPT with 10 tokens (``vpt``: shallow, as ``essa_monai.peft``'s ``vpt``;
#: ``vpt_deep``: new prompts before every block), full fine-tuning and the frozen (linear probe) baseline
METHOD_PRESETS: dict[str, PeftSpec] = {
    "full": "full",
    "frozen": "frozen",
    "apla": {"method": "apla", "r": None},
    "apla_r": {"method": "apla", "r": 128},
    "lora": {"method": "lora", "r": 4, "alpha": 32, "dropout": 0.1, "targets": ["qkv"], "qkv": "qv"},
    "bitfit": "bitfit",
    "vpt": {"method": "vpt", "num_tokens": 10, "deep": False},
    "vpt_deep": {"method": "vpt", "num_tokens": 10, "deep": True},
}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_method(method: PeftSpec | None) -> PeftSpec:
    """A preset name -> its spec; any other spec is checked with :func:`essa_monai.peft.make_peft_config`
    (``ValueError`` naming the valid methods/options) and returned unchanged. ``None`` means ``"full"``.
    A JSON object string (``'{"method": "lora", "r": 8}'``) is accepted too."""
    if method is None:
        return "full"
    if isinstance(method, str) and method.strip().startswith("{"):
        method = json.loads(method)
    if isinstance(method, str) and method in METHOD_PRESETS:
        return METHOD_PRESETS[method]
    if isinstance(method, Mapping):
        method = dict(method)
    elif not isinstance(method, str):
        raise TypeError(f"a PEFT method is a name or a dict, got {type(method).__name__}: {method!r}")
    make_peft_config(method)  # raises ValueError for an unknown method or option
    return method


def _canonical(spec: PeftSpec) -> dict[str, Any]:
    return make_peft_config(spec).to_dict()


def method_label(method: PeftSpec | None) -> str:
    """A short, file-system safe name: the preset's name when ``method`` is (equivalent to) a preset,
    else the method and its options, e.g. ``lora_r8_alpha16``. Unknown methods keep their given name."""
    if isinstance(method, str) and method in METHOD_PRESETS:
        return method
    try:
        spec = resolve_method(method)
        canonical = _canonical(spec)
    except (ValueError, TypeError):  # an invalid method keeps its given name (its run fails and says why)
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", str(method.get("method", method) if isinstance(method, Mapping) else method))
    for name, preset in METHOD_PRESETS.items():
        if _canonical(preset) == canonical:
            return name
    given = {"method": spec} if isinstance(spec, str) else dict(spec)
    parts = [str(given.pop("method"))]
    for key, value in sorted(given.items()):
        value = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        parts.append(f"{key}{value}")
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts))


def check_ssa_method(method: PeftSpec) -> None:
    """Raise ``ValueError`` when SSA with ``method`` cannot feed SA: VPT's prompts are not part of a plain
    ViT, so SSA with VPT exports only ``adapter.pt`` and no ``backbone_merged.pth`` for SA to start from."""
    if make_peft_config(method).method == "vpt":
        raise ValueError(
            "SSA with VPT exports no merged backbone (its prompts are not part of a plain ViT: only adapter.pt "
            "is written), so SA cannot start from it. Use another SSA method (apla, lora, bitfit, full) with "
            "SA method vpt, or ssa=False for the VPT baseline."
        )
