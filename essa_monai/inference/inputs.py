"""What to run on: one file, a folder (recursive), a CSV with an ``image`` column, or a datalist JSON."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.datalist import list_image_files
from .bundle import UsageError

__all__ = ["InputItem", "collect_inputs", "output_stem"]

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class InputItem:
    """One input: ``path`` (absolute) and ``stem``, the output name relative to ``--output_dir``
    (sub-folders of a folder input kept, image extension dropped)."""

    path: str
    stem: str


def output_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension (``ct.nii.gz`` -> ``ct``, ``scan.dcm`` -> ``scan``)."""
    name = Path(path).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _csv_paths(path: Path) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise UsageError(f"{path}: empty CSV")
    header = [h.strip().lower() for h in rows[0]]
    column = header.index("image") if "image" in header else 0
    body = rows[1:] if "image" in header or not Path(path.parent / rows[0][0]).exists() else rows
    return [str((path.parent / r[column].strip()).resolve()) if r[column].strip() else "" for r in body if r]


def _json_paths(path: Path, key: str | None) -> list[str]:
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: not a readable datalist JSON ({err})") from err
    if isinstance(content, dict):
        keys = [key] if key else ([k for k in ("test", "testing") if k in content] or
                                  [k for k, v in content.items() if isinstance(v, list)])
        missing = [k for k in keys if not isinstance(content.get(k), list)]
        if missing or not keys:
            raise UsageError(f"{path}: no list {missing or key!r} in the datalist; keys: {sorted(content)}")
        items = [i for k in keys for i in content[k]]
    elif isinstance(content, list):
        items = content
    else:
        raise UsageError(f"{path}: a datalist JSON is a dict of lists or a list")
    paths = [i.get("image", "") if isinstance(i, dict) else i for i in items]
    return [str((path.parent / p).resolve()) if isinstance(p, str) and p else "" for p in paths]


def collect_inputs(source: str | os.PathLike[str], datalist_key: str | None = None) -> list[InputItem]:
    """The inputs named by ``source``, in a stable order, each with a unique output stem.

    * a folder: every image under it (:func:`essa_monai.data.list_image_files`, recursive);
      outputs keep the sub-folders;
    * ``*.csv``: the ``image`` column (or the first one), paths relative to the CSV's folder;
    * ``*.json``: a MONAI datalist, list ``datalist_key`` (default ``test``/``testing`` if present,
      else every list), ``image`` paths relative to the JSON's folder;
    * any other file: that image.

    Listed files that are missing stay in the list (they are reported as skipped, not dropped).

    Raises:
        UsageError: ``source`` does not exist, or names no images.
    """
    src = Path(source).resolve()
    if not src.exists():
        raise UsageError(f"input not found: {source}")
    if src.is_dir():
        paths, root = list_image_files(src, recursive=True), src
    elif src.suffix.lower() == ".csv":
        paths, root = _csv_paths(src), None
    elif src.suffix.lower() == ".json":
        paths, root = _json_paths(src, datalist_key), None
    else:
        paths, root = [str(src)], src.parent
    if not paths:
        raise UsageError(f"no images found in {source}")
    if root is None:
        existing = [os.path.dirname(p) for p in paths if p]
        root = Path(os.path.commonpath(existing)) if existing else src.parent
    items, used = [], set()
    for k, p in enumerate(paths):
        if not p:
            items.append(InputItem(path=p, stem=f"row{k + 1:05d}"))
            continue
        try:
            rel = Path(p).parent.relative_to(root)
        except ValueError:
            rel = Path()
        stem = (rel / output_stem(p)).as_posix()
        if stem in used:  # a.png next to a.jpg
            stem = (rel / Path(p).name.replace(".", "_")).as_posix()
        while stem in used:
            stem += "_"
        used.add(stem)
        items.append(InputItem(path=p, stem=stem))
    return items
