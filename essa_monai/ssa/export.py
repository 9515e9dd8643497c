"""Export an SSA-adapted backbone for supervised adaptation: merged timm weights + adapter-only file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from ..peft import adapter_state_dict, make_peft_config, merged_state_dict, peft_config_of, write_adapter_file

__all__ = ["export_adapted_backbone", "MERGED_FILE", "ADAPTER_FILE"]

MERGED_FILE = "backbone_merged.pth"
ADAPTER_FILE = "adapter.pt"


def export_adapted_backbone(student_backbone: nn.Module, teacher_backbone: nn.Module, output_dir: str | Path) -> dict[str, Path]:
    """Write the teacher's adapted backbone (DINOv2 evaluates and releases the teacher) to ``output_dir``.

    Files:
        ``adapter.pt``: the PEFT config and the teacher's values of the tensors the student trains (plus
            APLA row indices); apply it to the original DINOv2 backbone with
            :func:`essa_monai.peft.load_adapter`.
        ``backbone_merged.pth``: a plain timm DINOv2 state dict (APLA/LoRA folded into ``nn.Linear``),
            loadable with ``create_backbone(name, weights=...)``. Not written for VPT, whose prompts are
            not part of a plain ViT: use the adapter file.
        ``export.json``: what was written and why.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = peft_config_of(student_backbone) or make_peft_config("full")
    teacher_state = teacher_backbone.state_dict()
    adapter = {name: teacher_state[name] for name in adapter_state_dict(student_backbone)}
    paths = {"adapter": write_adapter_file(output_dir / ADAPTER_FILE, config, adapter, None, source="ssa-teacher")}
    info = {"peft": config.to_dict(), "adapter": ADAPTER_FILE, "adapter_tensors": len(adapter)}
    if hasattr(teacher_backbone, "vpt"):
        info["merged"] = None
        info["merged_skipped"] = "VPT prompts are not part of a plain ViT; load adapter.pt onto the base backbone"
    else:
        merged = {k: v.detach().cpu().clone() for k, v in merged_state_dict(teacher_backbone).items()}
        atomic_write(output_dir / MERGED_FILE, lambda tmp: torch.save(merged, tmp))
        paths["merged"] = output_dir / MERGED_FILE
        info["merged"] = MERGED_FILE
    (output_dir / "export.json").write_text(json.dumps(info, indent=2))
    paths["info"] = output_dir / "export.json"
    return paths
