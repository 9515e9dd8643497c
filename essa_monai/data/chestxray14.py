"""NIH ChestX-ray14 in its official download layout::

    root/Data_Entry_2017.csv        "Image Index","Finding Labels","Follow-up #","Patient ID",...
                                    Finding Labels: '|'-separated, "No Finding" = no label
    root/train_val_list.txt         one image name per line (official patient-wise split)
    root/test_list.txt
    root/images/00000001_000.png    (or root/images_001/images/00000001_000.png ... as downloaded)

(``Data_Entry_2017_v2020.csv`` is accepted too.) Labels are a 14-float multi-hot vector in the
standard order :data:`CHESTXRAY14_LABELS`.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from .errors import DataError, DatasetLayoutError, OnError, handle_error
from .listing import check_listed_file, read_csv_rows, require_dir

__all__ = ["CHESTXRAY14_LABELS", "chestxray14_datalist", "parse_finding_labels"]

CHESTXRAY14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
_CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
_SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
_NO_FINDING = "No Finding"


def parse_finding_labels(text: str) -> list[float]:
    """``"Effusion|Mass"`` -> 14 floats (1.0 at Effusion and Mass); ``"No Finding"`` -> all zeros.

    Raises:
        ValueError: an unknown finding name.
    """
    findings = {f.strip() for f in text.split("|") if f.strip()}
    unknown = findings - set(CHESTXRAY14_LABELS) - {_NO_FINDING}
    if unknown:
        raise ValueError(f"unknown finding(s) {sorted(unknown)}; expected names from {CHESTXRAY14_LABELS} or {_NO_FINDING!r}")
    return [1.0 if name in findings else 0.0 for name in CHESTXRAY14_LABELS]


def _index_images(root: str) -> dict[str, str]:
    """image file name -> path, over ``images/`` and ``images_*/images/`` (and ``images_*/``)."""
    patterns = ("images/*.png", "images_*/images/*.png", "images_*/*.png")
    return {os.path.basename(p): p for pattern in patterns for p in glob.glob(os.path.join(root, pattern))}


def _read_split_names(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DatasetLayoutError(path, "split list not found (official file of image names, one per line)")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise DatasetLayoutError(path, "split list is empty")
    return names


def chestxray14_datalist(
    root: str | os.PathLike[str],
    split: str = "train_val",
    *,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Multi-label datalist of ChestX-ray14.

    Args:
        root: dataset folder (see module docstring).
        split: ``"train_val"`` (``train_val_list.txt``), ``"test"`` (``test_list.txt``) or ``"all"``
            (every CSV row). Carve validation out of ``train_val`` by patient
            (``make_fraction_splits(..., group_key="patient_id")``).
        on_error: ``"raise"`` or ``"skip"`` rows whose image is missing / whose labels are unknown.

    Returns:
        ``[{"image": png_path, "label": [14 floats], "id": "00000001_000.png", "patient_id": "1"}, ...]``
        sorted by image name.

    Raises:
        DatasetLayoutError: missing CSV/list/column, a listed name absent from the CSV, an unknown
            finding (names CSV line), or a missing image (names the file and the CSV line).
    """
    root = require_dir(root, "the ChestX-ray14 folder with Data_Entry_2017.csv and images/")
    csv_path = next((p for p in (os.path.join(root, n) for n in _CSV_NAMES) if os.path.isfile(p)),
                    os.path.join(root, _CSV_NAMES[0]))
    rows = {row["Image Index"]: (line, row) for line, row in read_csv_rows(csv_path, ("Image Index", "Finding Labels"))}
    if split == "all":
        names = sorted(rows)
    elif split in _SPLIT_FILES:
        list_path = os.path.join(root, _SPLIT_FILES[split])
        names = sorted(set(_read_split_names(list_path)))
        absent = [n for n in names if n not in rows]
        if absent:
            raise DatasetLayoutError(list_path, f"{len(absent)} image(s) not in {csv_path}, e.g. {absent[:3]}")
    else:
        raise ValueError(f"split must be one of {list(_SPLIT_FILES) + ['all']}, got {split!r}")
    images = _index_images(root)
    datalist = []
    for name in names:
        line, row = rows[name]
        try:
            try:
                label = parse_finding_labels(row["Finding Labels"])
            except ValueError as err:
                raise DatasetLayoutError(csv_path, f"line {line} ({name}): {err}") from None
            path = images.get(name, os.path.join(root, "images", name))
            check_listed_file(path, f"listed in {csv_path} line {line}; searched images/ and images_*/images/")
            datalist.append({"image": path, "label": label, "id": name, "patient_id": row.get("Patient ID", "")})
        except DataError as err:
            handle_error(err, on_error, skipped)
    return datalist
