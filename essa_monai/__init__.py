"""essa-monai: efficient self-supervised adaptation of DINOv2 ViTs to medical images, with PEFT, on MONAI.

Subpackages: :mod:`essa_monai.backbone` (DINOv2 ViTs), :mod:`essa_monai.peft` (APLA, LoRA, BitFit,
VPT), :mod:`essa_monai.data` (readers, datasets), :mod:`essa_monai.ssl` (DINOv2 objective),
:mod:`essa_monai.ssa` (self-supervised adaptation workflow).
"""

__version__ = "0.1.0"
