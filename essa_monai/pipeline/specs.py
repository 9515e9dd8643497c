"""What the ESSA pipeline runs on: the datasets (one SA bundle each) and the PEFT method presets.

A dataset name maps to the bundle whose ``configs/train.json`` does its supervised adaptation (SA) and
whose ``configs/evaluate.json`` evaluates it; self-supervised adaptation (SSA) always runs
``bundles/isic_apla/configs/ssa.json`` on the dataset's unlabeled training images. A method is a PEFT
spec (``{"method": "lora", "r": 4}``, ``"bitfit"``) or the name of a preset below.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping, Union

from ..peft import make_peft_config

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "SSA_CONFIG",
    "METHOD_PRESETS",
    "PeftSpec",
    "dataset_spec",
    "resolve_method",
    "method_label",
    "check_ssa_method",
]

#: a PEFT spec as the bundles take it: a method name or ``{"method": name, **options}``
PeftSpec = Union[str, dict[str, Any]]

#: the SSA bundle config (DINOv2 objective + PEFT); its data keys are overridden per dataset
SSA_CONFIG = "bundles/isic_apla/configs/ssa.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the pipeline.

    Attributes:
        name: pipeline name (``isic_seg``, ``isic_cls``, ``cxr14``).
        bundle: folder under ``bundles/`` with ``configs/train.json`` and ``configs/evaluate.json``.
        task: what the bundle does, for the tables.
        fraction_key: top-level bundle key that selects a label fraction natively (cxr14's
            ``label_fraction``, whose seeded patient-wise split is written to ``split_file``), or ``None``:
            the pipeline then draws the fraction itself from the bundle's ``train_datalist``
            (:func:`essa_monai.data.make_fraction_splits`, stratified when labels are class indices).
        split_file_key: top-level key where a native split is written (redirected into the run folder).
    """

    name: str
    bundle: str
    task: str
    fraction_key: str | None = None
    split_file_key: str | None = None

    @property
    def train_config(self) -> str:
        return f"bundles/{self.bundle}/configs/train.json"

    @property
    def evaluate_config(self) -> str:
        return f"bundles/{self.bundle}/configs/evaluate.json"


DATASETS: dict[str, DatasetSpec] = {
    "isic_seg": DatasetSpec("isic_seg", "isic_apla", "ISIC 2018 Task 1 lesion segmentation"),
    "isic_cls": DatasetSpec("isic_cls", "isic_cls_apla", "ISIC 2018 Task 3 7-class diagnosis"),
    "cxr14": DatasetSpec("cxr14", "cxr14_lora", "ChestX-ray14 14-finding multi-label",
                         fraction_key="label_fraction", split_file_key="split_file"),
}

#: method presets: ESSA's APLA (all rows of W_O, or 128 rows), MED-PEFT's LoRA on Q and V (r 4, alpha 32,
#: dropout 0.1), BitFit, deep/shallow VPT with 10 tokens, full fine-tuning and the frozen (linear probe) baseline
METHOD_PRESETS: dict[str, PeftSpec] = {
    "full": "full",
    "frozen": "frozen",
    "apla": {"method": "apla", "r": None},
    "apla_r": {"method": "apla", "r": 128},
    "lora": {"method": "lora", "r": 4, "alpha": 32, "dropout": 0.1, "targets": ["qkv"], "qkv": "qv"},
    "bitfit": "bitfit",
    "vpt": {"method": "vpt", "num_tokens": 10, "deep": True},
    "vpt_shallow": {"method": "vpt", "num_tokens": 10, "deep": False},
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
