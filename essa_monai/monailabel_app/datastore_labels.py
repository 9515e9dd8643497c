"""Labels saved in a MONAI Label datastore -> items of a bundle's training datalist.

Segmentation labels are masks (PNG/JPEG/DICOM/NIfTI, 0/1 or 0/255, the image's size), used as they are.
MONAI Label has no file format for image-level labels, so the app's classification bundles take a small
JSON file saved as the image's label (``PUT /datastore/label``)::

    {"label": "MEL"}                        one class (classification)
    {"labels": ["Effusion", "Nodule"]}      any number of classes, [] for none (multi-label)

A datastore keeps one final label per image, so one datastore can hold masks for a segmentation model and
class labels for a classification model: each model uses the labels of its kind and skips the others.
Records whose label cannot be used are skipped with a reason; training never stops for one bad label.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from ..data.formats import is_image_path

__all__ = ["LabelError", "read_class_label", "training_items"]


class LabelError(ValueError):
    """A datastore label that cannot be used; the message names the file and the problem."""


def read_class_label(path: str | os.PathLike[str], class_names: Sequence[str], multilabel: bool) -> int | list[float]:
    """Read a JSON class label (see the module docstring).

    Returns:
        the class index (``multilabel=False``) or a multi-hot ``list[float]`` of ``len(class_names)``.

    Raises:
        LabelError: missing or unreadable file, not JSON, wrong keys, unknown class names.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and not path.lower().endswith(".json"):
        raise LabelError(f"{path}: not a JSON class label (a mask for another model?)")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except FileNotFoundError as err:
        raise LabelError(f"{path}: label file not found") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelError(f"{path}: not a JSON class label ({err})") from err
    if not isinstance(content, dict):
        raise LabelError(f"{path}: expected a JSON object like {{\"label\": \"{class_names[0]}\"}}")
    names: Any = content.get("labels", content.get("label"))
    if names is None:
        raise LabelError(f"{path}: no 'label' (or 'labels') key")
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise LabelError(f"{path}: class names must be strings, got {names!r}")
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise LabelError(f"{path}: unknown class {unknown}; expected one of {list(class_names)}")
    if multilabel:
        return [1.0 if c in names else 0.0 for c in class_names]
    if len(names) != 1:
        raise LabelError(f"{path}: expected exactly one class, got {names}")
    return list(class_names).index(names[0])


def training_items(
    records: Sequence[dict[str, Any]], task: str, class_names: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Turn datastore records ``{"image": path, "label": path}`` into datalist items for ``task``
    (``"segmentation"``, ``"classification"`` or ``"multilabel"``).

    Returns:
        ``(items, skipped)``: usable items (``label`` a mask path, a class index or a multi-hot list)
        and one reason per skipped record.
    """
    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for record in records:
        image, label = record.get("image"), record.get("label")
        if not image or not os.path.isfile(image):
            skipped.append(f"{image}: image file not found")
            continue
        if task == "segmentation":
            if not label or not os.path.isfile(label) or os.path.getsize(label) == 0:
                skipped.append(f"{label}: label mask not found or empty (image {image})")
                continue
            if not is_image_path(label):
                skipped.append(f"{label}: not a mask image (a class label of another model?)")
                continue
            items.append({"image": image, "label": label})
            continue
        try:
            target = read_class_label(label, class_names, multilabel=task == "multilabel")
        except LabelError as err:
            skipped.append(str(err))
            continue
        items.append({"image": image, "label": target})
    return items, skipped
