"""Supervised adaptation (SA): PEFT networks, optimizer groups, losses and handlers for MONAI's
``SupervisedTrainer`` / ``SupervisedEvaluator`` (the workflows themselves are wired in the bundle configs)."""

from .handlers import GradientClipHandler, MergedModelExportHandler
from .network import load_merged_model, merged_network, peft_network, unwrap_network
from .optim import sa_parameter_groups
from .postprocessing import ResizeToOriginald

__all__ = [
    "GradientClipHandler",
    "MergedModelExportHandler",
    "load_merged_model",
    "merged_network",
    "peft_network",
    "unwrap_network",
    "sa_parameter_groups",
    "ResizeToOriginald",
]
