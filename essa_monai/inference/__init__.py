"""Clinical inference with a bundle's trained (merged) model: one file, a folder, a CSV or a datalist of
DICOM / NIfTI / JPEG / PNG images -> masks (PNG or NIfTI) and overlays, or class probabilities, plus a
run report. Entry points: :func:`infer` (``essa-monai infer``, ``scripts/infer.py``)."""

from .bundle import InferenceModel, UsageError, bundle_task, load_bundle_model, resolve_device
from .inputs import InputItem, collect_inputs, output_stem
from .runner import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, InferOptions, InferResult, run_inference
from .api import infer

__all__ = ["InferenceModel", "UsageError", "bundle_task", "load_bundle_model", "resolve_device", "InputItem",
           "collect_inputs", "output_stem", "EXIT_OK", "EXIT_SKIPPED", "EXIT_USAGE", "InferOptions",
           "InferResult", "run_inference", "infer"]
