"""MONAI Label inference task for a served essa-monai bundle (MONAI Label's ``BundleInferTask``).

The bundle's standalone ``configs/inference.json`` (see :mod:`.served_bundle`) gives the network, the
bundle's own input transforms and the post-processing; the merged model ``models/model.pt`` is loaded
strictly, and reloaded when a training run replaces it. Results:

- segmentation: a label map the size of the image, ``0`` background and ``k`` for class ``k``, as PNG
  (default for photos, DICOM) or NIfTI with the input's affine (default for NIfTI inputs);
- classification: ``{"prediction": [{"idx", "label", "score"}, ...], "predicted": [names]}`` (scores are
  softmax probabilities, or per-class sigmoid for multi-label bundles, where every class with score >=
  0.5 is predicted).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from PIL import Image

from ..data.formats import NIFTI_EXTENSIONS, is_image_path
from ..inference.writers import write_mask_nifti
from .served_bundle import ServedBundle

__all__ = ["ESSAInferTask"]

logger = logging.getLogger(__name__)

#: mask formats the task writes
RESULT_EXTENSIONS = (".png", ".nii.gz", ".nii")


class ESSAInferTask(BundleInferTask):
    """Serve ``bundle`` (a :class:`ServedBundle`) for ``/infer/<name>``.

    Args:
        bundle: the served bundle (its model must exist; the app adds the task once it does).
        conf: the app's ``--conf`` values (MONAI Label reads ``preload``).
        threshold: multi-label decision threshold on the sigmoid scores.
    """

    def __init__(self, bundle: ServedBundle, conf: dict[str, str], threshold: float = 0.5) -> None:
        self.bundle = bundle
        self.threshold = threshold
        infer_type = InferType.SEGMENTATION if bundle.is_segmentation else InferType.CLASSIFICATION
        super().__init__(str(bundle.path), conf, type=infer_type, add_post_restore=False, load_strict=True)
        if bundle.is_segmentation:
            self.labels = {name: k for k, name in enumerate(bundle.class_names) if k > 0}
        else:
            self.labels = list(bundle.class_names)

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        if self.type == InferType.CLASSIFICATION:
            output_file, result = super().writer(data, extension, dtype)
            scores = np.array([p["score"] for p in result["prediction"]])
            if self.bundle.task == "multilabel":
                chosen = [k for k, s in enumerate(scores) if s >= self.threshold]
            else:
                chosen = [int(scores.argmax())]
            result["predicted"] = [self.bundle.class_names[k] for k in chosen]
            return output_file, result
        return self._write_mask(data, extension), data.get(self.output_json_key, {})

    def _write_mask(self, data: dict[str, Any], extension: str | None) -> str:
        pred = data[self.output_label_key]
        mask = (pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred))
        mask = np.rint(mask.reshape(mask.shape[-2:])).astype(np.uint8)  # (1, H, W) label map -> (H, W)
        image_path = str(data.get("image_path") or "")
        nifti_input = bool(image_path) and is_image_path(image_path, NIFTI_EXTENSIONS)
        ext = extension or data.get("result_extension") or (".nii.gz" if nifti_input else ".png")
        if ext not in RESULT_EXTENSIONS:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"result_extension {ext!r} is not supported; use one of {RESULT_EXTENSIONS}")
        if ext != ".png" and not nifti_input:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"a NIfTI mask needs a NIfTI input (its affine); {image_path} is not one")
        fd, output_file = tempfile.mkstemp(suffix=ext)
        os.close(fd)
        if ext == ".png":
            Image.fromarray(mask).save(output_file, format="PNG")
        else:
            write_mask_nifti(output_file, image_path, mask)
        logger.info("%s: mask %s with labels %s -> %s", self.bundle.name, mask.shape,
                    np.unique(mask).tolist(), output_file)
        return output_file
