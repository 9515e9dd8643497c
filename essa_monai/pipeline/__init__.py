"""The whole ESSA pipeline for a dataset: self-supervised adaptation (SSA) with a PEFT method on the
dataset's unlabeled training images, supervised adaptation (SA) with a PEFT method from the SSA-adapted
backbone on a label fraction, evaluation, and grids of these with results tables.

* :func:`run_essa`: one run (``essa-monai run_essa``); :class:`ESSASettings` holds what defines it.
* :func:`essa_grid`: methods x datasets x label fractions, resumable (``essa-monai essa_grid``).
* :data:`DATASETS` (``isic_seg``, ``isic_cls``, ``cxr14``) and :data:`METHOD_PRESETS` (``apla``, ``lora``, ...).

:func:`run_combination` is a short driver over the stages of :mod:`essa_monai.pipeline.stages` (split file,
SSA, SA, evaluation), which run each dataset's bundle configs in-process (``configs/ssa.json``,
``train.json`` + ``evaluate.json``) with top-level overrides; see :mod:`essa_monai.pipeline.run` for the
folders written.
"""

from .grid import essa_grid, parse_methods
from .run import run_combination, run_essa
from .settings import RESULT_FILE, ESSASettings, read_result, run_dir_of
from .specs import DATASETS, METHOD_PRESETS, DatasetSpec, check_ssa_method, dataset_spec, method_label, resolve_method
from .table import results_table, write_tables

__all__ = [
    "run_essa", "run_combination", "essa_grid", "ESSASettings", "read_result", "run_dir_of", "RESULT_FILE",
    "DATASETS", "METHOD_PRESETS", "DatasetSpec", "dataset_spec", "method_label", "resolve_method",
    "check_ssa_method", "parse_methods", "results_table", "write_tables",
]
