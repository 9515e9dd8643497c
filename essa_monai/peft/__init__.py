"""Parameter-efficient fine-tuning (PEFT) for timm ViTs: APLA, LoRA, BitFit, VPT, full and frozen.

One interface for all methods: :func:`apply_peft` (inject from a name or config),
:func:`trainable_parameters`, :func:`merge_peft`, :func:`adapter_state_dict` /
:func:`save_adapter` / :func:`load_adapter`. Each method is one module with its config dataclass.
"""

from .base import PEFT_METHODS, PeftConfig, make_peft_config, register_peft
from .apla import APLAConfig, APLALinear
from .lora import LoRAConfig, LoRALinear
from .bitfit import BitFitConfig
from .vpt import VPTConfig, VisualPrompts
from .full import FrozenConfig, FullConfig
from .api import (
    ADAPTER_FORMAT,
    adapter_hash,
    adapter_state_dict,
    apply_peft,
    count_parameters,
    load_adapter,
    load_adapter_state_dict,
    merge_peft,
    merged_state_dict,
    peft_config_of,
    save_adapter,
    write_adapter_file,
    trainable_parameters,
)

__all__ = [
    "PEFT_METHODS", "PeftConfig", "make_peft_config", "register_peft",
    "APLAConfig", "APLALinear", "LoRAConfig", "LoRALinear", "BitFitConfig", "VPTConfig", "VisualPrompts",
    "FrozenConfig", "FullConfig",
    "ADAPTER_FORMAT", "adapter_hash", "adapter_state_dict", "apply_peft", "count_parameters", "load_adapter",
    "load_adapter_state_dict", "merge_peft", "merged_state_dict", "peft_config_of", "save_adapter", "trainable_parameters",
    "write_adapter_file",
]
