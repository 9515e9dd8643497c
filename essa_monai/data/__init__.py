"""Data layer of essa-monai: 2D medical images for DINOv2 ViTs, dataset datalists, label fractions.

* Loading (any of JPEG/PNG photos, DICOM, NIfTI) -> float32 ``(3, H, W)`` in ``[0, 1]``:
  :class:`LoadImage2Dd` / :class:`LoadMask2Dd`, then :class:`ResizeToPatchMultipled` and
  :class:`NormalizeForBackboned` (or all at once: :func:`make_backbone_transforms`).
* Datalists (``list[dict]`` for ``monai.data.Dataset``): :func:`isic2018_task1_datalist`,
  :func:`isic2018_task3_datalist`, :func:`chestxray14_datalist`, :func:`multilabel_csv_datalist`,
  :func:`load_datalist_json`, :func:`image_folder_datalist`, :func:`unlabeled_datalist`.
* Label fractions: :func:`make_fraction_splits`, :func:`write_split_json`, :func:`read_split`; the split
  file every bundle and the pipeline read, made once: :func:`dataset_split` / :func:`dataset_split_file`.
* Demo data: :func:`make_demo_data`. Errors: :class:`ImageLoadError`, :class:`DatasetLayoutError`,
  :class:`MaskMismatchError` (all :class:`DataError`, a ``ValueError`` with ``path`` and ``reason``).

Names are imported lazily (PEP 562), so e.g. the demo-data script does not pay for importing MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "errors": ("DataError", "ImageLoadError", "DatasetLayoutError", "MaskMismatchError", "OnError", "handle_error"),
    "formats": ("IMAGE_EXTENSIONS", "PHOTO_EXTENSIONS", "NIFTI_EXTENSIONS", "DICOM_EXTENSIONS", "detect_format",
                "check_file", "has_dicom_magic"),
    "intensity": ("scale_to_unit", "minmax_to_unit"),
    "photo": ("read_photo", "read_photo_mask", "photo_size"),
    "dicom": ("read_dicom",),
    "nifti": ("read_nifti", "SLICE_AXES"),
    "image_io": ("read_image_2d", "load_image_2d", "load_mask_2d", "LoadImage2D", "LoadImage2Dd", "LoadMask2D",
                 "LoadMask2Dd"),
    "transforms": ("DINOV2_PATCH_SIZE", "backbone_mean_std", "patch_multiple_size", "NormalizeForBackbone",
                   "NormalizeForBackboned", "ResizeToPatchMultiple", "ResizeToPatchMultipled",
                   "CheckSameSpatialShaped", "make_backbone_transforms"),
    "datalist": ("verify_datalist", "load_datalist_json", "image_folder_datalist", "unlabeled_datalist",
                 "list_image_files"),
    "isic2018": ("ISIC2018_TASK3_CLASSES", "ISIC2018_SPLITS", "isic2018_task1_datalist", "isic2018_task3_datalist"),
    "chestxray14": ("CHESTXRAY14_LABELS", "chestxray14_datalist", "parse_finding_labels"),
    "multilabel_csv": ("UncertainPolicy", "multilabel_csv_datalist"),
    "fractions": ("label_matrix", "stratified_partition", "fraction_key", "make_fraction_splits",
                  "write_split_json", "read_split"),
    "split_file": ("DEFAULT_FRACTIONS", "SPLIT_DATASETS", "ensure_split", "dataset_split_file", "dataset_split"),
    "datasets": ("build_dataset",),
    "demo": ("make_demo_data",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
