"""ISIC 2018 (skin lesions) in its official download layout.

Task 1, lesion segmentation (images shared with task 2)::

    root/ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg
    root/ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png     (0 / 255)
    ... _Validation_ / _Test_ likewise

Task 3, 7-class diagnosis::

    root/ISIC2018_Task3_Training_Input/ISIC_0024306.jpg
    root/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
        image,MEL,NV,BCC,AKIEC,BKL,DF,VASC        (one-hot floats, e.g. ISIC_0024306,0.0,1.0,0.0,...)
    ... _Validation_ / _Test_ likewise
"""

from __future__ import annotations

import glob
import os
from typing import Any

from .errors import DataError, DatasetLayoutError, MaskMismatchError, OnError, handle_error
from .listing import check_listed_file, read_csv_rows, require_dir
from .photo import photo_size

__all__ = ["ISIC2018_TASK3_CLASSES", "ISIC2018_SPLITS", "isic2018_task1_datalist", "isic2018_task3_datalist"]

#: Task 3 classes in the CSV's column order (label index = position).
ISIC2018_TASK3_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
#: split name -> the word used in the official folder names.
ISIC2018_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test"}


def _split_word(split: str) -> str:
    if split not in ISIC2018_SPLITS:
        raise ValueError(f"split must be one of {list(ISIC2018_SPLITS)}, got {split!r}")
    return ISIC2018_SPLITS[split]


def isic2018_task1_datalist(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    require_masks: bool = True,
    check_sizes: bool = False,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Segmentation datalist of one ISIC 2018 task 1 split.

    Args:
        root: folder holding the official ``ISIC2018_Task1*`` folders.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        require_masks: if ``False`` and the ground-truth folder is absent, items have no ``label``
            (e.g. for inference on the test images).
        check_sizes: compare image and mask height/width from their headers now (fast; the loader's
            :class:`CheckSameSpatialShaped` catches it anyway at load time).
        on_error: ``"raise"`` or ``"skip"`` (items with a missing/empty/mismatched mask are reported in
            ``skipped``).

    Returns:
        ``[{"image": jpg_path, "label": png_mask_path, "id": "ISIC_0000000"}, ...]`` sorted by id.
    """
    word = _split_word(split)
    root = os.path.abspath(root)
    image_dir = require_dir(os.path.join(root, f"ISIC2018_Task1-2_{word}_Input"), "the ISIC 2018 task 1 images")
    mask_dir = os.path.join(root, f"ISIC2018_Task1_{word}_GroundTruth")
    with_masks = require_masks or os.path.isdir(mask_dir)
    if with_masks:
        require_dir(mask_dir, "the ISIC 2018 task 1 ground-truth masks")
    images = sorted(glob.glob(os.path.join(image_dir, "ISIC_*.jpg")))
    if not images:
        raise DatasetLayoutError(image_dir, "no ISIC_*.jpg images in the folder")
    datalist = []
    for image in images:
        isic_id = os.path.basename(image)[: -len(".jpg")]
        item: dict[str, Any] = {"image": image, "id": isic_id}
        try:
            if with_masks:
                item["label"] = check_listed_file(
                    os.path.join(mask_dir, f"{isic_id}_segmentation.png"), f"mask expected for image {image}"
                )
                if check_sizes and photo_size(image) != photo_size(item["label"]):
                    raise MaskMismatchError(
                        item["label"],
                        f"mask size (H, W)={photo_size(item['label'])} differs from image size {photo_size(image)} of {image}",
                    )
            datalist.append(item)
        except DataError as err:
            handle_error(err, on_error, skipped)
    return datalist


def isic2018_task3_datalist(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Classification datalist of one ISIC 2018 task 3 split (7 classes, :data:`ISIC2018_TASK3_CLASSES`).

    Returns:
        ``[{"image": jpg_path, "label": class_index, "id": "ISIC_0024306"}, ...]`` in CSV order.

    Raises:
        DatasetLayoutError: missing folder/CSV/column, a row that is not one-hot (names the CSV, the
            line and the image id), or a listed image that does not exist (with ``on_error="skip"``: the
            row is skipped and reported).
    """
    word = _split_word(split)
    root = os.path.abspath(root)
    image_dir = require_dir(os.path.join(root, f"ISIC2018_Task3_{word}_Input"), "the ISIC 2018 task 3 images")
    csv_path = os.path.join(root, f"ISIC2018_Task3_{word}_GroundTruth", f"ISIC2018_Task3_{word}_GroundTruth.csv")
    datalist = []
    for line, row in read_csv_rows(csv_path, ("image",) + ISIC2018_TASK3_CLASSES):
        try:
            try:
                values = [float(row[c]) for c in ISIC2018_TASK3_CLASSES]
            except ValueError:
                raise DatasetLayoutError(csv_path, f"line {line} ({row['image']}): non-numeric label value") from None
            if sorted(values) != [0.0] * (len(values) - 1) + [1.0]:
                raise DatasetLayoutError(
                    csv_path, f"line {line} ({row['image']}): labels {values} are not one-hot over {ISIC2018_TASK3_CLASSES}"
                )
            image = check_listed_file(os.path.join(image_dir, f"{row['image']}.jpg"), f"listed in {csv_path} line {line}")
            datalist.append({"image": image, "label": values.index(1.0), "id": row["image"]})
        except DataError as err:
            handle_error(err, on_error, skipped)
    return datalist
