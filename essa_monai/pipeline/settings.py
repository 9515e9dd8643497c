"""What defines one ESSA run (:class:`ESSASettings`) and where it goes (:func:`run_dir_of`)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from .records import read_json
from .specs import PeftSpec, method_label

__all__ = ["ESSASettings", "run_dir_of", "read_result", "RESULT_FILE", "settings_options"]

#: the record of a run, written last (or on failure)
RESULT_FILE = "result.json"


@dataclasses.dataclass
class ESSASettings:
    """Everything that defines one ESSA run (output paths excluded). ``None`` keeps the bundle's value.

    Attributes:
        dataset: isic_seg (bundle isic_apla), isic_cls (isic_cls_apla) or cxr14 (cxr14_lora), the keys
            of essa_monai.pipeline.DATASETS.
        ssa_method: PEFT method for SSA, a preset of essa_monai.pipeline.METHOD_PRESETS (apla, apla_r, lora,
            bitfit, vpt, vpt_deep, full, frozen) or a JSON spec like '{"method": "apla", "r": 64}'.
            SSA with VPT is refused (it exports no merged backbone for SA).
        sa_method: PEFT method for SA, a preset or a spec; None means the same as ssa_method.
        label_fraction: fraction in (0, 1] of the labelled training images SA trains on (seeded,
            stratified, nested 1 % < 10 % < 100 %, read from the dataset's split file, made once per seed
            and data folder). SSA always sees all unlabeled training images.
        ssa: False skips SSA, so SA starts from backbone_weights (the baseline).
        data_dir: the dataset folder in its official layout; None means the synthetic demo data.
        backbone_name: timm DINOv2 name, e.g. vit_base_patch14_dinov2 (default the bundles',
            vit_small_patch14_dinov2).
        backbone_weights: official DINOv2 (or timm) weights file SSA starts from (SA too without SSA), e.g.
            dinov2_vits14_pretrain.pth; None means random initialisation (tests and demos only).
        backbone_kwargs: extra timm arguments, e.g. a tiny '{"embed_dim": 32, "depth": 2, "num_heads": 2}'.
        img_size: SA input size in pixels (a multiple of 14), also SSA's global crop size unless
            ssa_overrides sets global_crops_size.
        epochs: SA epochs.
        batch_size: SA images per batch.
        ssa_epochs: SSA epochs.
        ssa_batch_size: SSA images per batch (each gives 2 global and N local crops).
        ssa_overrides: other top-level keys of the dataset's SSA config (<bundle>/configs/ssa.json), e.g.
            '{"lr": 0.0002, "n_prototypes": 4096}'. The kNN monitor (knn_monitor) is off unless set here, as
            it needs the ISIC 2018 Task 3 folders.
        sa_overrides: other top-level keys of the dataset's SA train.json, e.g. '{"lr": 0.001, "head_lr": 0.01}'.
        val_split: split of the final evaluation (SA always selects its best epoch on validation).
        test: also evaluate on the test split; the results table then reports test.
        seed: seed of SSA, SA and the label-fraction split.
    """

    dataset: str = "isic_cls"
    ssa_method: PeftSpec | None = "apla"
    sa_method: PeftSpec | None = None
    label_fraction: float = 1.0
    ssa: bool = True
    data_dir: str | None = None
    backbone_name: str | None = None
    backbone_weights: str | None = None
    backbone_kwargs: dict[str, Any] | None = None
    img_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    ssa_epochs: int | None = None
    ssa_batch_size: int | None = None
    ssa_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    sa_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_split: str = "validation"
    test: bool = False
    seed: int = 0

    # ---- derived names -------------------------------------------------------------------------------
    @property
    def sa_spec_given(self) -> PeftSpec | None:
        return self.ssa_method if self.sa_method is None else self.sa_method

    @property
    def ssa_label(self) -> str:
        return method_label(self.ssa_method) if self.ssa else "none"

    @property
    def sa_label(self) -> str:
        return method_label(self.sa_spec_given)

    @property
    def row_label(self) -> str:
        """Row name in the results table: ``apla`` (SSA and SA with APLA), ``apla>lora``, ``lora (no SSA)``."""
        if not self.ssa:
            return f"{self.sa_label} (no SSA)"
        return self.sa_label if self.ssa_label == self.sa_label else f"{self.ssa_label}>{self.sa_label}"

    @property
    def fraction_label(self) -> str:
        return f"frac{float(self.label_fraction):g}"

    @property
    def report_split(self) -> str:
        return "test" if self.test else self.val_split


def run_dir_of(settings: ESSASettings, output_root: str | os.PathLike[str]) -> Path:
    """``<output_root>/<dataset>/<ssa label>-<sa label>/frac<f>``."""
    return Path(output_root) / settings.dataset / f"{settings.ssa_label}-{settings.sa_label}" / settings.fraction_label


def read_result(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``result.json`` of a run folder, or ``None``."""
    return read_json(Path(run_dir) / RESULT_FILE)


def _field_docs() -> dict[str, list[str]]:
    """The description lines of each :class:`ESSASettings` attribute, as written in its docstring."""
    section = ESSASettings.__doc__.split("Attributes:\n", 1)[1]
    docs: dict[str, list[str]] = {}
    for line in section.splitlines():
        entry = re.match(r"^ {8}(\w+): (.*)$", line)
        if entry:
            docs[entry.group(1)] = [entry.group(2)]
        elif line.startswith(" " * 12) and docs:
            docs[next(reversed(docs))].append(line.strip())
        elif docs:
            break
    return docs


def settings_options(fn: Callable | None = None, *, exclude: Sequence[str] = ()) -> Callable:
    """Decorator for a function that takes :class:`ESSASettings` fields as ``**settings``: its signature and
    its docstring's ``Args`` then list every field (but ``exclude``), documented once, in ESSASettings.
    Help texts (``inspect.signature``, python-fire's ``--help``) show them; calls are unchanged."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        names = {p.name for p in own}
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                              default=f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(ESSASettings) if f.name not in names and f.name not in exclude
        ]
        fn.__signature__ = signature.replace(parameters=own + extra)
        documented = set(re.findall(r"^ {8}(\w+):", fn.__doc__ or "", flags=re.M))
        docs = _field_docs()
        lines = [f"        {name}: " + "\n            ".join(docs[name])
                 for name in [p.name for p in own + extra] if name in docs and name not in documented]
        head, args, tail = re.split(r"(\n {4}Args:\n(?:(?: {8}.*)?\n)*?(?=\n|$))", fn.__doc__, maxsplit=1)
        fn.__doc__ = head + args + "\n".join(lines) + "\n" + tail
        return fn

    return decorate(fn) if fn is not None else decorate
