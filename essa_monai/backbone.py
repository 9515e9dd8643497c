"""DINOv2 ViT backbones through timm, with offline weights from a local file.

The backbone is a plain :class:`timm.models.vision_transformer.VisionTransformer` built with
``num_classes=0`` (no head) and ``dynamic_img_size=True``, so one model takes any input whose height
and width are multiples of the patch size (14): 224 global crops and 98 local crops in SSA, 518 for
segmentation, and so on. Positional embeddings are interpolated by timm.

Weights come from a local file only (nothing is downloaded). Two formats are accepted, both through
timm's own checkpoint filter (``pretrained_cfg_overlay=dict(file=...)``):

* the official facebookresearch/dinov2 release (``dinov2_vits14_pretrain.pth``, keys such as
  ``mask_token``, ``register_tokens``, ``blocks.N.mlp.w12`` for giant), converted by timm's
  ``_convert_dinov2``;
* timm's own format (``model.state_dict()`` of a timm DINOv2 ViT, as this package exports it).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import timm
from timm.models.vision_transformer import VisionTransformer

__all__ = [
    "DINOV2_BACKBONES",
    "PATCH_SIZE",
    "BackboneWeightsError",
    "create_backbone",
    "default_feature_indices",
    "check_patch_multiple",
]

logger = logging.getLogger(__name__)

PATCH_SIZE = 14

#: timm names of the DINOv2 ViTs this package supports, with their depth.
DINOV2_BACKBONES: dict[str, int] = {
    "vit_small_patch14_dinov2": 12,
    "vit_base_patch14_dinov2": 12,
    "vit_large_patch14_dinov2": 24,
    "vit_giant_patch14_dinov2": 40,
    "vit_small_patch14_reg4_dinov2": 12,
    "vit_base_patch14_reg4_dinov2": 12,
    "vit_large_patch14_reg4_dinov2": 24,
    "vit_giant_patch14_reg4_dinov2": 40,
}


class BackboneWeightsError(ValueError):
    """A weights file that cannot be read or does not match the requested architecture."""


def check_patch_multiple(size: int | Sequence[int], what: str = "image size", patch_size: int = PATCH_SIZE) -> None:
    """Raise ``ValueError`` unless ``size`` (pixels; an int or a sequence of ints) is made of positive
    integer multiples of ``patch_size``. The message names ``what`` and the nearest valid sizes."""
    for value in [size] if isinstance(size, (int, float)) else list(size):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % patch_size:
            hint = ""
            if isinstance(value, (int, float)) and value > 0:
                below = max(patch_size, int(value // patch_size) * patch_size)
                hint = f"; nearest valid sizes: {below} or {below + patch_size}"
            raise ValueError(
                f"{what} must be a positive multiple of the ViT patch size {patch_size} px, got {size!r}{hint}"
            )


def default_feature_indices(depth: int) -> list[int]:
    """Four evenly spaced block indices for multi-scale features: [2, 5, 8, 11] for depth 12,
    [4, 11, 17, 23] for depth 24, [9, 19, 29, 39] for depth 40 (the usual ViT-Adapter/UperNet picks),
    otherwise the last block of each quarter."""
    known = {12: [2, 5, 8, 11], 24: [4, 11, 17, 23], 40: [9, 19, 29, 39]}
    if depth in known:
        return list(known[depth])
    if depth < 4:
        return list(range(depth))
    return [round(depth * q / 4) - 1 for q in range(1, 5)]


def create_backbone(
    name: str = "vit_small_patch14_dinov2",
    weights: str | Path | None = None,
    img_size: int = 224,
    drop_path_rate: float = 0.0,
    random_init_warning: bool = True,
    **timm_kwargs,
) -> VisionTransformer:
    """Build a DINOv2 ViT from timm, optionally loading local weights.

    Args:
        name: one of :data:`DINOV2_BACKBONES` (``vit_{small,base,large,giant}_patch14[_reg4]_dinov2``).
        weights: path of a local ``.pth``/``.pt``/``.safetensors`` file in the official DINOv2 or the timm
            format; ``None`` builds a randomly initialised model and warns loudly.
        img_size: nominal input size in pixels (multiple of 14); sets the stored positional-embedding grid
            (``img_size / 14`` per side). Other sizes still work at run time (``dynamic_img_size``).
        drop_path_rate: stochastic depth rate.
        random_init_warning: warn when ``weights`` is ``None`` (turn off when trained weights are loaded
            into the model right after, as evaluation and inference do).
        timm_kwargs: further ``timm.create_model`` arguments (e.g. ``embed_dim``, ``depth``,
            ``num_heads`` for tiny test models).

    Returns:
        A ``VisionTransformer`` without classifier: ``model(x)`` maps (B, 3, H, W) to (B, D) CLS
        features; ``model.forward_intermediates(x, indices=...)`` gives (B, D, H/14, W/14) maps.

    Raises:
        ValueError: unknown ``name`` or ``img_size`` not a multiple of 14.
        FileNotFoundError: ``weights`` does not exist.
        BackboneWeightsError: ``weights`` cannot be read or does not match ``name``.
    """
    if name not in DINOV2_BACKBONES:
        raise ValueError(f"unknown DINOv2 backbone {name!r}; choose one of: {', '.join(DINOV2_BACKBONES)}")
    check_patch_multiple(img_size, "img_size")
    kwargs = dict(num_classes=0, img_size=img_size, dynamic_img_size=True, drop_path_rate=drop_path_rate)
    kwargs.update(timm_kwargs)

    if weights is None:
        if not random_init_warning:
            return timm.create_model(name, pretrained=False, **kwargs)
        message = (
            f"No weights given for {name}: the backbone is RANDOMLY INITIALISED. Pass weights=<path to "
            "dinov2_*_pretrain.pth or a timm state dict> to adapt a real foundation model."
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        return timm.create_model(name, pretrained=False, **kwargs)

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 weights file not found: {path}")
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=0), **kwargs
        )
    except Exception as err:  # torch.load raises many types on a bad file; all get the same clear message
        text = str(err)
        if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in text:
            # torch's message lists missing/unexpected keys and shape mismatches
            summary = "; ".join(line.strip() for line in text.splitlines()[1:4] if line.strip())
            raise BackboneWeightsError(
                f"{path}: weights do not match the architecture {name} (wrong model size, patch size or "
                f"registers?): {summary[:600]}"
            ) from err
        raise BackboneWeightsError(
            f"{path}: cannot be read as a PyTorch/safetensors checkpoint of {name} "
            f"({type(err).__name__}: {text.splitlines()[0] if text else 'no detail'})"
        ) from err
    logger.info("Loaded %s weights from %s", name, path)
    return model

