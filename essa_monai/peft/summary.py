"""Trainable-vs-total parameter table of every PEFT method for one backbone (``essa-monai params``)."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable

import torch

from ..backbone import create_backbone
from .api import apply_peft, count_parameters

__all__ = ["default_variants", "parameter_table", "format_table"]


def default_variants(apla_r: int = 128, lora_r: int = 4, vpt_tokens: int = 10) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, method, options) rows: the baselines and each PEFT method at ESSA/MED-PEFT settings."""
    return [
        ("full", "full", {}),
        ("frozen", "frozen", {}),
        ("apla (all rows of W_O)", "apla", {}),
        (f"apla r={apla_r}", "apla", {"r": apla_r}),
        (f"lora r={lora_r} (q,v)", "lora", {"r": lora_r}),
        ("bitfit (all biases)", "bitfit", {}),
        (f"vpt shallow ({vpt_tokens} tokens)", "vpt", {"num_tokens": vpt_tokens}),
        (f"vpt deep ({vpt_tokens} tokens)", "vpt", {"num_tokens": vpt_tokens, "deep": True}),
    ]


def parameter_table(
    backbone: str = "vit_base_patch14_dinov2",
    variants: Iterable[tuple[str, str, dict[str, Any]]] | None = None,
    **backbone_kwargs: Any,
) -> list[dict[str, Any]]:
    """Count parameters of ``backbone`` under each variant.

    The backbone is built on the ``meta`` device (shapes only, no memory, no weights needed), so even
    ViT-g is counted instantly. Returns rows ``{"method", "trainable", "total", "percent"}``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random init is expected: only shapes matter
        with torch.device("meta"):
            base = create_backbone(backbone, **backbone_kwargs)
    rows = []
    for label, method, options in variants if variants is not None else default_variants():
        model = apply_peft(copy.deepcopy(base), method, **options)
        trainable, total = count_parameters(model)
        rows.append({"method": label, "trainable": trainable, "total": total, "percent": 100.0 * trainable / total})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`parameter_table` rows."""
    width = max(len("method"), *(len(r["method"]) for r in rows))
    lines = [f"{'method':<{width}}  {'trainable':>13}  {'total':>13}  {'trainable %':>11}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r['method']:<{width}}  {r['trainable']:>13,}  {r['total']:>13,}  {r['percent']:>10.3f}%")
    return "\n".join(lines)
