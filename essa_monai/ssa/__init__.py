"""Self-supervised adaptation (SSA): continue DINOv2 pretraining on medical images, with PEFT.

The objective's building blocks (heads, losses, masking, multi-crop, schedules, EMA) are in
:mod:`essa_monai.ssl`; this package puts them together: the student network, the teacher that shares
the student's frozen tensors, the Ignite trainer, its handlers, multi-process training (DDP, FSDP2) and
the export for supervised adaptation.
"""

from .data import ssa_data_loader, ssa_transforms
from .distributed import DISTRIBUTED_MODES, SSAModel, destroy_distributed, init_distributed, is_rank0, local_device
from .export import ADAPTER_FILE, MERGED_FILE, export_adapted_backbone
from .handlers import BatchSeedHandler, KNNMonitor, SSAExportHandler, SSAScheduleHandler, knn_predict
from .masked_tokens import masked_patch_embedding
from .network import SSANetwork
from .objective import DINOv2Objective
from .teacher import TeacherEMAState, make_teacher
from .trainer import PRECISIONS, SSATrainer, ssa_parameter_groups

__all__ = [
    "ssa_data_loader", "ssa_transforms",
    "DISTRIBUTED_MODES", "SSAModel", "destroy_distributed", "init_distributed", "is_rank0", "local_device",
    "ADAPTER_FILE", "MERGED_FILE", "export_adapted_backbone",
    "BatchSeedHandler", "KNNMonitor", "SSAExportHandler", "SSAScheduleHandler", "knn_predict",
    "masked_patch_embedding", "SSANetwork", "DINOv2Objective",
    "TeacherEMAState", "make_teacher",
    "PRECISIONS", "SSATrainer", "ssa_parameter_groups",
]
