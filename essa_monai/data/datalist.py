"""Generic datalists (``list[dict]`` as used by ``monai.data.Dataset``), so any data works without code:

* :func:`load_datalist_json`: a MONAI/Decathlon datalist JSON ``{"training": [{"image": ..., "label": ...}]}``
  (relative paths resolved against the JSON's folder or ``base_dir``);
* :func:`image_folder_datalist`: classification folders ``root/<class_name>/*.png``;
* :func:`unlabeled_datalist`: images for self-supervised adaptation, from a folder (recursive), a
  datalist JSON (labels dropped) or a list of paths;
* :func:`verify_datalist`: check (and optionally decode) every listed file, raising or skipping.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from monai.data import load_decathlon_datalist

from .errors import DataError, DatasetLayoutError, OnError, handle_error
from .formats import IMAGE_EXTENSIONS, has_dicom_magic, is_image_path
from .image_io import read_image_2d
from .listing import check_listed_file, require_dir

__all__ = ["verify_datalist", "load_datalist_json", "image_folder_datalist", "unlabeled_datalist", "list_image_files"]

logger = logging.getLogger(__name__)


def verify_datalist(
    datalist: Sequence[dict[str, Any]],
    keys: Sequence[str] = ("image",),
    *,
    decode: bool = False,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
    source: str = "datalist",
) -> list[dict[str, Any]]:
    """Return the items whose ``keys`` (string paths; other values are left alone) exist and are
    non-empty, and with ``decode=True`` also load with :func:`read_image_2d`.

    Args:
        datalist: items to check.
        keys: item keys holding file paths.
        decode: fully decode each file (slow; catches corrupt/truncated files before a long run).
        on_error: ``"raise"`` the first :class:`DataError`, or ``"skip"`` the item and append
            ``(path, reason)`` to ``skipped``.
        source: where the list came from, for messages (e.g. the JSON path).
    """
    good = []
    for index, item in enumerate(datalist):
        try:
            for key in keys:
                value = item.get(key)
                if isinstance(value, (str, os.PathLike)):
                    check_listed_file(value, f"listed in {source} item {index}, key {key!r}")
                    if decode:
                        read_image_2d(value)
            good.append(item)
        except DataError as err:
            handle_error(err, on_error, skipped)
    return good


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise DatasetLayoutError(path, "datalist JSON file not found")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetLayoutError(path, f"invalid JSON ({err})") from err
    if not isinstance(content, dict):
        raise DatasetLayoutError(path, f"expected a JSON object with datalist keys, got {type(content).__name__}")
    return content


def load_datalist_json(
    path: str | os.PathLike[str],
    key: str = "training",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Load one list (``"training"``, ``"validation"``, ``"test"``, ...) of a MONAI datalist JSON with
    :func:`monai.data.load_decathlon_datalist`.

    ``image`` paths, and ``label`` paths when labels are image/volume files (segmentation), are made
    absolute against ``base_dir`` (default: the JSON's folder); other values (class index, multi-label
    list) are kept. ``test`` lists of bare paths become ``[{"image": path}]``.

    Raises:
        DatasetLayoutError: missing/invalid JSON, missing or empty list, missing listed file.
    """
    path = os.fspath(path)
    content = _read_json(path)
    items = content.get(key)
    if not isinstance(items, list):
        raise DatasetLayoutError(path, f"no list {key!r} in the datalist; keys present: {sorted(content)}")
    if not items:
        raise DatasetLayoutError(path, f"list {key!r} is empty")
    is_segmentation = any(
        isinstance(item, dict) and isinstance(item.get("label"), str) and is_image_path(item["label"]) for item in items
    )
    base_dir = os.path.abspath(os.path.dirname(path) if base_dir is None else base_dir)
    datalist = load_decathlon_datalist(path, is_segmentation=is_segmentation, data_list_key=key, base_dir=base_dir)
    if not check_files:
        return datalist
    keys = ("image", "label") if is_segmentation else ("image",)
    return verify_datalist(datalist, keys, on_error=on_error, skipped=skipped, source=f"{path} [{key!r}]")


def list_image_files(
    folder: str | os.PathLike[str], *, recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> list[str]:
    """Sorted image files under ``folder`` with one of ``extensions``, plus extension-less files that
    carry the DICOM magic (as exported by many PACS). Hidden files are ignored."""
    pattern = "**/*" if recursive else "*"
    found = []
    for p in Path(folder).glob(pattern):
        if p.name.startswith(".") or not p.is_file():
            continue
        if is_image_path(p, tuple(extensions)) or (p.suffix == "" and p.stat().st_size > 132 and has_dicom_magic(p)):
            found.append(str(p))
    return sorted(found)


def image_folder_datalist(
    root: str | os.PathLike[str],
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Classification datalist from ``root/<class_name>/**/<image>`` (torchvision ImageFolder layout).

    Returns:
        ``(datalist, class_names)``: items ``{"image": path, "label": class_index, "id": "<class>/<file>"}``
        sorted by path; ``class_names`` sorted alphabetically (index = position).

    Raises:
        DatasetLayoutError: ``root`` missing or without class folders, or a class folder without images
            (with ``on_error="skip"`` that class is left out and reported).
    """
    root = require_dir(root, "one sub-folder per class containing its images")
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not class_dirs:
        raise DatasetLayoutError(root, "no class sub-folders (expected root/<class_name>/<images>)")
    loose = list_image_files(root, recursive=False, extensions=extensions)
    if loose:
        logger.warning("%s: ignoring %d image(s) not inside a class folder", root, len(loose))
    per_class: dict[str, list[str]] = {}
    for name in class_dirs:
        files = list_image_files(os.path.join(root, name), extensions=extensions)
        if not files:
            handle_error(DatasetLayoutError(os.path.join(root, name), "class folder contains no image files"),
                         on_error, skipped)
            continue
        per_class[name] = files
    class_names = sorted(per_class)
    datalist = [
        {"image": path, "label": index, "id": os.path.relpath(path, root)}
        for index, name in enumerate(class_names)
        for path in per_class[name]
    ]
    return datalist, class_names


def unlabeled_datalist(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    key: str = "training",
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, str]]:
    """Images without labels, for self-supervised adaptation: ``[{"image": path}, ...]``.

    Args:
        source: a folder (searched recursively unless ``recursive=False``), a datalist ``.json`` (list
            ``key``; labels and other keys dropped) or a sequence of file paths.

    Raises:
        DatasetLayoutError: source missing, or no image found.
    """
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if source.lower().endswith(".json"):
            items = load_datalist_json(source, key, on_error=on_error, skipped=skipped, check_files=True)
            paths = [item["image"] for item in items]
        else:
            source = require_dir(source, "a folder of images (or a datalist .json)")
            paths = list_image_files(source, recursive=recursive, extensions=extensions)
            if not paths:
                raise DatasetLayoutError(source, f"no image files found (extensions {tuple(extensions)})")
        name = source
    else:
        paths, name = [os.path.abspath(p) for p in source], "path list"
        if not paths:
            raise DatasetLayoutError(name, "empty list of image paths")
    return verify_datalist([{"image": p} for p in paths], on_error=on_error, skipped=skipped, source=name)
